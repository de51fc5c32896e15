"""Scripted Iterable answers for unit tests: an httpx.MockTransport that records what the client sent."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from iterable_recipes.clients.iterable import IterableClient
from iterable_recipes.clients.retry import RetryPolicy

FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.01, jitter=0.1)
Answer = httpx.Response | Callable[[httpx.Request], httpx.Response] | Exception


def ok(body: Any = None, status: int = 200, **headers: str) -> httpx.Response:
    """A JSON answer (the standard success envelope when ``body`` is None)."""
    if body is None:
        body = {"msg": "", "code": "Success", "params": None}
    return httpx.Response(status, json=body, headers=headers)


def error(status: int, code: str | None = None, msg: str = "", **headers: str) -> httpx.Response:
    """An Iterable error envelope, or a plain-text body when ``code`` is None."""
    if code is None:
        return httpx.Response(status, text=msg or "Too Many Requests", headers=headers)
    return httpx.Response(status, json={"msg": msg, "code": code, "params": None}, headers=headers)


class Script:
    """Answers requests in order (the last answer repeats) and keeps every request seen."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, httpx.Response):
            return answer(request)
        return answer

    def bodies(self) -> list[Any]:
        """Each request's JSON body (None when empty)."""
        return [json.loads(r.content) if r.content else None for r in self.requests]

    def client(self, **kwargs: Any) -> IterableClient:
        """An IterableClient sending through this script with tiny retry delays."""
        kwargs.setdefault("retry", FAST_RETRY)
        return IterableClient("test-key", transport=httpx.MockTransport(self), **kwargs)
