"""Entry point of the `recipes` command (typer); each group lives in its own module."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from iterable_recipes.masking import install_masking


class _Commands(TyperGroup):
    """The command group; bad settings end any command with their report and exit status 2."""

    def invoke(self, ctx: Any) -> Any:  # Any: typer's own (vendored) click Context is private
        """Run the command; a SettingsError becomes its report instead of a traceback."""
        from iterable_recipes.settings import SettingsError  # here: `recipes --help` stays fast

        try:
            return super().invoke(ctx)
        except SettingsError as err:
            typer.echo(err.report(), err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_Commands,
    help="iterable-recipes: Prefect flows that feed Iterable from CustomersDot, Marketo and Snowflake.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _main() -> None:
    """Mask email addresses in everything this process logs, whatever the command."""
    install_masking(tag_key=_masking_key())


def _masking_key() -> str | None:
    """RECIPES_MASKING_KEY, or None when the settings are unset or bad (the command reports bad ones)."""
    from iterable_recipes.settings import SettingsError, load_settings

    try:
        return load_settings().masking_key
    except SettingsError:
        return None


def _register() -> None:
    """Attach the command groups (imported here so `recipes --help` stays fast to load)."""
    from iterable_recipes.cli import commands

    commands.register(app)


_register()
