"""The webhook endpoints' hot path as plain ASGI: headers and body read once, the answer sent in two messages,
no Request or Response objects and no middleware stack (per event they cost more than the work itself)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.types import Receive, Scope, Send

from iterable_recipes.receiver.errors import Rejected

log = logging.getLogger(__name__)
# A handler's answer: the status and the JSON body, encoded.
Answer = tuple[int, bytes]
Handler = Callable[["RawHeaders", Receive], Awaitable[Answer]]
_JSON = (b"content-type", b"application/json")


class RawHeaders(dict[str, str]):
    """A request's headers by lower-cased name, the first of a repeated one (as Starlette's ``get``).

    Look names up lower-cased: ``get`` is the plain dict's (a case-folding one cost a call per lookup).
    """

    @classmethod
    def of(cls, scope: Scope) -> RawHeaders:
        """The headers of an ASGI ``scope`` (servers send the names lower-cased)."""
        # Reversed, so the first of a repeated header is the one kept.
        raw = reversed(scope["headers"])
        return cls({name.decode("latin-1"): value.decode("latin-1") for name, value in raw})


async def read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    """The body, refused with 413 when Content-Length or the bytes actually sent exceed ``limit``."""
    declared = headers.get("content-length")
    if declared is not None:
        # ASCII digits only, and few enough that int() cannot refuse them (it does past 4,300 digits).
        if not (declared.isascii() and declared.isdigit()):
            raise Rejected(400, "Content-Length is not a number")
        if len(declared) > 18 or int(declared) > limit:
            raise Rejected(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Rejected(400, "client disconnected before the body was complete")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Rejected(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def encode(content: dict[str, Any]) -> bytes:
    """A JSON body as the receiver has always written them (``json.dumps``'s spacing: clients read it)."""
    return json.dumps(content).encode()


async def send_json(send: Send, status: int, body: bytes) -> None:
    """Send a complete JSON answer (content-length and content-type, as Starlette's Response sets them)."""
    head = [(b"content-length", str(len(body)).encode()), _JSON]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class Endpoint:
    """One webhook endpoint as an ASGI app: ``handler`` answers from the headers and the body stream.

    An exception the handler did not turn into a 4xx is logged by class name only (its message may
    hold request data) and answered 500 in the app's one error shape.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request."""
        try:
            status, body = await self.handler(RawHeaders.of(scope), receive)
        except Exception as exc:
            log.error("unexpected error in the receiver (%s)", type(exc).__name__)
            status, body = 500, encode({"error": "internal error"})
        await send_json(send, status, body)


def route_path(scope: Scope) -> str:
    """The path the app routes on: ``path`` without the ``root_path`` a proxy mounted it under (as
    Starlette's routing reads it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path
