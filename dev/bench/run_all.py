"""`recipes bench`: run every benchmark as a subprocess and print its figures beside their goals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, JustifyMethod
from rich.table import Table

from dev.bench.common import last_json_line
from iterable_recipes.masking import mask_emails

PROJECT_DIR = Path(__file__).resolve().parents[2]
Figures = dict[str, float | None]
# The keys --json always prints (None when the bench that measures it failed).
REQUIRED_KEYS = (
    "sync_limited_share",
    "drain_share",
    "sync_vs_bare",
    "diff_vs_bare",
    "intake_vs_bare",
    "cpu_us_per_synced_row",
    "cpu_us_per_drained_event",
    "cpu_us_per_webhook",
    "sync_rows_per_s_limited",
    "sync_ceiling_rows_per_s",
    "sync_rows_per_s_unlimited",
    "sync_per_row_baseline_rows_per_s",
    "sync_diff_seconds_1m_rows",
    "sync_rows_changed",
    "sync_rows_fetched",
    "sync_peak_rss_mb",
    "update_only_vs_upsert",
    "webhook_events_per_s",
    "webhook_p99_ms",
    "drain_events_per_s",
    "drain_ceiling_events_per_s",
    "optout_p99_seconds",
    "consent_existing_p99_seconds",
    "consent_created_p99_seconds",
    "consent_events_before_optout",
    "cpu_count",
)


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def find(data: Any, *names: str) -> float | None:
    """The first numeric value under any of ``names``, searched depth-first through dicts and lists."""
    if isinstance(data, Mapping):
        for name in names:
            if _number(data.get(name)) is not None:
                return _number(data[name])
        children: Iterable[Any] = data.values()
    elif isinstance(data, list):
        children = data
    else:
        return None
    for child in children:
        found = find(child, *names)
        if found is not None:
            return found
    return None


def _sync_diff(data: Mapping[str, Any]) -> Figures:
    return {
        "sync_diff_seconds_1m_rows": find(data, "diff_s"),
        "diff_vs_bare": _number(data.get("diff_vs_bare")),
        "diff_bare_seconds": _number(data.get("diff_bare_s")),
        "sync_diff_rows_in_model": find(data, "rows_in_model"),
        "sync_rows_changed": find(data, "rows_changed"),
        "sync_rows_fetched": find(data, "rows_fetched"),
    }


def _sync_throughput(data: Mapping[str, Any]) -> Figures:
    names = (
        "sync_rows_per_s_limited", "sync_ceiling_rows_per_s", "sync_rows_per_s_unlimited",
        "sync_per_row_baseline_rows_per_s", "sync_limited_vs_per_row", "sync_peak_rss_mb",
        "sync_peak_rss_mb_limited", "sync_peak_rss_mb_unlimited", "sync_limited_share", "sync_vs_bare",
        "sync_bare_rows_per_s", "cpu_us_per_synced_row", "sync_bare_cpu_us_per_row",
    )  # fmt: skip
    return {name: _number(data.get(name)) for name in names}


def _sync_update_only(data: Mapping[str, Any]) -> Figures:
    names = (
        "update_only_vs_upsert", "update_only_flow_s", "upsert_flow_s", "update_only_users_created",
        "update_only_getbyemail_requests", "update_only_export_requests",
    )  # fmt: skip
    return {name: _number(data.get(name)) for name in names}


def _webhook_intake(data: Mapping[str, Any]) -> Figures:
    results = [r for r in data.get("results", []) if isinstance(r, Mapping)]
    first = next((r for r in results if r.get("backend") == "sqlite"), results[0] if results else {})
    return {
        "webhook_events_per_s": find(first, "events_per_s"),
        "webhook_p99_ms": find(first, "p99_ms"),
        **{
            name: _number(data.get(name))
            for name in (
                "intake_vs_bare",
                "intake_bare_events_per_s",
                "intake_p99_ms_at_3000",
                "cpu_us_per_webhook",
                "intake_bare_cpu_us_per_webhook",
            )
        },
    }


def _drain(data: Mapping[str, Any]) -> Figures:
    return {
        "drain_events_per_s": find(data, "drain_events_per_s", "events_per_s"),
        "drain_ceiling_events_per_s": find(data, "drain_ceiling_events_per_s", "ceiling_events_per_s"),
        "drain_share": _number(data.get("drain_share")),
        "cpu_us_per_drained_event": _number(data.get("cpu_us_per_drained_event")),
    }


def _optout(data: Mapping[str, Any]) -> Figures:
    names = ("optout_p50_seconds", "optout_p99_seconds", "poll_unsubscribes_per_s")
    return {name: _number(data.get(name)) for name in names}


def _consent(data: Mapping[str, Any]) -> Figures:
    names = (
        "consent_existing_p50_seconds", "consent_existing_p99_seconds", "consent_created_p50_seconds",
        "consent_created_p99_seconds", "consent_created_from_creation_p99_seconds",
        "consent_events_before_optout", "reconciliation_getbyemail_people_per_second",
        "reconciliation_export_people_per_second",
    )  # fmt: skip
    return {name: _number(data.get(name)) for name in names}


def _iterable_client(data: Mapping[str, Any]) -> Figures:
    return {
        "client_overhead_rows_per_s": find(data.get("overhead", {}), "rows_per_s"),
        "client_bulk_users_per_s": find(data.get("bulk_update_limited", {}), "users_per_s"),
    }


def _limiters(data: Mapping[str, Any]) -> Figures:
    cases = [c for c in data.get("cases", []) if isinstance(c, Mapping) and c.get("backend") == "sqlite"]
    shares = [float(c["share_of_ceiling"]) for c in cases if _number(c.get("share_of_ceiling")) is not None]
    paced = [float(c["share_of_paced"]) for c in cases if _number(c.get("share_of_paced")) is not None]
    over = [
        float(c["most_in_window"]) - float(c["limit_in_window"])
        for c in cases
        if _number(c.get("most_in_window")) is not None and _number(c.get("limit_in_window")) is not None
    ]
    return {
        "limiter_sqlite_share_of_ceiling": round(min(shares), 4) if shares else None,
        "limiter_sqlite_share_of_paced": round(min(paced), 4) if paced else None,
        "limiter_sqlite_over_window_limit": max(over) if over else None,
    }


@dataclass(frozen=True)
class Bench:
    """One benchmark: ``python -m dev.bench.<name>`` with its full and quick size flags, and its figures."""

    name: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    extract: Callable[[Mapping[str, Any]], Figures]
    timeout: float = 3600.0


BENCHES: tuple[Bench, ...] = (
    Bench("iterable_client", (), ("--seconds", "2"), _iterable_client),
    Bench("limiters", (), ("--seconds", "2", "--backends", "sqlite"), _limiters),
    Bench("webhook_intake", (), ("--events", "2000", "--backends", "sqlite"), _webhook_intake),
    Bench("drain", (), ("--events", "2000"), _drain),
    Bench("sync_diff", (), ("--rows", "100000"), _sync_diff),
    Bench(
        "sync_throughput",
        (),
        (
            "--rows-limited",
            "10000",
            "--rows-unlimited",
            "20000",
            "--baseline-rows",
            "1000",
            "--baseline-seconds",
            "3",
        ),
        _sync_throughput,
    ),
    Bench("sync_update_only", (), ("--rows", "10000"), _sync_update_only),
    Bench(
        "optout_latency",
        (),
        ("--people", "10", "--over", "10", "--poll-unsubscribes", "100", "--poll-noise", "200"),
        _optout,
    ),
    Bench(
        "consent_latency",
        (),
        ("--people", "5", "--over", "5", "--reconcile-lookups", "200", "--reconcile-export", "2000"),
        _consent,
    ),
)


@dataclass
class BenchResult:
    """What one benchmark gave: its figures, or why it failed."""

    name: str
    seconds: float
    figures: Figures = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the bench exited 0 and printed its JSON line."""
        return self.error is None


