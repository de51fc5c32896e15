"""Injected failures (errors, 429s, scripted bodies, latency, hangs, dropped connections, outages), chosen
reproducibly."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ALL = "*"


class ScriptedAnswer(BaseModel):
    """An answer given instead of handling the request: a JSON ``body`` (or a verbatim ``text``, "" for
    none) with ``status``. Shapes the spec does not promise, such as an error envelope under 200."""

    model_config = ConfigDict(extra="forbid")

    status: int = Field(200, ge=100, le=599)
    body: Any = None
    text: str | None = Field(None, description="sent as it is instead of body")


# "pass" handles that request normally, so a test can fail the third request and not the first two.
FailNext = int | Literal["drop", "timeout", "pass"] | ScriptedAnswer


class FaultSpec(BaseModel):
    """Faults for one endpoint (``endpoint``, e.g. ``users/bulkUpdate``) or for all (``*``)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = ALL
    error_rate: float = Field(0.0, ge=0, le=1, description="fraction answered 500/502/503")
    rate_429: float = Field(0.0, ge=0, le=1, description="fraction answered 429 (plain text)")
    retry_after: int = Field(1, ge=0, description="Retry-After seconds on injected 429s")
    fail_next: list[FailNext] = Field(
        default_factory=list,
        description="answers for the next requests: a status, drop, timeout, pass, or"
        " a scripted answer {status, body | text}",
    )
    latency_seconds: float = Field(0.0, ge=0, description="added before every answer")
    timeout_rate: float = Field(0.0, ge=0, le=1, description="fraction whose answer is held hang_seconds")
    hang_seconds: float = Field(30.0, ge=0)
    drop_rate: float = Field(0.0, ge=0, le=1, description="fraction whose connection closes unanswered")
    outage_seconds: float = Field(0.0, ge=0, description="answer 503 for this long from now")
    seed: int | None = Field(None, description="reseed the fault randomness for reproducible runs")


@dataclass
class Decision:
    """What the gate does with one request before (or instead of) handling it."""

    status: int | None = None  # answer this status instead of handling the request
    retry_after: int | None = None
    drop: bool = False  # close the connection before the request is handled
    delay: float = 0.0  # sleep before handling
    hang: float = 0.0  # handle, then hold the answer this long (a client timeout sees nothing)
    scripted: ScriptedAnswer | None = None  # answer this instead of handling the request


class FaultBook:
    """The active fault specs and the seeded randomness that picks which requests fail."""

    def __init__(self) -> None:
        self.specs: dict[str, FaultSpec] = {}
        self.outage_until: dict[str, float] = {}
        self.rng = random.Random(0)

    def set(self, spec: FaultSpec) -> None:
        """Replace the spec of ``spec.endpoint``; an outage starts counting now."""
        # A private copy, since fail_next is consumed as requests arrive.
        self.specs[spec.endpoint] = spec.model_copy(deep=True)
        if spec.outage_seconds > 0:
            self.outage_until[spec.endpoint] = time.monotonic() + spec.outage_seconds
        if spec.seed is not None:
            self.rng = random.Random(spec.seed)

    def clear(self) -> None:
        """Remove every fault."""
        self.specs.clear()
        self.outage_until.clear()

    def describe(self) -> list[dict[str, object]]:
        """The active specs, as JSON-ready dicts."""
        return [spec.model_dump() for spec in self.specs.values()]

    def decide(self, endpoint: str) -> Decision:
        """Pick this request's fate; the endpoint's own spec is consulted before the global one."""
        specs = [spec for key in (endpoint, ALL) if (spec := self.specs.get(key)) is not None]
        if not specs:
            return Decision()
        now = time.monotonic()
        for key in (endpoint, ALL):
            until = self.outage_until.get(key)
            if until is not None and now < until:
                return Decision(status=503, retry_after=max(1, round(until - now + 0.499)))
        for spec in specs:
            if spec.fail_next:
                head = spec.fail_next.pop(0)
                if head == "pass":
                    return Decision()
                if head == "drop":
                    return Decision(drop=True)
                if head == "timeout":
                    return Decision(hang=spec.hang_seconds)
                if isinstance(head, ScriptedAnswer):
                    return Decision(scripted=head)
                return Decision(status=head, retry_after=spec.retry_after if head == 429 else None)
        decision = Decision()
        for spec in specs:
            if spec.drop_rate and self.rng.random() < spec.drop_rate:
                return Decision(drop=True)
            if spec.error_rate and self.rng.random() < spec.error_rate:
                return Decision(status=self.rng.choice((500, 502, 503)), delay=spec.latency_seconds)
            if spec.rate_429 and self.rng.random() < spec.rate_429:
                return Decision(status=429, retry_after=spec.retry_after, delay=spec.latency_seconds)
            decision.delay = max(decision.delay, spec.latency_seconds)
            if spec.timeout_rate and self.rng.random() < spec.timeout_rate:
                decision.hang = max(decision.hang, spec.hang_seconds)
        return decision
