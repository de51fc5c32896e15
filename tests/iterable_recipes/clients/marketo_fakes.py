"""A scripted Marketo for unit tests (httpx.MockTransport): queued answers per path, requests recorded."""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

import httpx

from iterable_recipes.clients.limiter import NoLimiter
from iterable_recipes.clients.marketo import MarketoClient
from iterable_recipes.clients.retry import RetryPolicy
from tests.contract.marketo_spec import MarketoSpecCheckingTransport

BASE = "https://123-abc-456.mktorest.test"
SECRET = "s3cr3t-value-never-logged"
FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.005, jitter=0.0)
Answer = dict[str, Any] | httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def ok(**fields: Any) -> dict[str, Any]:
    """A successful Marketo body."""
    return {"requestId": "a#1", "success": True, "errors": [], "warnings": [], **fields}


def fail(code: str) -> dict[str, Any]:
    """A Marketo error body: HTTP 200, success false."""
    return {"requestId": "a#1", "success": False, "errors": [{"code": code, "message": "x"}], "warnings": []}


class FakeMarketo:
    """Answers REST paths from per-path queues (the last answer repeats) and hands out numbered tokens."""

    def __init__(self, expires_in: int = 3600) -> None:
        self.expires_in = expires_in
        self.tokens_issued = 0
        self.identity_answers: deque[Answer] = deque()
        self.answers: dict[str, deque[Answer]] = defaultdict(deque)
        self.requests: list[httpx.Request] = []
        self._lock = threading.Lock()

    def queue(self, path: str, *answers: Answer) -> None:
        """Answers for ``path`` in order; the last one keeps being given."""
        self.answers[path].extend(answers)

    def rest_requests(self, path: str | None = None) -> list[httpx.Request]:
        """Requests to REST paths (all, or one path)."""
        return [
            r
            for r in self.requests
            if r.url.path.startswith("/rest/") and (path is None or r.url.path == path)
        ]

    def identity_requests(self) -> list[httpx.Request]:
        """Requests to the identity endpoint."""
        return [r for r in self.requests if r.url.path.endswith("/oauth/token")]

    def handler(self, request: httpx.Request) -> httpx.Response:
        """The MockTransport handler."""
        with self._lock:
            self.requests.append(request)
            if request.url.path.endswith("/oauth/token"):
                if self.identity_answers:
                    return self._render(self.identity_answers.popleft(), request)
                self.tokens_issued += 1
                body = {
                    "access_token": f"token-{self.tokens_issued}",
                    "token_type": "bearer",
                    "expires_in": self.expires_in,
                    "scope": "api@x",
                }
                return httpx.Response(200, json=body)
            queue = self.answers[request.url.path]
            if not queue:
                return httpx.Response(404, json={"error": "no scripted answer"})
            answer = queue.popleft() if len(queue) > 1 else queue[0]
            return self._render(answer, request)

    @staticmethod
    def _render(answer: Answer, request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        if callable(answer):
            return answer(request)
        return httpx.Response(200, json=answer)


class RecordingLimiter(NoLimiter):
    """A limiter that never waits and records what it was asked."""

    def __init__(self) -> None:
        self.acquired: list[str] = []
        self.slowed: list[tuple[str, float | None]] = []

    def acquire(self, name: str) -> None:
        """Record the name."""
        self.acquired.append(name)

    def slow_down(self, name: str, retry_after: float | None = None) -> None:
        """Record without sleeping."""
        self.slowed.append((name, retry_after))


def make_client(fake: FakeMarketo, **kwargs: Any) -> tuple[MarketoClient, MarketoSpecCheckingTransport]:
    """A client whose every request is checked against the spec before reaching ``fake``."""
    transport = MarketoSpecCheckingTransport(httpx.MockTransport(fake.handler), check_responses=False)
    options: dict[str, Any] = {"limiter": RecordingLimiter(), "retry": FAST_RETRY} | kwargs
    return MarketoClient(BASE, "client-id", SECRET, transport=transport, **options), transport
