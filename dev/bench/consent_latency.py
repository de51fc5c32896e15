"""Consent bench: seconds from a Marketo webhook to the confirmed Iterable opt-out, for a person Iterable
knows and for one the CustomersDot chain creates later; events out before the opt-out; the consent
reconciliation's people/s.

    uv run python -m dev.bench.consent_latency [--people 20] [--over 20] [--apply-delay 5]
        [--created-after 10] [--query-seconds 2] [--reconcile-lookups 2000] [--reconcile-export 20000]

A temporary Prefect server, the receiver (``python -m iterable_recipes.receiver``), the Iterable
stand-in (Iterable's limits on, ``--profile-delay`` = ``--apply-delay``: a profile write is visible to
look-ups only that long after it was accepted) and one process serving prefect.yaml's
``customersdot-drain`` and ``marketo-opt-out-drain`` deployments each run in their own process.

- Existing: ``--people`` people seeded in the stand-in are unsubscribed by webhook, spread over
  ``--over`` seconds; latency from each POST until ``GET /_sandbox/users`` shows the marketing email
  channel (id 1) unsubscribed ("confirmed").
- Created later: as many people Iterable does not know are unsubscribed the same way; ``--created-after``
  seconds after each one's unsubscribe, a signed CustomersDot event (a trial start) creates them through
  the chain. Latency from the unsubscribe POST, and from the CustomersDot POST, to confirmed; and the
  number of their custom events the stand-in tracked before their opt-out (``GET /_sandbox/writes/...``
  gives the order of event and subscription writes; the goal is 0).
- Reconciliation: ``consent_reconciliation`` over ``--reconcile-lookups`` suppressions (getByEmail, at
  or below CONSENT_EXPORT_THRESHOLD) and ``--reconcile-export`` (one user export, above it), each on a
  fresh app database, in a process of its own; people/s.

Prints a table (each figure beside its goal), then one JSON line. Figures only; nothing here asserts.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from dev.bench.common import (
    SANDBOX_ITERABLE_KEY,
    Spawned,
    free_port,
    http_ok,
    iterable_standin,
    prefect_server,
    print_json_line,
    run_json,
)
from dev.bench.optout_latency import percentile

DEPLOYMENTS = ("customersdot-drain", "marketo-opt-out-drain")
DEPLOYMENT_PATHS = ("customersdot-events/customersdot-drain", "marketo-opt-outs/marketo-opt-out-drain")
MARKETING_EMAIL_CHANNEL = 1  # iterable_recipes/optouts/consent.yaml: the channel an opt-out unsubscribes
GOAL_SECONDS = 30.0
LEAD_OFFSET = {"existing": 600_000, "created": 700_000}
WATCH_SECONDS = 240.0  # how long a person's opt-out is waited for before it counts as missed


def email(kind: str, n: int) -> str:
    """The synthetic person ``n`` of a scenario (never printed)."""
    return f"consent-{kind}-{n}@example.com"


# --- children ----------------------------------------------------------------------------------------


def serve_drains(query_seconds: float) -> None:
    """Serve prefect.yaml's CustomersDot and opt-out drain deployments until terminated."""
    from prefect import serve

    from iterable_recipes.cli.deployments import read_deployments, to_runner_deployment

    specs = [s for s in read_deployments() if s.name in DEPLOYMENTS]
    serve(*(to_runner_deployment(s) for s in specs), query_seconds=query_seconds, pause_on_shutdown=False)


def reconcile_child(people: int) -> None:
    """Record ``people`` suppressions on a fresh app database, then time one ``consent_reconciliation``."""
    from flows.consent_reconciliation import consent_reconciliation
    from iterable_recipes.settings import load_settings
    from iterable_recipes.store import Inbox, migrate
    from iterable_recipes.store.db import utcnow
    from iterable_recipes.store.ledger import Suppression

    url = load_settings().recipes_database_url
    migrate(url)
    inbox = Inbox(url)
    entries = [Suppression(email("reconcile", n), str(900_000 + n), "webhook") for n in range(people)]
    with inbox.engine.begin() as conn:
        for start in range(0, people, 500):
            inbox.ledger.record(conn, entries[start : start + 500], utcnow())
    began = time.perf_counter()
    counts = consent_reconciliation()
    print_json_line({"seconds": time.perf_counter() - began, "counts": counts})


