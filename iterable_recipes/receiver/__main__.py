"""Run the receiver with uvicorn, after migrating: ``python -m iterable_recipes.receiver [--port P]``."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from iterable_recipes.masking import install_masking
from iterable_recipes.receiver.app import create_app
from iterable_recipes.settings import Settings, SettingsError, load_settings
from iterable_recipes.store import migrate


def serve(
    host: str = "127.0.0.1", port: int = 8080, settings: Settings | None = None, **uvicorn_options: object
) -> None:
    """Migrate the app database, then serve the receiver until interrupted."""
    settings = settings or load_settings()
    migrate(settings.recipes_database_url)
    options: dict[str, object] = {"log_level": "info", "access_log": False} | uvicorn_options
    uvicorn.run(create_app(settings), host=host, port=port, **options)  # type: ignore[arg-type]


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m iterable_recipes.receiver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    install_masking()
    logging.basicConfig(level=args.log_level.upper())
    try:
        settings = load_settings()
    except SettingsError as err:
        print(err.report(), file=sys.stderr)
        raise SystemExit(2) from None
    install_masking(tag_key=settings.masking_key)
    if not receiver_checks_pass(settings):
        raise SystemExit(2)
    serve(args.host, args.port, settings, log_level=args.log_level)


def receiver_checks_pass(settings: Settings) -> bool:
    """The offline checks of what the receiver uses, said on stderr: a bad file stops it; a webhook
    whose secret is missing is named (that webhook is refused until it is set), the others still run."""
    from iterable_recipes.checks import file_findings, webhook_findings

    recipes = [r for r in settings.recipes_serve_recipes if r in ("customersdot", "optouts")]
    # Of the files, the receiver reads only the event mapping (routing CustomersDot events).
    files = [f for f in file_findings(settings, [r for r in recipes if r == "customersdot"]) if not f.ok]
    for finding in webhook_findings(settings, recipes) + files:
        print(f"{finding.check}: {finding.detail}", file=sys.stderr)
    return not files


if __name__ == "__main__":
    main()