Runner = Callable[[Sequence[str], float], tuple[int, str, str]]


def run_process(argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
    """Run ``argv`` in the project directory; (exit code, stdout, stderr)."""
    env = os.environ | {"PYTHONPATH": str(PROJECT_DIR)}
    try:
        done = subprocess.run(
            list(argv), cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout:.0f} s"
    return done.returncode, done.stdout, done.stderr


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last line of ``text`` that is a JSON object, or None."""
    try:
        return last_json_line(text)
    except ValueError:
        return None


def run_bench(bench: Bench, quick: bool, runner: Runner | None = None) -> BenchResult:
    """Run one bench (with ``runner``, default ``run_process``) and parse its last JSON line; a non-zero
    exit or no JSON line is a failure."""
    argv = [sys.executable, "-m", f"dev.bench.{bench.name}", *(bench.quick if quick else bench.full)]
    began = time.monotonic()
    code, stdout, stderr = (runner or run_process)(argv, bench.timeout)
    seconds = time.monotonic() - began
    data = last_json_object(stdout)
    if code != 0 or data is None:
        tail = (stderr or stdout).strip().splitlines()[-1:] or [""]
        reason = f"exit {code}" if code != 0 else "no JSON line"
        return BenchResult(bench.name, seconds, error=mask_emails(f"{reason}: {tail[0][:200]}"))
    try:
        figures = bench.extract(data)
    except Exception as exc:  # a bench whose output changed shape is a failure, not a crash
        return BenchResult(bench.name, seconds, error=f"unreadable figures ({type(exc).__name__})")
    return BenchResult(bench.name, seconds, figures=figures)


def aggregate(results: Sequence[BenchResult]) -> dict[str, Any]:
    """Every figure in one flat object, the required keys always present, plus cpu_count and failures."""
    merged: dict[str, Any] = dict.fromkeys(REQUIRED_KEYS)
    for result in results:
        merged.update(result.figures)
    merged["cpu_count"] = os.cpu_count()
    merged["failed"] = [r.name for r in results if not r.ok]
    return merged


@dataclass(frozen=True)
class Goal:
    """A figure's goal: its label, the goal as text, and a check (None when it cannot be judged)."""

    key: str
    label: str
    text: str
    check: Callable[[float, Mapping[str, Any]], bool]


GOALS: tuple[Goal, ...] = (
    Goal("sync_limited_share", "sync rows/s with Iterable's limits / ceiling (100k rows)", ">= 0.95",
         lambda v, f: v >= 0.95),
    Goal("drain_share", "drain events/s / ceiling (100k backlog)", ">= 0.92", lambda v, f: v >= 0.92),
    Goal("sync_vs_bare", "first sync, limits off / bare read-and-post script", ">= 0.8",
         lambda v, f: v >= 0.8),
    Goal("diff_vs_bare", "diff (1M rows, 1% changed) / bare CREATE TABLE AS", "<= 1.5",
         lambda v, f: v <= 1.5),
    Goal("intake_vs_bare", "webhook intake / bare Starlette insert", ">= 0.7", lambda v, f: v >= 0.7),
    Goal("intake_p99_ms_at_3000", "webhook intake p99 at 3,000 events/s offered, ms", "", lambda v, f: True),
    Goal("cpu_us_per_synced_row", "sync process CPU per synced row, us", "<= 20", lambda v, f: v <= 20),
    Goal("sync_bare_cpu_us_per_row", "  bare read-and-post script CPU per row, us", "", lambda v, f: True),
    Goal("cpu_us_per_drained_event", "drain process CPU per drained event, us", "<= 150",
         lambda v, f: v <= 150),
    Goal("cpu_us_per_webhook", "receiver CPU per webhook, us", "<= 200", lambda v, f: v <= 200),
    Goal("intake_bare_cpu_us_per_webhook", "  bare Starlette insert CPU per webhook, us", "",
         lambda v, f: True),
    Goal("sync_rows_per_s_limited", "sync rows/s, Iterable limits on", "", lambda v, f: True),
    Goal("sync_ceiling_rows_per_s", "sync ceiling rows/s (bulkUpdate 5/s x 1000)", "", lambda v, f: True),
    Goal("sync_per_row_baseline_rows_per_s", "per-row users/update rows/s (Workato's way)", "",
         lambda v, f: True),
    Goal("sync_limited_vs_per_row", "bulk sync / per-row baseline", ">= 9x", lambda v, f: v >= 9),
    Goal("sync_rows_per_s_unlimited", "sync rows/s, limits off (first sync)", "", lambda v, f: True),
    Goal("sync_bare_rows_per_s", "  bare read-and-post script, rows/s", "", lambda v, f: True),
    Goal("sync_peak_rss_mb", "sync process peak RSS, MB", "<= 300", lambda v, f: v <= 300),
    Goal("update_only_vs_upsert", "update-only / upsert first sync time (90% in Iterable)", "<= 1.2",
         lambda v, f: v <= 1.2),
    Goal("update_only_users_created", "users an update-only sync created", "= 0", lambda v, f: v == 0),
    Goal("sync_diff_seconds_1m_rows", "warehouse diff, s (1M rows, 1% changed)", "", lambda v, f: True),
    Goal("diff_bare_seconds", "  bare CREATE TABLE AS, s", "", lambda v, f: True),
    Goal("sync_rows_fetched", "rows fetched after the diff", "= rows changed",
         lambda v, f: v == f.get("sync_rows_changed")),
    Goal("webhook_events_per_s", "webhook intake events/s (SQLite FULL)", ">= 20 (Workato's)",
         lambda v, f: v >= 20),
    Goal("webhook_p99_ms", "webhook intake p99, ms", "", lambda v, f: True),
    Goal("drain_events_per_s", "drain events/s", "", lambda v, f: True),
    Goal("optout_p50_seconds", "webhook -> Iterable opt-out p50, s", "", lambda v, f: True),
    Goal("optout_p99_seconds", "webhook -> Iterable opt-out p99, s", "<= 30", lambda v, f: v <= 30),
    Goal("consent_existing_p99_seconds", "webhook -> confirmed opt-out p99, s (5 s apply delay)", "<= 30",
         lambda v, f: v <= 30),
    Goal("consent_created_p99_seconds", "same, person created by the chain 10 s later, p99, s", "<= 30",
         lambda v, f: v <= 30),
    Goal("consent_created_from_creation_p99_seconds", "  from the creation, p99, s", "", lambda v, f: True),
    Goal("consent_events_before_optout", "custom events out before the opt-out", "= 0", lambda v, f: v == 0),
    Goal("reconciliation_getbyemail_people_per_second", "consent reconciliation people/s (getByEmail)", "",
         lambda v, f: True),
    Goal("reconciliation_export_people_per_second", "consent reconciliation people/s (user export)", "",
         lambda v, f: True),
    Goal("poll_unsubscribes_per_s", "Marketo poll unsubscribes/s (50 calls/20 s)", "", lambda v, f: True),
    Goal("client_bulk_users_per_s", "client bulkUpdate users/s at 5 req/s", "", lambda v, f: True),
    Goal("limiter_sqlite_share_of_ceiling", "SQLite limiter grants / Iterable's ceiling (2 processes)", "",
         lambda v, f: True),
    Goal("limiter_sqlite_share_of_paced", "  / the paced rate (ceiling less margin and share)", ">= 0.99",
         lambda v, f: v >= 0.99),
    Goal("limiter_sqlite_over_window_limit", "SQLite limiter grants above N in any window", "= 0",
         lambda v, f: v == 0),
)  # fmt: skip


def verdicts(figures: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(label, figure, goal, verdict) per goal: verdict is pass, miss, "" (no goal) or "failed"."""
    rows = []
    for goal in GOALS:
        value = figures.get(goal.key)
        if value is None:
            rows.append((goal.label, "—", goal.text, "failed" if goal.key in REQUIRED_KEYS else "—"))
            continue
        shown = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
        verdict = ("pass" if goal.check(value, figures) else "miss") if goal.text else ""
        rows.append((goal.label, shown, goal.text, verdict))
    return rows


def render(figures: Mapping[str, Any], results: Sequence[BenchResult], console: Console) -> None:
    """The goals table, then one line per bench (seconds taken, or why it failed)."""
    table = Table(title=f"recipes bench ({figures.get('cpu_count')} CPUs)")
    columns: list[tuple[str, JustifyMethod]] = [
        ("figure", "left"),
        ("value", "right"),
        ("goal", "left"),
        ("", "left"),
    ]
    for column, justify in columns:
        table.add_column(column, justify=justify)
    colours = {"pass": "green", "miss": "red", "failed": "red"}
    for label, value, goal, verdict in verdicts(figures):
        table.add_row(
            label, value, goal, f"[{colours[verdict]}]{verdict}[/]" if verdict in colours else verdict
        )
    console.print(table)
    for result in results:
        state = "ok" if result.ok else f"[red]FAILED[/] {result.error}"
        console.print(f"  bench.{result.name:<16} {result.seconds:7.1f} s  {state}", highlight=False)


def bench(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object as the last line.")
    ] = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="Small sizes for CI: seconds per bench, not minutes.")
    ] = False,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only these benches (repeatable).")
    ] = None,
) -> None:
    """Run every benchmark (each in its own process) and print its figures beside their goals."""
    chosen = [b for b in BENCHES if not only or b.name in only]
    unknown = set(only or ()) - {b.name for b in BENCHES}
    if unknown:
        raise typer.BadParameter(f"unknown bench(es): {', '.join(sorted(unknown))}", param_hint="--only")
    console = Console(stderr=json_output)
    results = []
    for item in chosen:
        console.print(f"running bench.{item.name}{' (quick)' if quick else ''}...", highlight=False)
        results.append(run_bench(item, quick))
    figures = aggregate(results)
    render(figures, results, console)  # on stderr with --json, so stdout ends with the JSON line
    if json_output:
        print(json.dumps(figures, sort_keys=True))
    if figures["failed"]:
        raise typer.Exit(1)


app = typer.Typer(add_completion=False)
app.command()(bench)

if __name__ == "__main__":
    app()