# --- the parent: webhooks and watching ---------------------------------------------------------------


class Watcher:
    """Polls the stand-in's users and notes when each watched address shows the channel unsubscribed."""

    def __init__(self, iterable: str) -> None:
        self.iterable = iterable
        self.watched: set[str] = set()
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                users = client.get(f"{self.iterable}/_sandbox/users").json()
                now = time.monotonic()
                for user in users:
                    address = user.get("email")
                    unsubscribed = MARKETING_EMAIL_CHANNEL in (user.get("unsubscribedChannelIds") or [])
                    if unsubscribed and address in self.watched and address not in self.seen:
                        self.seen[address] = now
                self._stop.wait(0.2)

    def wait_for(self, addresses: set[str], timeout: float) -> None:
        """Until every one of ``addresses`` is seen opted out, or ``timeout`` s pass."""
        deadline = time.monotonic() + timeout
        while not addresses <= set(self.seen) and time.monotonic() < deadline:
            time.sleep(0.5)


def unsubscribe(client: httpx.Client, address: str, lead_id: int) -> None:
    """One Marketo "Call Webhook" unsubscribe to the receiver."""
    body = {"email": address, "leadId": str(lead_id), "unsubscribedAt": datetime.now(UTC).isoformat()}
    answer = client.post("/webhooks/marketo/unsubscribe", json=body)
    if answer.status_code != 202:
        raise RuntimeError(f"the receiver answered {answer.status_code} to an unsubscribe")


def trial_started(address: str, n: int) -> dict[str, Any]:
    """A CustomersDot trial start (version 1 of the contract) for ``address``: creates the person and
    tracks "SaaS Trials", a custom event that may start a Journey."""
    return {
        "version": "1",
        "id": f"evt-bench-{secrets.token_hex(6)}",
        "type": "saas_trial_started",
        "occurred_at": datetime.now(UTC).isoformat(),
        "person": {"email": address, "user_id": str(800_000 + n)},
        "data": {"company": "Acme", "firstName": "Ada", "country": "NL"},
    }


def post_customersdot(client: httpx.Client, secret: str, body: dict[str, Any]) -> None:
    """The event, signed the Standard Webhooks way with ``secret``, to the receiver."""
    raw = json.dumps(body)
    msg_id = f"msg_{secrets.token_hex(8)}"
    now = datetime.now(UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, raw),
        "content-type": "application/json",
    }
    answer = client.post("/webhooks/customersdot", content=raw.encode(), headers=headers)
    if answer.status_code != 202:
        raise RuntimeError(f"the receiver answered {answer.status_code} to a CustomersDot event")


def run_timeline(actions: list[tuple[float, Callable[[], None]]]) -> None:
    """Call each action at its offset (seconds from now), in order of offset."""
    began = time.monotonic()
    for offset, action in sorted(actions, key=lambda a: a[0]):
        time.sleep(max(0.0, began + offset - time.monotonic()))
        action()


def scenario_existing(stack: Stack, people: int, over: float) -> list[float]:
    """Seeded people unsubscribed by webhook; seconds from each POST to the confirmed opt-out."""
    addresses = [email("existing", n) for n in range(people)]
    seeded = [{"email": a, "subscribedMessageTypeIds": [101]} for a in addresses]
    httpx.post(f"{stack.iterable}/_sandbox/users", json=seeded, timeout=60).raise_for_status()
    posted: dict[str, float] = {}

    def send(n: int) -> Callable[[], None]:
        def action() -> None:
            posted[addresses[n]] = time.monotonic()
            unsubscribe(stack.marketo_client, addresses[n], LEAD_OFFSET["existing"] + n)

        return action

    with Watcher(stack.iterable) as watcher:
        watcher.watched.update(addresses)
        run_timeline([(n * over / people, send(n)) for n in range(people)])
        watcher.wait_for(set(addresses), WATCH_SECONDS)
    return [watcher.seen[a] - posted[a] for a in addresses if a in watcher.seen]


