"""`recipes serve`: the webhook receiver and every deployment of prefect.yaml, from one command."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from iterable_recipes.cli.checkout_tools import run_dev_program
from iterable_recipes.cli.deployments import (
    PREFECT_FILE,
    DeploymentSpec,
    available,
    full_name,
    read_deployments,
    to_runner_deployment,
)
from iterable_recipes.cli.local_stack import (
    PREFECT_PORT,
    LocalParts,
    LocalStack,
    new_masking_key,
    new_webhook_secret,
)
from iterable_recipes.cli.operating_state import drop_stale_schedules, read_on_server
from iterable_recipes.masking import install_masking
from iterable_recipes.serving import ServerThread
from iterable_recipes.settings import RECIPES, Settings, load_settings

log = logging.getLogger(__name__)
SECRET_FILE = "customersdot-webhook-secret"
MASKING_KEY_FILE = "masking-key"


def _free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:``port``."""
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def build_deployments(
    console: Console | None = None,
    schedules_active: bool = True,
    path: Path = PREFECT_FILE,
    recipes: Sequence[str] = RECIPES,
) -> list[Any]:
    """A served deployment per prefect.yaml entry whose flow exists here; the others are named and skipped.

    Each deployment already on the server keeps its paused flag and its schedules' active flags (see
    ``operating_state``), and loses the schedules prefect.yaml no longer has. Needs the Prefect API.
    """
    from prefect.client.orchestration import get_client

    deployments = []
    with get_client(sync_client=True) as client:
        for spec in read_deployments(path):
            if spec.recipe not in recipes:
                if console:
                    console.print(
                        f"[yellow]not served[/] {spec.name}: RECIPES_SERVE_RECIPES leaves out {spec.recipe}"
                    )
                continue
            if not available(spec):
                if console:
                    skipped = f"{spec.name}: {spec.entrypoint} is not in this checkout"
                    console.print(f"[yellow]skipped[/] {skipped}")
                continue
            on_server = read_on_server(client, full_name(spec))
            deployments.append(to_runner_deployment(spec, schedules_active, on_server))
            drop_stale_schedules(client, on_server, spec.slugs)
    return deployments


def served_names(specs: list[DeploymentSpec] | None = None) -> list[str]:
    """ "flow-name/deployment-name" of each deployment that can be served here."""
    return [full_name(s) for s in specs or read_deployments() if available(s)]


def start_receiver(host: str, port: int, api_url: str | None) -> Any:
    """Migrate the app database and serve the receiver in a thread; its nudges go to ``api_url``."""
    from iterable_recipes.receiver.app import create_app
    from iterable_recipes.receiver.nudge import Nudger, PrefectTrigger
    from iterable_recipes.settings import load_settings
    from iterable_recipes.store import migrate

    settings = load_settings()
    migrate(settings.recipes_database_url)
    # An explicit API URL: the receiver's threads do not share this thread's Prefect settings context.
    nudger = Nudger(PrefectTrigger(api_url=api_url), window_seconds=settings.nudge_window_seconds)
    app = create_app(settings, nudger=nudger)
    return ServerThread(app, host, port, name="receiver").start()


class RunnerThread:
    """Serves deployments with a Prefect Runner on a thread of its own (`recipes serve`, the demo).

    Off the main thread, Prefect installs no signal handler of its own: the process's signals stay
    with the caller, who decides when to stop.
    """

    def __init__(self, deployments: list[Any], query_seconds: float = 2.0) -> None:
        from prefect.runner import Runner

        # Not Prefect's default (pause every served deployment when the runner stops): the paused flags
        # are the operators', kept at the next start, so a pause by serve's own shutdown would stay.
        self.runner = Runner(query_seconds=query_seconds, pause_on_shutdown=False)
        self.deployments = deployments
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="prefect-runner", daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            for deployment in self.deployments:
                await self.runner.add_deployment(deployment)  # type: ignore[misc]
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.create_task(self.runner.start())
            self._started.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by start() or stop()
            self._error = exc
            self._started.set()

    def start(self, timeout: float = 60.0) -> RunnerThread:
        """Register the deployments and start polling for their runs."""
        self._thread.start()
        if not self._started.wait(timeout) or self._error is not None:
            raise RuntimeError(f"the Prefect runner did not start: {self._error!r}")
        return self

    @property
    def running(self) -> bool:
        """Whether the runner's thread still runs (it ends by itself only on an error)."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Take no new run, cancel the runs in flight (their processes ended, Cancelled on the server)
        and wait for the thread; a runner still starting has its start cancelled instead. Prefect's
        queued logs and events are then sent (``drain_prefect_queues``)."""
        if self._loop is not None and self._task is not None:
            if self.runner.started:
                asyncio.run_coroutine_threadsafe(self.runner.astop(), self._loop)
            else:
                self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout=30)
        drain_prefect_queues()  # what the stop logged, while the Prefect API (an embedded one too) answers


