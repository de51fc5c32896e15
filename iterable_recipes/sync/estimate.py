"""How many requests a planned run would send to Iterable, and the least time Iterable's limits allow."""

from __future__ import annotations

import math
from dataclasses import dataclass

from iterable_recipes.clients.iterable import (
    DEFAULT_LIST_WRITES_PER_SECOND,
    DEFAULT_RATE_MARGIN_SECONDS,
    DEFAULT_RATE_SHARE,
    ITERABLE_RATE_LIMITS,
    paced_rates,
)
from iterable_recipes.clients.limiter import Rate
from iterable_recipes.sentences import duration
from iterable_recipes.sync.definitions import MAX_BATCH_SIZE, IdentityKind, SyncDefinition, SyncKind
from iterable_recipes.sync.delivery import looks_up_first
from iterable_recipes.sync.results import ChangeSetSummary


@dataclass(frozen=True)
class EndpointLoad:
    """One endpoint's share of the run: its requests, Iterable's limit and the pace the limiter keeps."""

    endpoint: str
    why: str
    requests: int
    limit: Rate
    paced: Rate

    @property
    def seconds(self) -> float:
        """The time its requests take at the limiter's pace."""
        return self.requests * self.paced.seconds / self.paced.limit


@dataclass(frozen=True)
class RunEstimate:
    """A planned run's requests by endpoint; the slowest endpoint sets the run's least duration."""

    sync_name: str
    rows: int
    batches: int
    batch_size: int
    loads: list[EndpointLoad]

    @property
    def requests(self) -> int:
        """Every request the run's sends need (the start checks aside)."""
        return sum(load.requests for load in self.loads)

    @property
    def seconds(self) -> float:
        """The least time the run takes: endpoints are paced apart and batches overlap, so the slowest
        endpoint's pace bounds the run (network and warehouse time come on top)."""
        return max((load.seconds for load in self.loads), default=0.0)

    def sentence(self) -> str:
        """What a real run would send, for the dry run's log line (counts only)."""
        return (
            f"a real run would send {self.rows:,} row(s) in {self.requests:,} request(s), "
            f"{_least(self.seconds)} at Iterable's limits"
        )

    def markdown(self) -> str:
        """The estimate as the dry run's markdown artifact (counts only)."""
        lines = [
            f"**Dry run of {self.sync_name}: what a real run would send now**",
            "",
            f"{self.rows:,} row(s) in {self.batches:,} batch(es) of at most {self.batch_size:,}.",
            "",
            "| endpoint | why | requests | Iterable's limit | paced at | time at that pace |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {load.endpoint} | {load.why} | {load.requests:,} | {_rate(load.limit)} | "
            f"{_rate(load.paced)} | {_took(load.seconds)} |"
            for load in self.loads
        ]
        lines += [
            "",
            f"**{self.requests:,} request(s), {_least(self.seconds)}**: each endpoint is paced on "
            "its own and batches overlap, so the slowest endpoint sets the pace; network, Iterable's answers "
            "and the warehouse come on top. A batch over 4 MB is split into more requests; a 429 slows the "
            "run down. The start checks add up to 2 requests (the key, `users/getFields`), none while a "
            "passed check is remembered (`RECIPES_CHECK_CACHE_SECONDS`).",
        ]
        return "\n".join(lines)


def _took(seconds: float) -> str:
    """A time at the limiter's pace; below a second the limits do not slow the run."""
    return duration(seconds) if seconds >= 1 else "under 1 s"


def _least(seconds: float) -> str:
    """The run's least time, as a bound: "at least 26 s", or "under 1 s"."""
    return f"at least {duration(seconds)}" if seconds >= 1 else "under 1 s"


def _rate(rate: Rate) -> str:
    """A rate as people read it: "5/s", "4.76/s", "4/min"."""
    if rate.seconds >= 60:
        return f"{rate.limit * 60 / rate.seconds:.3g}/min"
    return f"{rate.limit / rate.seconds:.3g}/s"


def _load(endpoint: str, why: str, requests: int, paced: dict[str, Rate]) -> EndpointLoad:
    # The list writes state no limit: the configured pace stands for it.
    limit = ITERABLE_RATE_LIMITS.get(endpoint, paced[endpoint])
    return EndpointLoad(endpoint, why, requests, limit, paced[endpoint])


def _list_loads(
    defn: SyncDefinition, plan: ChangeSetSummary, paced: dict[str, Rate], project_type: str
) -> list[EndpointLoad]:
    """A list sync's requests: entering members looked up (by email in an email-based project) and
    subscribed, leaving ones removed."""
    entering, size = plan.to_send - plan.leaving, min(defn.batch_size, MAX_BATCH_SIZE)
    loads = []
    if entering and looks_up_first(defn, project_type):
        why = "each entering member is looked up first (email projects would create unknown people)"
        loads.append(_load("users/getByEmail", why, entering, paced))
    if entering:
        loads.append(_load("lists/subscribe", "entering members", math.ceil(entering / size), paced))
    if plan.leaving:
        loads.append(_load("lists/unsubscribe", "leaving members", math.ceil(plan.leaving / size), paced))
    return loads


def estimate_run(
    defn: SyncDefinition,
    plan: ChangeSetSummary,
    share: float = DEFAULT_RATE_SHARE,
    list_writes_per_second: float = DEFAULT_LIST_WRITES_PER_SECOND,
    margin_seconds: float = DEFAULT_RATE_MARGIN_SECONDS,
    project_type: str = "email",
) -> RunEstimate:
    """The requests the planned run would send (``plan.batches`` bulk requests of at most
    ``defn.batch_size`` <= 1000 items; in update mode by email a getByEmail per row first, as
    ``sync/delivery.py`` looks each person up; a list sync's subscribes and unsubscribes) and their time
    at the pace the limiter holds (``share`` of each limit, windows ``margin_seconds`` wider)."""
    paced = paced_rates(share, list_writes_per_second, margin_seconds)
    if defn.is_list:
        size = min(defn.batch_size, MAX_BATCH_SIZE)
        return RunEstimate(
            defn.name, plan.to_send, plan.batches, size, _list_loads(defn, plan, paced, project_type)
        )
    loads = []
    if looks_up_first(defn, project_type) and plan.to_send:
        endpoint = "users/getByEmail" if defn.identity.kind is IdentityKind.EMAIL else "users/byUserId"
        loads.append(_load(endpoint, "update mode looks each person up first", plan.to_send, paced))
    if defn.kind is SyncKind.CUSTOM_EVENTS:
        loads.append(_load("events/trackBulk", "one request per batch", plan.batches, paced))
    else:
        loads.append(_load("users/bulkUpdate", "one request per batch", plan.batches, paced))
    return RunEstimate(defn.name, plan.to_send, plan.batches, min(defn.batch_size, MAX_BATCH_SIZE), loads)