def scenario_created(stack: Stack, people: int, over: float, after: float) -> dict[str, Any]:
    """People unknown to Iterable unsubscribed by webhook, created by the chain ``after`` s later."""
    addresses = [email("created", n) for n in range(people)]
    unsubscribed: dict[str, float] = {}
    created: dict[str, float] = {}

    def unsubscribe_one(n: int) -> Callable[[], None]:
        def action() -> None:
            unsubscribed[addresses[n]] = time.monotonic()
            unsubscribe(stack.marketo_client, addresses[n], LEAD_OFFSET["created"] + n)

        return action

    def create_one(n: int) -> Callable[[], None]:
        def action() -> None:
            created[addresses[n]] = time.monotonic()
            post_customersdot(
                stack.customersdot_client, stack.customersdot_secret, trial_started(addresses[n], n)
            )

        return action

    actions = [(n * over / people, unsubscribe_one(n)) for n in range(people)]
    actions += [(n * over / people + after, create_one(n)) for n in range(people)]
    with Watcher(stack.iterable) as watcher:
        watcher.watched.update(addresses)
        run_timeline(actions)
        watcher.wait_for(set(addresses), WATCH_SECONDS)
    seen = watcher.seen
    return {
        "from_unsubscribe": [seen[a] - unsubscribed[a] for a in addresses if a in seen],
        "from_creation": [seen[a] - created[a] for a in addresses if a in seen],
        **events_around_optout(stack.iterable, addresses),
    }


def events_around_optout(iterable: str, addresses: list[str]) -> dict[str, int]:
    """Custom events the stand-in tracked for these people before their opt-out, and after it so far."""
    before = after = 0
    with httpx.Client(base_url=iterable, timeout=30) as client:
        for address in addresses:
            writes = client.get(f"/_sandbox/writes/{address}").json()
            optout = next(
                (
                    w["order"]
                    for w in writes
                    if w["kind"] == "subscriptions" and MARKETING_EMAIL_CHANNEL in w["unsubscribedChannelIds"]
                ),
                None,
            )
            for write in writes:
                if write["kind"] == "event":
                    if optout is None or write["order"] < optout:
                        before += 1
                    else:
                        after += 1
    return {"events_before_optout": before, "events_after_optout_so_far": after}


class Stack:
    """The running stack's addresses and the receiver's clients."""

    def __init__(self, iterable: str, receiver: str, marketo_secret: str, customersdot_secret: str) -> None:
        self.iterable = iterable
        self.customersdot_secret = customersdot_secret
        self.marketo_client = httpx.Client(
            base_url=receiver, headers={"X-Recipes-Secret": marketo_secret}, timeout=30
        )
        self.customersdot_client = httpx.Client(base_url=receiver, timeout=30)

    def close(self) -> None:
        """Close the receiver's clients."""
        self.marketo_client.close()
        self.customersdot_client.close()


# --- the parent: the stack ---------------------------------------------------------------------------


def wait_for_deployments(api_url: str, server: Spawned, timeout: float = 120) -> None:
    """Until both served deployments are registered (the receiver's nudges look them up by name)."""
    server.wait_until(
        lambda: all(http_ok(f"{api_url}/deployments/name/{p}") for p in DEPLOYMENT_PATHS), timeout
    )


