"""`recipes scan-pii`: look for raw emails and given secrets in what a run left in Prefect and on disk.

Places read: flow runs (parameters, state messages, the rest), task runs (state messages, the rest), logs,
artifacts and events from the Prefect API; persisted results under PREFECT_HOME/storage; and any files
given as paths (captured output, log files). Findings are counted per place; emails are shown masked and
secrets only by the name of their environment variable. Exit 1 when anything is found, 2 when the Prefect
API cannot be read.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

# Broader than the masking pattern on purpose (Unicode letters, any TLD of letters): a scan must catch
# what masking might miss. A masked form ("a***@e***.com") never matches: "*" is not in either part.
EMAIL = re.compile(r"(?<![\w.%+\-])[\w.%+\-]+(?:@|%40)[\w\-]+(?:\.[\w\-]+)*\.[^\W\d_]{2,}(?![\w\-])")
PAGE = 200
MIN_SECRET_LENGTH = 6


def masked(email: str) -> str:
    """``a***@e***.com`` for any address the scan matched (Unicode too, which mask_emails leaves as is)."""
    at = "%40" if "@" not in email else "@"
    local, domain = email.split(at, 1)
    return f"{local[:1]}***{at}{domain[:1]}***.{domain.rsplit('.', 1)[-1]}"


@dataclass
class Findings:
    """Counts per place: raw emails (with masked examples) and secrets by variable name."""

    emails: Counter[str] = field(default_factory=Counter)
    examples: dict[str, set[str]] = field(default_factory=dict)
    secrets: Counter[tuple[str, str]] = field(default_factory=Counter)
    scanned: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        """Emails and secrets found, all places together."""
        return sum(self.emails.values()) + sum(self.secrets.values())

    def scan(self, place: str, text: str, secrets: dict[str, list[str]]) -> None:
        """Count raw emails and secret values in ``text``, found in ``place``."""
        self.scanned[place] += 1
        for match in EMAIL.finditer(text):
            self.emails[place] += 1
            self.examples.setdefault(place, set()).add(masked(match.group(0)))
        for name, values in secrets.items():
            hits = sum(text.count(value) for value in values)
            if hits:
                self.secrets[(place, name)] += hits

    def lines(self) -> list[str]:
        """The report: one line per place with findings, never a found value unmasked."""
        out = []
        for place, count in sorted(self.emails.items()):
            shown = ", ".join(sorted(self.examples.get(place, set()))[:3])
            out.append(f"{place}: {count} raw email address(es), e.g. {shown}")
        for (place, name), count in sorted(self.secrets.items()):
            out.append(f"{place}: the value of {name} {count} time(s)")
        return out


def secret_values(names: Iterable[str]) -> tuple[dict[str, list[str]], list[str]]:
    """The values to look for per variable name (comma lists split, "whsec_" keys also bare), and notes
    on variables that are unset or too short to search for."""
    values: dict[str, list[str]] = {}
    notes = []
    for name in names:
        raw = os.environ.get(name, "")
        parts = [p.strip() for p in raw.split(",") if p.strip()] if "," in raw else [raw.strip()]
        found = [p for p in parts if p]
        found += [p.removeprefix("whsec_") for p in found if p.startswith("whsec_")]
        usable = [p for p in found if len(p) >= MIN_SECRET_LENGTH]
        if not usable:
            notes.append(f"{name}: unset or shorter than {MIN_SECRET_LENGTH} characters; not searched")
            continue
        values[name] = usable
    return values, notes


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _paged(client: httpx.Client, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every object of a Prefect ``/…/filter`` endpoint, page by page."""
    offset = 0
    while True:
        response = client.post(path, json=body | {"limit": PAGE, "offset": offset})
        response.raise_for_status()
        page = response.json()
        yield from page
        if len(page) < PAGE:
            return
        offset += PAGE


def _events(client: httpx.Client, since: datetime) -> Iterator[dict[str, Any]]:
    """Every event since ``since`` from /events/filter, following its next_page links."""
    body = {"filter": {"occurred": {"since": since.isoformat(), "until": _now().isoformat()}}, "limit": 50}
    response = client.post("/events/filter", json=body)
    while True:
        response.raise_for_status()
        page = response.json()
        yield from page.get("events", [])
        if not page.get("next_page"):
            return
        response = client.get(page["next_page"])


