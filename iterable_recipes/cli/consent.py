"""`recipes consent`: the consent ledger's state, and one consent reconciliation run from here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from iterable_recipes.cli.inbox import open_inbox
from iterable_recipes.store.inbox import Inbox

app = typer.Typer(
    help="The consent ledger (every Marketo unsubscribe) and its reconciliation.", no_args_is_help=True
)
REPAIR_HELP = "queue the opt-outs not applied yet, or lost to a re-created profile"


def age(since: datetime | None, now: datetime | None = None) -> str:
    """How long ago ``since`` was, to the minute ("3 d 4 h", "2 h 5 min", "12 min"); "-" for none."""
    if since is None:
        return "-"
    minutes = max(0, int(((now or datetime.now(UTC)) - since).total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {mins} min" if hours else f"{mins} min"


def status_lines(inbox: Inbox) -> list[str]:
    """The ledger's counts, the unresolved unsubscribes and the oldest pending item's age, one a line."""
    counts = inbox.ledger.counts()
    rows = [
        ("active", counts["pending"] + counts["applied"], "pending + applied"),
        ("pending", counts["pending"], "opt-out not in place yet"),
        ("pending existence", counts["pending_existence"], "pending, Iterable did not know the person yet"),
        ("applied", counts["applied"], "opt-out in place"),
        ("lifted", counts["lifted"], "subscribed again in Marketo"),
        ("unresolved", inbox.audit_count("unresolved"), "unsubscribes without an address (audit)"),
    ]
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{name:<{width}}  {value:>7}  {meaning}" for name, value, meaning in rows]
    lines.append(f"{'oldest pending':<{width}}  {age(inbox.ledger.oldest_pending()):>7}")
    return lines


@app.command("status")
def status() -> None:
    """Print the ledger's counts (active, pending existence, applied, lifted, unresolved) and the age of
    the oldest pending suppression."""
    with open_inbox() as inbox:
        lines = status_lines(inbox)
    typer.echo("\n".join(lines))


@app.command("reconcile")
def reconcile(
    repair: Annotated[bool, typer.Option("--repair", help=REPAIR_HELP)] = False,
) -> None:
    """Run the consent reconciliation once, here (as the daily deployment does); print its counts."""
    from flows.consent_reconciliation import consent_reconciliation

    counts = consent_reconciliation(repair=repair)
    typer.echo("\n".join(f"{name}: {value}" for name, value in counts.items()))
    if counts.get("reachable"):
        typer.echo("reachable people are listed (masked) in the run's artifact consent-reconciliation-drift")