def run_stack(args: argparse.Namespace, folder: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Start the stack with the stand-in's apply delay, run both scenarios, stop the project's
    processes, then time the reconciliation against the same stand-in; the raw figures."""
    marketo_secret = secrets.token_urlsafe(24)
    customersdot_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    with (
        prefect_server(folder / "prefect") as api_url,
        iterable_standin(profile_delay=args.apply_delay) as iterable,
    ):
        env = stack_env(api_url, folder, iterable.url) | {
            "MARKETO_WEBHOOK_SECRET": marketo_secret,
            "CUSTOMERSDOT_WEBHOOK_SECRETS": customersdot_secret,
        }
        port = free_port()
        me = [sys.executable, "-m", "dev.bench.consent_latency"]
        serve_argv = [*me, "--serve-drains", "--query-seconds", str(args.query_seconds)]
        drains = Spawned("drains", serve_argv, port, env)
        receiver_argv = [sys.executable, "-m", "iterable_recipes.receiver", "--port", str(port)]
        receiver = Spawned("receiver", [*receiver_argv, "--log-level", "warning"], port, env)
        try:
            wait_for_deployments(api_url, drains)
            receiver.wait_until(lambda: http_ok(f"{receiver.url}/healthz"), 60)
            stack = Stack(iterable.url, receiver.url, marketo_secret, customersdot_secret)
            try:
                raw = {
                    "existing": scenario_existing(stack, args.people, args.over),
                    "created": scenario_created(stack, args.people, args.over, args.created_after),
                }
            finally:
                stack.close()
        finally:
            receiver.stop()
            drains.stop()
        return raw, reconciliation(args, folder, api_url, iterable.url)


def stack_env(api_url: str, folder: Path, iterable_url: str) -> dict[str, str]:
    """The environment every project process of the bench gets."""
    return {
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(folder / "prefect"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "RECIPES_DATABASE_URL": f"sqlite:///{folder / 'recipes.db'}",
        "ITERABLE_API_KEY": SANDBOX_ITERABLE_KEY,
        "ITERABLE_BASE_URL": iterable_url,
        "LIMITER_BACKEND": "sqlite",
        "LIMITER_SQLITE_PATH": str(folder / "limiter.sqlite"),
    }


def reconciliation(
    args: argparse.Namespace, folder: Path, api_url: str, iterable: str
) -> dict[str, dict[str, Any]]:
    """Time the reconciliation on each path (the stand-in's limits on), each on a fresh app database."""
    results: dict[str, dict[str, Any]] = {}
    for path, people in (("getByEmail", args.reconcile_lookups), ("export", args.reconcile_export)):
        if people <= 0:
            continue
        seed_reconciled_people(iterable, people)
        # getByEmail at or below CONSENT_EXPORT_THRESHOLD (default 5,000), one user export above it.
        threshold = max(people, 5000) if path == "getByEmail" else min(people - 1, 5000)
        env = stack_env(api_url, folder, iterable) | {
            "RECIPES_DATABASE_URL": f"sqlite:///{folder / f'reconcile-{path}.db'}",
            "CONSENT_EXPORT_THRESHOLD": str(threshold),
        }
        done = run_json(
            [sys.executable, "-m", "dev.bench.consent_latency", "--reconcile-child", str(people)], env
        )
        results[path] = {"people": people, "seconds": done["seconds"], "counts": done["counts"]}
    return results


def seed_reconciled_people(iterable: str, people: int) -> None:
    """The reconciled people in Iterable: nine in ten opted out already, one in ten reachable (drift)."""
    users = [
        {
            "email": email("reconcile", n),
            "unsubscribedChannelIds": [] if n % 10 == 0 else [MARKETING_EMAIL_CHANNEL],
        }
        for n in range(people)
    ]
    with httpx.Client(base_url=iterable, timeout=120) as client:
        for start in range(0, people, 5000):
            client.post("/_sandbox/users", json=users[start : start + 5000]).raise_for_status()


# --- figures -----------------------------------------------------------------------------------------


def spread(values: list[float], key: str) -> dict[str, float | None]:
    """p50 and p99 (nearest rank) of ``values`` under ``key``, None when there are none."""
    return {
        f"{key}_p50_seconds": round(statistics.median(values), 2) if values else None,
        f"{key}_p99_seconds": round(percentile(values, 99), 2) if values else None,
    }


def figures_of(
    args: argparse.Namespace, raw: dict[str, Any], recon: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The bench's JSON object."""
    created = raw["created"]
    per_second = {
        f"reconciliation_{path.lower()}_people_per_second": round(r["people"] / r["seconds"], 1)
        for path, r in recon.items()
    }
    return {
        "bench": "consent_latency",
        "cpu_count": os.cpu_count(),
        "consent_people": args.people,
        "consent_apply_delay_seconds": args.apply_delay,
        "consent_created_after_seconds": args.created_after,
        "consent_existing_confirmed": len(raw["existing"]),
        "consent_created_confirmed": len(created["from_unsubscribe"]),
        **spread(raw["existing"], "consent_existing"),
        **spread(created["from_unsubscribe"], "consent_created"),
        **spread(created["from_creation"], "consent_created_from_creation"),
        "consent_events_before_optout": created["events_before_optout"],
        "consent_events_after_optout_so_far": created["events_after_optout_so_far"],
        **per_second,
        "reconciliation_people_per_second": min(per_second.values()) if per_second else None,
        "reconciliation": recon,
        "goals": {
            "consent_existing_p99_seconds": f"<= {GOAL_SECONDS:.0f}",
            "consent_created_p99_seconds": f"<= {GOAL_SECONDS:.0f}",
            "consent_events_before_optout": "= 0",
        },
    }


def print_report(figures: dict[str, Any]) -> None:
    """A table of figure, value and goal."""
    people = figures["consent_people"]
    rows: list[tuple[str, Any, str]] = [
        (f"existing: confirmed of {people}", figures["consent_existing_confirmed"], f"= {people}"),
        ("existing: webhook -> confirmed p50, s", figures["consent_existing_p50_seconds"], ""),
        ("existing: webhook -> confirmed p99, s", figures["consent_existing_p99_seconds"], "<= 30"),
        (f"created later: confirmed of {people}", figures["consent_created_confirmed"], f"= {people}"),
        ("created later: webhook -> confirmed p50, s", figures["consent_created_p50_seconds"], ""),
        ("created later: webhook -> confirmed p99, s", figures["consent_created_p99_seconds"], "<= 30"),
        (
            "created later: creation -> confirmed p50, s",
            figures["consent_created_from_creation_p50_seconds"],
            "",
        ),
        (
            "created later: creation -> confirmed p99, s",
            figures["consent_created_from_creation_p99_seconds"],
            "",
        ),
        ("created later: events tracked before the opt-out", figures["consent_events_before_optout"], "= 0"),
        (
            "created later: events tracked after it (so far)",
            figures["consent_events_after_optout_so_far"],
            "",
        ),
    ]
    for path, result in figures["reconciliation"].items():
        rate = figures[f"reconciliation_{path.lower()}_people_per_second"]
        rows.append((f"reconciliation people/s ({result['people']:,} via {path})", rate, ""))
    rows.append(("(Gmail bulk senders: 2 days; CAN-SPAM: 10 business days)", "", ""))
    width = max(len(name) for name, _, _ in rows)
    for name, value, goal in rows:
        shown = "—" if value is None else (f"{value:,.1f}" if isinstance(value, float) else str(value))
        print(f"{name:<{width}}  {shown:>10}  {goal}")


def main(argv: list[str] | None = None) -> None:
    """Run both latency scenarios, then the reconciliation; print the table and the JSON line."""
    parser = argparse.ArgumentParser(prog="python -m dev.bench.consent_latency", description=__doc__)
    parser.add_argument("--people", type=int, default=20, help="people per latency scenario")
    parser.add_argument("--over", type=float, default=20.0, help="seconds the unsubscribes are spread over")
    parser.add_argument(
        "--apply-delay", type=float, default=5.0, help="the stand-in's profile apply delay, s"
    )
    parser.add_argument("--created-after", type=float, default=10.0, help="s from unsubscribe to creation")
    parser.add_argument(
        "--query-seconds", type=float, default=2.0, help="the runner's poll (recipes serve's)"
    )
    parser.add_argument("--reconcile-lookups", type=int, default=2000, help="suppressions via getByEmail")
    parser.add_argument("--reconcile-export", type=int, default=20000, help="suppressions via the export")
    parser.add_argument("--serve-drains", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reconcile-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_drains:
        serve_drains(args.query_seconds)
        return
    if args.reconcile_child:
        reconcile_child(args.reconcile_child)
        return
    with tempfile.TemporaryDirectory(prefix="bench-consent-") as tmp:
        raw, recon = run_stack(args, Path(tmp))
    figures = figures_of(args, raw, recon)
    print_report(figures)
    print_json_line(figures)


if __name__ == "__main__":
    main()