def scan_prefect(
    client: httpx.Client, since: datetime, findings: Findings, secrets: dict[str, list[str]]
) -> None:
    """Scan flow runs, task runs, logs, artifacts and events newer than ``since``."""
    after = since.isoformat()
    runs = list(_paged(client, "/flow_runs/filter", {"flow_runs": {"start_time": {"after_": after}}}))
    for run in runs:
        findings.scan("flow run parameters", _text(run.pop("parameters", {})), secrets)
        state = run.pop("state", None) or {}
        findings.scan("flow run state messages", _text(state.get("message") or ""), secrets)
        findings.scan("flow runs (other fields)", _text(run | {"state": state}), secrets)
    task_filter = {"task_runs": {"start_time": {"after_": after}}}
    for task_run in _paged(client, "/task_runs/filter", task_filter):
        state = task_run.pop("state", None) or {}
        findings.scan("task run state messages", _text(state.get("message") or ""), secrets)
        findings.scan("task runs (other fields)", _text(task_run | {"state": state}), secrets)
    for log in _paged(client, "/logs/filter", {"logs": {"timestamp": {"after_": after}}}):
        findings.scan("logs", _text(log), secrets)
    run_ids = [run["id"] for run in runs]
    for start in range(0, len(run_ids), PAGE):
        artifact_filter = {"artifacts": {"flow_run_id": {"any_": run_ids[start : start + PAGE]}}}
        for artifact in _paged(client, "/artifacts/filter", artifact_filter):
            findings.scan("artifacts", _text(artifact), secrets)
    for event in _events(client, since):
        findings.scan("events", _text(event), secrets)


def _decoded(text: str) -> str:
    """A stored result record with its base64 payload decoded (pickled results hide text in base64)."""
    try:
        record = json.loads(text)
    except ValueError:
        return text
    payload = record.get("result") if isinstance(record, dict) else None
    if not isinstance(payload, str):
        return text
    try:
        return text + "\n" + base64.b64decode(payload, validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        return text


def scan_files(
    paths: Iterable[Path], findings: Findings, secrets: dict[str, list[str]], place: str | None = None
) -> None:
    """Scan files as text (named by ``place``, else by their own path); result records decoded."""
    for path in paths:
        text = path.read_bytes().decode("utf-8", "replace")
        findings.scan(place or f"file {path}", _decoded(text) if place else text, secrets)


def storage_files(since: datetime) -> list[Path]:
    """Files under Prefect's local result storage written since ``since``."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    root = Path(PREFECT_LOCAL_STORAGE_PATH.value())
    if not root.is_dir():
        return []
    cutoff = since.timestamp()
    return [p for p in root.rglob("*") if p.is_file() and p.stat().st_mtime >= cutoff]


def prefect_client() -> httpx.Client:
    """An HTTP client for the configured Prefect API (PREFECT_API_URL, with its key or auth string)."""
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    if not api.url:
        raise RuntimeError("PREFECT_API_URL is not set")
    headers = {}
    if api.key:
        headers["Authorization"] = f"Bearer {api.key.get_secret_value()}"
    elif api.auth_string:
        token = base64.b64encode(api.auth_string.get_secret_value().encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return httpx.Client(base_url=str(api.url).rstrip("/") + "/", headers=headers, timeout=30)


def scan(
    since: datetime, paths: Iterable[Path] = (), secret_names: Iterable[str] = (), results: bool = True
) -> tuple[Findings, list[str]]:
    """Scan the Prefect API, result storage and ``paths``; return the findings and notes."""
    secrets, notes = secret_values(secret_names)
    findings = Findings()
    with prefect_client() as client:
        scan_prefect(client, since, findings, secrets)
    if results:
        scan_files(storage_files(since), findings, secrets, place="persisted results")
    scan_files(paths, findings, secrets)
    return findings, notes


def _now() -> datetime:
    return datetime.now(UTC)


def parse_since(value: str) -> datetime:
    """An ISO time, or an age such as 30m, 2h or 1d."""
    match = re.fullmatch(r"(\d+)([mhd])", value.strip())
    if match:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return _now() - timedelta(**{unit: int(match.group(1))})
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def scan_pii(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Captured output or log files to scan too")
    ] = None,
    since: Annotated[
        str, typer.Option(help="Only runs, logs and events since: ISO time or 30m/2h/1d")
    ] = "1d",
    secret_env: Annotated[
        list[str] | None,
        typer.Option("--secret-env", help="Environment variable whose value must appear nowhere (repeat)"),
    ] = None,
    results: Annotated[bool, typer.Option(help="Scan persisted results in PREFECT_HOME/storage")] = True,
) -> None:
    """Find raw emails (also %40-encoded) and secrets in Prefect runs, logs, artifacts, events and files."""
    try:
        findings, notes = scan(parse_since(since), paths or [], secret_env or [], results)
    except (httpx.HTTPError, RuntimeError) as exc:
        typer.echo(f"could not read the Prefect API ({type(exc).__name__})", err=True)
        raise typer.Exit(2) from exc
    for note in notes:
        typer.echo(f"note: {note}")
    places = ", ".join(f"{place} ({n})" for place, n in sorted(findings.scanned.items()))
    typer.echo(f"scanned: {places or 'nothing'}")
    for line in findings.lines():
        typer.echo(line)
    if findings.total:
        typer.echo(f"FOUND {findings.total} raw email address(es) or secret value(s)")
        raise typer.Exit(1)
    typer.echo("clean: no raw email address and no given secret found")


def register(app: typer.Typer) -> None:
    """Add `recipes scan-pii` to ``app``."""
    app.command("scan-pii")(scan_pii)


def main() -> None:
    """Run the scan alone: `python -m iterable_recipes.cli.scan`."""
    standalone = typer.Typer(add_completion=False)
    register(standalone)
    standalone()


if __name__ == "__main__":
    main()
