"""Run the Marketo stand-in on its own: ``python -m dev.standins.marketo --port 8765``."""

from __future__ import annotations

import argparse

import uvicorn

from dev.standins.marketo.app import create_app
from dev.standins.marketo.state import SandboxOptions


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m dev.standins.marketo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--client-id", default=SandboxOptions().client_id)
    parser.add_argument("--client-secret", default=SandboxOptions().client_secret)
    parser.add_argument("--token-ttl", type=int, default=3600, help="seconds a new token lives")
    parser.add_argument("--scan-window", type=int, default=300, help="activities scanned per page")
    args = parser.parse_args(argv)
    options = SandboxOptions(
        client_id=args.client_id,
        client_secret=args.client_secret,
        token_ttl=args.token_ttl,
        scan_window=args.scan_window,
    )
    uvicorn.run(create_app(options), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
