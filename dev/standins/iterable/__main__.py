"""Serve the Iterable stand-in in its own process: ``python -m dev.standins.iterable --port N``."""

from __future__ import annotations

import argparse

import uvicorn

from dev.standins.iterable.app import create_app
from dev.standins.iterable.options import SandboxOptions


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m dev.standins.iterable", description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-key", default=SandboxOptions.api_key)
    parser.add_argument("--no-limits", action="store_true", help="do not enforce Iterable's rate limits")
    parser.add_argument(
        "--profile-delay", type=float, default=0.0, metavar="S", help="apply profile writes after S s"
    )
    args = parser.parse_args(argv)
    options = SandboxOptions(
        api_key=args.api_key, limits_enabled=not args.no_limits, profile_delay_seconds=args.profile_delay
    )
    uvicorn.run(create_app(options), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
