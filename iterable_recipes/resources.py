"""One object that builds what a run uses (clients, limiter, store, policy, mapping) from settings or blocks.

Every entry point makes one ``Resources`` and passes it on: a flow run opens its own with
``run_resources()`` and hands it to its tasks, and closes it at the end. Nothing is cached for the whole
process, so a test builds its own ``Resources`` (its own client over a checked transport, its own
database) and makes flows use it with ``provided(resources)``.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar, cast

from iterable_recipes.clients.iterable import IterableClient, paced_rates
from iterable_recipes.clients.limiter import InMemoryLimiter, NoLimiter, RateLimiter
from iterable_recipes.clients.marketo import MarketoClient
from iterable_recipes.clients.shared_limiters import PostgresLimiter, RedisLimiter, SQLiteLimiter
from iterable_recipes.config_files import ConfigError
from iterable_recipes.customersdot.mapping import EventMapping, load_mapping
from iterable_recipes.masking import install_masking
from iterable_recipes.optouts.consent import ConsentPolicy, load_consent_policy
from iterable_recipes.settings import Settings, load_settings
from iterable_recipes.store import Inbox

T = TypeVar("T")
_PROVIDED: ContextVar[Resources | Callable[[], Resources] | None] = ContextVar(
    "iterable_recipes_resources", default=None
)


def build_limiter(settings: Settings) -> RateLimiter:
    """A new limiter holding Iterable's per-project limits in ``settings.limiter_backend``.

    ``memory`` paces one process only; ``sqlite`` every process of the machine; ``redis`` and
    ``postgres`` every machine. With ITERABLE_LIMITS_ENABLED false nothing is paced.
    """
    if not settings.iterable_limits_enabled:
        return NoLimiter()
    rates = paced_rates(
        settings.iterable_rate_share,
        settings.iterable_list_writes_per_second,
        settings.iterable_rate_margin_seconds,
    )
    backend = settings.limiter_backend
    prefix = settings.limiter_key_prefix
    if backend == "memory":
        return InMemoryLimiter(rates)
    if backend == "sqlite":
        return SQLiteLimiter(settings.limiter_sqlite_path, rates, table_prefix=prefix)
    if backend == "redis":
        return RedisLimiter(settings.limiter_redis_url, rates, key_prefix=prefix)
    if not settings.limiter_postgres_url:
        raise ConfigError("LIMITER_BACKEND is postgres but LIMITER_POSTGRES_URL is not set")
    return PostgresLimiter(settings.limiter_postgres_url, rates, table_prefix=prefix)


def build_iterable_client(settings: Settings, limiter: RateLimiter) -> IterableClient:
    """An IterableClient paced by ``limiter``: from ITERABLE_CREDENTIALS_BLOCK's block when named (it
    wins), else from ITERABLE_API_KEY with ITERABLE_BASE_URL or ITERABLE_REGION."""
    timeout = settings.iterable_timeout_seconds
    if settings.iterable_credentials_block:
        from blocks.iterable import IterableCredentials

        # _sync: this is called from sync tasks that may run inside an event loop's thread.
        loaded = IterableCredentials.load(settings.iterable_credentials_block, _sync=True)  # type: ignore[call-arg]
        return cast(IterableCredentials, loaded).get_client(limiter=limiter, timeout=timeout)
    if settings.iterable_api_key is None or not settings.iterable_api_key.get_secret_value():
        raise ConfigError(
            "ITERABLE_API_KEY is not set: set it (with ITERABLE_REGION or ITERABLE_BASE_URL) "
            "or name a Prefect block in ITERABLE_CREDENTIALS_BLOCK"
        )
    return IterableClient(
        settings.iterable_api_key.get_secret_value(),
        base_url=settings.iterable_base_url,
        region=settings.iterable_region,
        limiter=limiter,
        timeout=timeout,
    )


def build_marketo_client(settings: Settings) -> MarketoClient:
    """A Marketo client from MARKETO_CREDENTIALS_BLOCK's block when named (it wins), else MARKETO_*."""
    from blocks.marketo import MarketoCredentials

    if settings.marketo_credentials_block:
        block: Any = MarketoCredentials.load(settings.marketo_credentials_block, _sync=True)  # type: ignore[call-arg]
    else:
        block = MarketoCredentials.from_settings(settings)
    return cast(
        MarketoClient,
        block.get_client(
            calls_per_20s=settings.marketo_calls_per_20s, max_concurrent=settings.marketo_max_concurrent
        ),
    )


def connect_warehouse(settings: Settings) -> Any:
    """A new warehouse connection from SNOWFLAKE_CREDENTIALS_BLOCK's block (it wins) or SNOWFLAKE_*."""
    from iterable_recipes.sync.connection import connect
    from iterable_recipes.sync.credentials import connection_params

    block = None
    if settings.snowflake_credentials_block:
        from prefect_snowflake import SnowflakeCredentials

        block = SnowflakeCredentials.load(settings.snowflake_credentials_block, _sync=True)
    return connect(**connection_params(block, settings))


