"""`recipes demo` and `recipes bench`: development programs in a checkout's dev/, never in the wheel.

Production code never imports dev/: these commands run its programs as their own processes, from the
checkout this package was loaded from, and say why they cannot when the package is an installed wheel.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Any

import typer

from iterable_recipes.project import checkout_dir

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def run_dev_program(module: str, arguments: list[str]) -> int:
    """Run ``python -m <module> <arguments>`` in the checkout; exit 2 from an installed wheel."""
    root = checkout_dir()
    if root is None:
        typer.echo(
            f"`{module}` is part of the development checkout (dev/), which an installed wheel does not "
            "carry: clone the repository and run this command there.",
            err=True,
        )
        raise typer.Exit(2)
    process = subprocess.Popen([sys.executable, "-m", module, *arguments], cwd=root)

    def forward(signum: int, frame: Any) -> None:
        if process.poll() is None:
            process.send_signal(signum)

    # The program stops its own parts when told to. Ctrl-C reaches it from the terminal as it reaches
    # this process (one process group): here it is ignored, not answered by killing the program (what
    # subprocess.call does), which would leave the program's parts running. SIGTERM, sent to this
    # process alone, is passed on.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, forward)
    try:
        return process.wait()
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def demo(ctx: typer.Context) -> None:
    """Run the three recipes end to end on the embedded default stack (from a checkout)."""
    raise typer.Exit(run_dev_program("dev.demo", list(ctx.args)))


def bench(ctx: typer.Context) -> None:
    """Run every benchmark and print its figures beside their goals (from a checkout; --help for options)."""
    raise typer.Exit(run_dev_program("dev.bench.run_all", list(ctx.args)))


def register(app: typer.Typer) -> None:
    """Add `recipes demo` and `recipes bench` to ``app``."""
    app.command("demo", context_settings=PASS_THROUGH)(demo)
    app.command("bench", context_settings=PASS_THROUGH)(bench)
