"""Entry point of the `recipes` command (typer); each group lives in its own module."""

from __future__ import annotations

import typer

from iterable_recipes.masking import install_masking

app = typer.Typer(
    help="iterable-recipes: Prefect flows that feed Iterable from CustomersDot, Marketo and Snowflake.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _main() -> None:
    """Mask email addresses in everything this process logs, whatever the command."""
    install_masking()


def _register() -> None:
    """Attach the command groups (imported here so `recipes --help` stays fast to load)."""
    from iterable_recipes.cli import commands

    commands.register(app)


_register()