def ensure_webhook_secret(state_dir: Path, console: Console) -> None:
    """Embedded only: without CUSTOMERSDOT_WEBHOOK_SECRETS, generate one into a 0600 file (never printed)."""
    if os.environ.get("CUSTOMERSDOT_WEBHOOK_SECRETS"):
        return
    path = state_dir / SECRET_FILE
    if not path.exists():
        path.write_text(new_webhook_secret())
        path.chmod(0o600)
    os.environ["CUSTOMERSDOT_WEBHOOK_SECRETS"] = path.read_text().strip()
    console.print(f"CustomersDot signing secret: generated, in {path} (not printed)")


def ensure_masking_key(state_dir: Path, console: Console) -> None:
    """Embedded only: without RECIPES_MASKING_KEY (environment or .env), generate one into a 0600 file
    (never printed) and tag with it: here, and in the flow runs, which inherit the environment."""
    if load_settings().masking_key:
        return
    path = state_dir / MASKING_KEY_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        # Created 0600 rather than chmod-ed after: the key is never readable by others, even briefly.
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            file.write(new_masking_key())
    key = path.read_text().strip()
    os.environ["RECIPES_MASKING_KEY"] = key
    install_masking(tag_key=key)
    console.print(f"Masking key: generated, in {path} (not printed)")


def describe(described: list[tuple[str, str]], console: Console) -> None:
    """Say which parts run embedded on this machine."""
    if not described:
        console.print("Every part is configured: nothing embedded.")
        return
    console.print("[bold]Embedded on this machine:[/]")
    for part, what in described:
        console.print(f"  {part:<13} {what}")


def local_parts(settings: Settings) -> LocalParts:
    """The embedded defaults this machine needs: what the settings (environment, .env) and Prefect's own
    settings (environment, profile) give no address of its own."""
    from prefect.settings import PREFECT_API_URL

    configured = settings.model_fields_set
    return LocalParts(
        prefect=not PREFECT_API_URL.value(),
        app_database="recipes_database_url" not in configured,
        limiter=settings.limiter_backend == "sqlite" and "limiter_sqlite_path" not in configured,
    )


def run(host: str, port: int, query_seconds: float, console: Console) -> None:
    """Serve the receiver and the deployments with the settings in effect, until interrupted."""
    from prefect.settings import PREFECT_API_URL

    receiver = start_receiver(host, port, PREFECT_API_URL.value())
    console.print(f"Receiver: POST {receiver.url}/webhooks/customersdot (health: {receiver.url}/healthz)")
    try:
        deployments = build_deployments(console, recipes=load_settings().recipes_serve_recipes)
        console.print(
            f"Serving {len(deployments)} deployments: {', '.join(d.name for d in deployments)} "
            "(Ctrl-C or SIGTERM stops serve; a run in flight is cancelled)"
        )
        serve_deployments(deployments, query_seconds)
    finally:
        receiver.stop()


def serve_with_stack(
    stack: LocalStack,
    starting: str,
    ready: Callable[[], None],
    listen: tuple[str, int],
    query_seconds: float,
    console: Console,
) -> None:
    """Start ``stack`` (``starting`` shown meanwhile), call ``ready`` (the checks, a banner, the keys),
    say what runs embedded and serve on ``listen`` (host, port) until interrupted; the stack stops
    however serving ends, and then the process ends (``ending_the_process``)."""
    with ending_the_process():
        with console.status(starting):
            stack.start()
        stack.apply()
        try:
            ready()
            describe(stack.described, console)
            run(*listen, query_seconds, console)
        finally:
            stack.stop()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C, and what supervisors and `docker stop` send
PREFECT_DRAIN_SECONDS = 5.0  # how long Prefect's queued logs and events get to reach its API at the end