class Resources:
    """What one run (or one server) uses, built on first use from ``settings`` and closed with it.

    Any part can be given instead (tests give a client over a checked transport, a database of their
    own): given parts are used as they are and left open; built parts are closed by ``close()``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        iterable: IterableClient | None = None,
        limiter: RateLimiter | None = None,
        inbox: Inbox | None = None,
        consent_policy: ConsentPolicy | None = None,
        event_mapping: EventMapping | None = None,
        marketo: Callable[[], MarketoClient] | None = None,
        warehouse: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self._parts: dict[str, Any] = {
            name: part
            for name, part in (
                ("iterable", iterable),
                ("limiter", limiter),
                ("inbox", inbox),
                ("consent_policy", consent_policy),
                ("event_mapping", event_mapping),
            )
            if part is not None
        }
        self._marketo = marketo or (lambda: build_marketo_client(self.settings))
        self._warehouse = warehouse or (lambda: connect_warehouse(self.settings))
        self._built: list[Any] = []
        self._lock = threading.RLock()

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Resources:
        """Resources for ``settings`` (read from the environment when not given)."""
        return cls(settings or load_settings())

    def __repr__(self) -> str:
        return f"Resources(parts={sorted(self._parts)})"

    def _part(self, name: str, build: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._parts:
                self._parts[name] = build()
                self._built.append(self._parts[name])
            return cast(T, self._parts[name])

    @property
    def limiter(self) -> RateLimiter:
        """The limiter every Iterable request of this run waits on (shared through its backend)."""
        return self._part("limiter", lambda: build_limiter(self.settings))

    @property
    def iterable(self) -> IterableClient:
        """The Iterable client (one connection pool), paced by ``limiter``."""
        return self._part("iterable", lambda: build_iterable_client(self.settings, self.limiter))

    @property
    def inbox(self) -> Inbox:
        """The app database on RECIPES_DATABASE_URL (migrated by serve, the receiver or `recipes db`)."""
        settings = self.settings
        return self._part(
            "inbox",
            lambda: Inbox(
                settings.recipes_database_url,
                max_attempts=settings.inbox_max_attempts,
                sqlite_synchronous=settings.inbox_sqlite_synchronous,
            ),
        )

    @property
    def consent_policy(self) -> ConsentPolicy:
        """The consent policy file (CONSENT_POLICY_PATH or the shipped one), validated."""
        return self._part("consent_policy", lambda: load_consent_policy(self.settings.consent_policy_path))

    @property
    def event_mapping(self) -> EventMapping:
        """The CustomersDot event mapping, validated against the contract."""
        return self._part("event_mapping", load_mapping)

    def marketo(self) -> MarketoClient:
        """A new Marketo client (the caller closes it, e.g. ``with resources.marketo() as client``)."""
        return self._marketo()

    @contextmanager
    def warehouse(self) -> Iterator[Any]:
        """A new warehouse connection, closed at the end of the block."""
        conn = self._warehouse()
        try:
            yield conn
        finally:
            conn.close()

    def close(self) -> None:
        """Close every part this object built (given parts stay open for their owner)."""
        with self._lock:
            built, self._built = self._built, []
        for part in reversed(built):
            closer = getattr(part, "close", None) or getattr(part, "dispose", None)
            if closer is not None:
                closer()

    def __enter__(self) -> Resources:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def provided(resources: Resources | Callable[[], Resources]) -> Iterator[None]:
    """Make flows started inside this block use ``resources`` instead of their own (tests, benchmarks).

    A callable is called at the start of each flow run, so each run gets its own, built from the
    settings of that moment; the parts it was given stay shared.
    """
    token = _PROVIDED.set(resources)
    try:
        yield
    finally:
        _PROVIDED.reset(token)


def settle_heap() -> None:
    """Collect once, then keep every object alive now (the imports, Prefect's and the run's resources)
    out of later collections.

    A full collection of a process holding Prefect walks a few hundred thousand objects and stops
    every thread for about 100 ms: long enough for a paced request to reach Iterable late and the
    next ones early, which Iterable counts as over its limit (a 429). Objects frozen here are still
    freed when their last reference goes; only cycles among them wait for the process to end.
    """
    gc.collect()
    gc.freeze()


@contextmanager
def run_resources() -> Iterator[Resources]:
    """What a flow run uses: the provided resources, else new ones from settings, closed when it ends.

    Masking is installed first: a flow run started by a worker is its own process and entry point. It
    tags with the key of the run's own settings once they are read (untagged until then).
    """
    install_masking()
    given = _PROVIDED.get()
    if isinstance(given, Resources):
        install_masking(tag_key=given.settings.masking_key)
        yield given
        return
    made = given() if given is not None else Resources.from_settings()
    install_masking(tag_key=made.settings.masking_key)
    settle_heap()
    with made, provided(made):
        yield made
