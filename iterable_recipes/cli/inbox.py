"""`recipes inbox`: list received events, find one person's, retry dead ones, replay delivered ones, purge
old payloads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, get_args

import typer
from rich.console import Console
from rich.table import Table

from iterable_recipes.identities import normalise_email
from iterable_recipes.masking import email_tag, mask_email, mask_emails
from iterable_recipes.settings import load_settings
from iterable_recipes.store.inbox import Inbox, Item, Status
from iterable_recipes.store.migrate import migrate

app = typer.Typer(help="The inbox of received events (RECIPES_DATABASE_URL).", no_args_is_help=True)
STATUSES = get_args(Status)
MAX_ERROR_CHARS = 80


@contextmanager
def open_inbox() -> Iterator[Inbox]:
    """The inbox on RECIPES_DATABASE_URL, migrated first so a fresh checkout works; closed afterwards."""
    settings = load_settings()
    migrate(settings.recipes_database_url)
    inbox = Inbox(settings.recipes_database_url, max_attempts=settings.inbox_max_attempts)
    try:
        yield inbox
    finally:
        inbox.dispose()


# Where an item's payload holds its person's address: CustomersDot's person.email, Marketo's email.
PERSON_EMAIL_PATHS: tuple[tuple[str, ...], ...] = (("person", "email"), ("email",))


def _person(payload: dict[str, Any] | None) -> str:
    """The masked email of the event's person (CustomersDot: person.email; Marketo: email), if any."""
    if not payload:
        return "(purged)" if payload is None else ""
    person = payload.get("person")
    email = person.get("email") if isinstance(person, dict) else payload.get("email")
    return mask_email(email) if isinstance(email, str) else ""


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _error(text: str | None) -> str:
    # Reasons are masked when recorded; mask again, since older rows or other writers may not have been.
    if not text:
        return ""
    masked = mask_emails(text)
    return masked if len(masked) <= MAX_ERROR_CHARS else masked[: MAX_ERROR_CHARS - 1] + "…"


def items_table(items: list[Item]) -> Table:
    """A rich table of ``items``: no raw email address, only masked ones."""
    table = Table(title=f"inbox items ({len(items)})")
    for column in ("id", "source", "kind", "person", "status", "attempts", "next attempt", "last error"):
        table.add_column(column, overflow="fold")
    for item in items:
        next_attempt = item.next_attempt_at if item.status in ("pending", "retry") else item.lease_expires_at
        table.add_row(
            str(item.id),
            item.source,
            item.kind,
            _person(item.payload),
            item.status,
            str(item.attempts),
            _when(next_attempt),
            _error(item.last_error),
        )
    return table


@app.command("list")
def list_items(
    status: Annotated[str | None, typer.Option(help=f"only this status: {', '.join(STATUSES)}")] = None,
    source: Annotated[str | None, typer.Option(help="only this source, e.g. customersdot")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many, newest first")] = 50,
) -> None:
    """Show items, newest first: id, source, kind, masked person, status, attempts, next attempt, error."""
    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    with open_inbox() as inbox:
        items = inbox.list_items(status=status, source=source, limit=limit)  # type: ignore[arg-type]
    if not items:
        typer.echo("no items")
        return
    Console(width=200).print(items_table(items))


@app.command("find")
def find(
    email: Annotated[str, typer.Option(help="the person's address, in any case or padding")],
    limit: Annotated[int, typer.Option(min=1, help="at most this many, newest first")] = 50,
) -> None:
    """Show one person's items, newest first, under their masked, tagged address (never the address)."""
    wanted = normalise_email(email)
    untagged = "" if email_tag(wanted) else " (untagged: RECIPES_MASKING_KEY is not set)"
    typer.echo(f"person: {mask_email(wanted)}{untagged}")
    with open_inbox() as inbox:
        items = inbox.find_by_payload(PERSON_EMAIL_PATHS, lambda held: normalise_email(held) == wanted, limit)
    if not items:
        # Purged payloads (INBOX_PAYLOAD_RETENTION_DAYS) no longer say whose they were.
        typer.echo("no items (items whose payload was purged cannot be found by address)")
        return
    Console(width=200).print(items_table(items))


@app.command("retry")
def retry(
    item_id: Annotated[int | None, typer.Argument(help="the item to send again")] = None,
    dead: Annotated[bool, typer.Option("--dead", help="every dead item instead of one")] = False,
    source: Annotated[str | None, typer.Option(help="with --dead: only this source")] = None,
) -> None:
    """Make one item (dead, skipped or waiting to retry), or every dead item, pending now."""
    if (item_id is None) == (not dead):
        raise typer.BadParameter("give an item ID or --dead, not both")
    with open_inbox() as inbox:
        if dead:
            count = inbox.retry_dead(source)
            typer.echo(f"{count} dead item(s) pending again; the next drain sends them")
            return
        assert item_id is not None
        if not inbox.retry(item_id):
            found = inbox.get(item_id)
            why = "no such item" if found is None else f"it is {found.status}"
            typer.echo(f"item {item_id} not retried: {why} (or its key is already waiting)", err=True)
            raise typer.Exit(1)
        typer.echo(f"item {item_id} pending again; the next drain sends it")


def parse_since(value: str) -> datetime:
    """An ISO 8601 date or time; without a zone it is taken as UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO 8601 date or time: {value!r}") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@app.command("replay")
def replay(
    since: Annotated[str, typer.Option(help="ISO 8601: items delivered at or after this time")],
    source: Annotated[str | None, typer.Option(help="only this source (default: every source)")] = None,
) -> None:
    """Send delivered items again with the same ids, so Iterable updates its one copy of each event."""
    moment = parse_since(since)
    with open_inbox() as inbox:
        sources = [source] if source is not None else sorted(inbox.counts())
        total = 0
        for name in sources:
            count = inbox.replay(name, moment)
            total += count
            typer.echo(f"{name}: {count} item(s) pending again")
    typer.echo(f"{total} item(s) will be sent again by the next drains")


@app.command("purge")
def purge(
    older_than_days: Annotated[
        float | None, typer.Option(min=0, help="default: INBOX_PAYLOAD_RETENTION_DAYS")
    ] = None,
) -> None:
    """Drop the payloads (personal data) of finished items older than the retention; rows stay."""
    days = load_settings().inbox_payload_retention_days if older_than_days is None else older_than_days
    with open_inbox() as inbox:
        count = inbox.purge(timedelta(days=days))
    typer.echo(f"{count} payload(s) purged (finished items last changed over {days:g} day(s) ago)")
