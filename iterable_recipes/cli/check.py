"""`recipes check`: every setting, file and (unless --offline) live vendor the recipes need, as a table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from iterable_recipes.settings import RECIPES, Recipe, Settings, load_settings

if TYPE_CHECKING:
    from iterable_recipes.checks import Finding


def findings_table(findings: Sequence[Finding]) -> Table:
    """The findings as a table a person reads: check, result, detail."""
    table = Table(title="recipes check", show_lines=False)
    for column in ("check", "result", "detail"):
        table.add_column(column, overflow="fold")
    for finding in findings:
        result = "[green]ok[/]" if finding.ok else "[bold red]FAILED[/]"
        table.add_row(finding.check, result, finding.detail)
    return table


def report(findings: Sequence[Finding], console: Console) -> bool:
    """Print the table and a one-line verdict; whether everything holds."""
    console.print(findings_table(findings))
    failed = [f for f in findings if not f.ok]
    if failed:
        console.print(f"[bold red]{len(failed)} check(s) failed[/]: {', '.join(f.check for f in failed)}")
    else:
        console.print("[green]everything holds[/]")
    return not failed


def checked_or_exit(
    settings: Settings,
    recipes: Sequence[Recipe],
    offline: bool,
    console: Console,
    masking_key_generated: bool = False,
) -> None:
    """Run the checks for ``recipes`` and end the process with status 1 unless everything holds."""
    from iterable_recipes.checks import run_checks  # here: the warehouse driver loads slowly

    findings = run_checks(settings, recipes, offline=offline, masking_key_generated=masking_key_generated)
    if not report(findings, console):
        raise typer.Exit(1)


def check(
    offline: Annotated[
        bool, typer.Option("--offline", help="Settings and files only: reach no vendor and no warehouse.")
    ] = False,
    recipe: Annotated[
        list[str] | None,
        typer.Option(help="Check only this recipe (customersdot, optouts, sync); repeatable. Default: all."),
    ] = None,
) -> None:
    """Check every setting, file and live vendor the recipes need; exit 0 only when everything holds.

    No personal data is sent: the live checks read Iterable's channels, message types and user fields,
    get a Marketo token, and compile each sync's source query without reading rows.
    """
    unknown = [name for name in recipe or [] if name not in RECIPES]
    if unknown:
        raise typer.BadParameter(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    chosen: list[Recipe] = [r for r in RECIPES if r in (recipe or RECIPES)]
    checked_or_exit(load_settings(), chosen, offline, Console(width=140))


def register(app: typer.Typer) -> None:
    """Add `recipes check` to ``app``."""
    app.command("check")(check)
