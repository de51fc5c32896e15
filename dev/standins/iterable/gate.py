"""Raw ASGI middleware in front of ``/api``: API key, body cap, injected faults, rate limits, counters.

It is raw ASGI, not a Starlette ``BaseHTTPMiddleware``, because a dropped connection needs the
socket's transport (``create_app`` puts uvicorn's transport in the scope) and a held answer needs
to watch for the client going away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from dev.standins.iterable.answers import PLAIN_TEXT, RATE_LIMIT_TEXT, STATUS_CODES, envelope
from dev.standins.iterable.endpoints import resolve
from dev.standins.iterable.faults import Decision
from dev.standins.iterable.options import RATE_WINDOWS
from dev.standins.iterable.ratelimit import WINDOW_SECONDS
from dev.standins.iterable.store import IterableSandbox

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TRANSPORT_KEY = "sandbox.transport"
BODY_KEY = "sandbox.body"


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, int]:
    """The whole body (read to the end so the client never sees a broken pipe) and its size."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), size


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def respond(
    send: Send, status: int, body: bytes, content_type: str, headers: list[Any] | None = None
) -> None:
    """Send a complete response."""
    head = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})


async def respond_status(
    send: Send, status: int, retry_after: int | None = None, msg: str | None = None
) -> None:
    """Answer ``status`` the way Iterable's edge does: plain text for 429 and gateway errors, else JSON."""
    headers = [(b"retry-after", str(retry_after).encode())] if retry_after is not None else []
    if status in PLAIN_TEXT and msg is None:
        await respond(send, status, PLAIN_TEXT[status].encode(), "text/plain; charset=utf-8", headers)
        return
    body = envelope(msg or f"Injected {status}", STATUS_CODES.get(status, "GenericError"))
    await respond(send, status, json.dumps(body).encode(), "application/json", headers)


class Gate:
    """Everything that happens to an ``/api`` request before its handler runs, and its counting."""

    def __init__(self, app: ASGIApp, sandbox: IterableSandbox) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass non-API traffic through; gate the rest."""
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        sb = self.sandbox
        # Counted against the rate limit when it arrives, as an edge limiter counts it, not when this
        # loop got round to reading its body.
        arrived = time.monotonic()
        endpoint = resolve(scope["method"], scope["path"], scope.get("query_string", b"").decode("latin-1"))
        headers = dict(scope["headers"])
        key = headers.get(b"api-key") or headers.get(b"api_key")
        if key is None or key.decode("latin-1") != sb.options.api_key:
            sb.count_request(endpoint, 401)
            await respond_status(send, 401, msg="Invalid API key")
            return
        body, size = await _read_body(receive, sb.options.max_body_bytes)
        while not sb.answering.is_set():
            await asyncio.sleep(0.01)
        with sb.lock:
            decision = sb.faults.decide(endpoint)
        if decision.drop:
            await self._drop(scope, receive, send, endpoint)
            return
        if decision.delay:
            await asyncio.sleep(decision.delay)
        if decision.scripted is not None:
            scripted = decision.scripted
            sb.count_request(endpoint, scripted.status)
            if scripted.text is not None:
                await respond(send, scripted.status, scripted.text.encode(), "text/plain; charset=utf-8")
            else:
                await respond(send, scripted.status, json.dumps(scripted.body).encode(), "application/json")
            return
        if decision.status is not None:
            sb.count_request(endpoint, decision.status)
            await respond_status(send, decision.status, decision.retry_after)
            return
        if size > sb.options.max_body_bytes:
            sb.count_request(endpoint, 413)
            msg = f"Request body is {size} bytes; the limit is {sb.options.max_body_bytes}"
            await respond_status(send, 413, msg=msg)
            return
        retry_after = self._admit(endpoint, arrived)
        if retry_after is not None:
            sb.count_request(endpoint, 429)
            retry = [(b"retry-after", str(retry_after).encode())]
            await respond(send, 429, RATE_LIMIT_TEXT.encode(), "text/plain; charset=utf-8", retry)
            return
        scope[BODY_KEY] = body
        await self._handle(scope, receive, send, endpoint, decision)

    def _admit(self, endpoint: str, arrived: float) -> int | None:
        sb = self.sandbox
        with sb.lock:
            limit = sb.options.rate_limits.get(endpoint)
            if not sb.options.limits_enabled or not limit:
                return None
            window = RATE_WINDOWS.get(endpoint, WINDOW_SECONDS)
            return sb.windows.acquire(endpoint, limit, arrived, window)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, endpoint: str, decision: Decision
    ) -> None:
        """Run the handler; on a hang the answer waits (the write is done) until the client leaves."""
        sb = self.sandbox
        outcome: dict[str, Any] = {"status": 0, "gone": False}

        unread = [{"type": "http.request", "body": scope[BODY_KEY], "more_body": False}]

        async def replay() -> Message:
            # The body was consumed above: hand it over once, then only report the disconnect.
            return unread.pop() if unread else await receive()

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
                if decision.hang:
                    try:
                        await asyncio.wait_for(_wait_disconnect(receive), decision.hang)
                        outcome["gone"] = True
                    except TimeoutError:
                        pass
            if not outcome["gone"]:
                await send(message)

        await self.app(scope, replay, counted_send)
        sb.count_request(endpoint, "hung" if outcome["gone"] else outcome["status"])

    async def _drop(self, scope: Scope, receive: Receive, send: Send, endpoint: str) -> None:
        """Close the TCP connection without a byte of answer (falls back to a 500 without a transport)."""
        self.sandbox.count_request(endpoint, "dropped")
        transport = scope.get(TRANSPORT_KEY)
        if transport is None:
            raise RuntimeError("no transport to drop: the server is not uvicorn")
        transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_wait_disconnect(receive), 5.0)
