"""`recipes serve --embedded`: every part on this machine (stand-ins and fakesnow too), then serve.

The Prefect server, the receiver and the deployments are the same as `recipes serve`'s; only Iterable,
Marketo and Snowflake are stand-ins, and a banner says so. Nothing real is reached.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from dev.embedded import EmbeddedStack
from iterable_recipes.cli.serve import (
    PREFECT_PORT,
    _free,
    ensure_masking_key,
    ensure_webhook_secret,
    serve_with_stack,
)


def embedded_stack() -> EmbeddedStack:
    """Every part local, on the Prefect home `recipes serve` and `recipes demo` use (the demo's runs show)."""
    return EmbeddedStack(prefect_port=PREFECT_PORT if _free(PREFECT_PORT) else None)


def main(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8080,
    query_seconds: Annotated[float, typer.Option()] = 10.0,
) -> None:
    """Start the embedded stack, say so, and serve until interrupted."""
    console = Console()
    stack = embedded_stack()

    def ready() -> None:
        console.print(
            "[bold yellow]EMBEDDED:[/] Iterable, Marketo and Snowflake are local stand-ins; "
            "nothing is sent to the real vendors."
        )
        ensure_webhook_secret(stack.state_dir, console)
        ensure_masking_key(stack.state_dir, console)

    starting = "starting the embedded stack (Prefect server, stand-ins, fakesnow)..."
    serve_with_stack(stack, starting, ready, (host, port), query_seconds, console)


if __name__ == "__main__":
    typer.run(main)