@contextlib.contextmanager
def ending_the_process() -> Iterator[None]:
    """Around everything a serve process runs: once the block is done (a signal's stop included), end
    the process.

    Prefect drains its queue services again at interpreter exit, without a limit; after a signal had
    stopped the runner, one such drain waited forever (on a future of the runner's finished event
    loop), keeping serve up after its parts had all stopped. Ending with ``os._exit`` skips it (the
    runner's end gave them their bounded drain, while the API still answered). An error other than an
    interruption leaves as usual, with its traceback. Meanwhile ``kill -USR1`` prints every thread's
    stack to stderr: where a serve that does not end is waiting.
    """
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    code = 0
    try:
        yield
    except KeyboardInterrupt:
        code = 130
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
    end_process(code)


def drain_prefect_queues() -> None:
    """Give Prefect's queued logs and events ``PREFECT_DRAIN_SECONDS`` each to reach its API."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=PREFECT_DRAIN_SECONDS)


def end_process(code: int) -> NoReturn:
    """Flush the output and end the process now, skipping the interpreter's exit hooks."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve_deployments(deployments: Sequence[Any], query_seconds: float) -> None:
    """Serve ``deployments`` with a Prefect Runner until SIGINT or SIGTERM.

    Both stop it as Prefect's runner stops at SIGTERM: it takes no new run, and the runs in flight are
    cancelled (their processes ended, Cancelled on the server) rather than awaited. Ending a run early
    is safe here: what it recorded is durable, and the next run takes up the rest. A signal only asks
    for the stop; this thread makes it. Raised where the signal landed (Prefect's own handlers exit
    from inside whatever runs, its runner's start included), the stop once left serve up past two
    minutes after Ctrl-C, and a run submitted at that moment was awaited.
    """
    stop_asked = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop_asked.set()) for sig in STOP_SIGNALS}
    runner = RunnerThread(list(deployments), query_seconds)
    try:
        runner.start()
        while runner.running and not stop_asked.wait(0.5):
            pass
    finally:
        runner.stop()  # before the embedded Prefect server, if any, stops
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(
    host: Annotated[str, typer.Option(help="Receiver address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Receiver port.")] = 8080,
    query_seconds: Annotated[float, typer.Option(help="How often the runner asks for due runs.")] = 10.0,
    embedded: Annotated[
        bool,
        typer.Option(
            "--embedded",
            help="Run every part on this machine: the Iterable and Marketo stand-ins and fakesnow too "
            "(a checkout only; nothing real is reached).",
        ),
    ] = False,
    offline_checks: Annotated[
        bool,
        typer.Option("--offline-checks", help="Check settings and files at start, not the live vendors."),
    ] = False,
) -> None:
    """Serve the webhook receiver and every deployment of prefect.yaml until interrupted.

    Without PREFECT_API_URL a local Prefect server on SQLite runs too, and without RECIPES_DATABASE_URL
    the SQLite app database; the vendors are always the configured ones (or, with --embedded, stand-ins).
    """
    if embedded:
        arguments = ["--host", host, "--port", str(port), "--query-seconds", str(query_seconds)]
        raise typer.Exit(run_dev_program("dev.serve_embedded", arguments))
    from iterable_recipes.cli.check import checked_or_exit

    console = Console()
    settings = load_settings()
    recipes = settings.recipes_serve_recipes
    parts = local_parts(settings)
    # With the local Prefect server nothing here is production: a masking key is generated once the
    # checks pass (none is written by a serve that stops at them).
    generate_key = parts.prefect and settings.masking_key is None
    # Settings and files first: a missing key ends serve at once, before any part starts.
    checked_or_exit(settings, recipes, offline=True, console=console, masking_key_generated=generate_key)
    stack = LocalStack(parts, prefect_port=PREFECT_PORT if _free(PREFECT_PORT) else None)

    def ready() -> None:
        if generate_key:
            ensure_masking_key(stack.state_dir, console)
        if not offline_checks:  # the live vendors, once the local Prefect server can load blocks
            checked_or_exit(load_settings(), recipes, offline=False, console=console)

    serve_with_stack(stack, "starting the embedded parts...", ready, (host, port), query_seconds, console)


def register(app: typer.Typer) -> None:
    """Add `recipes serve` to ``app``."""
    app.command("serve")(serve)
