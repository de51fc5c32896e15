"""Builds what tasks use, the shared rate limiter and the Iterable client, from settings or Prefect blocks."""

from __future__ import annotations

import threading
from typing import cast

from blocks.iterable import IterableCredentials
from iterable_recipes.clients.iterable import IterableClient, paced_rates
from iterable_recipes.clients.limiter import InMemoryLimiter, NoLimiter, RateLimiter
from iterable_recipes.clients.shared_limiters import PostgresLimiter, RedisLimiter, SQLiteLimiter
from iterable_recipes.config_files import ConfigError
from iterable_recipes.settings import Settings, get_settings

_process_limiters: dict[tuple[object, ...], RateLimiter] = {}
_process_lock = threading.Lock()


def build_limiter(settings: Settings) -> RateLimiter:
    """A new limiter holding Iterable's per-project limits in ``settings.limiter_backend``.

    ``memory`` paces one process only; ``sqlite`` every process of the machine; ``redis`` and
    ``postgres`` every machine. With ITERABLE_LIMITS_ENABLED false nothing is paced.
    """
    if not settings.iterable_limits_enabled:
        return NoLimiter()
    # A little under Iterable's limits: network jitter would otherwise land a few requests inside the
    # same one-second window and each 429 costs a second.
    rates = paced_rates(settings.iterable_rate_headroom)
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


def process_limiter(settings: Settings | None = None) -> RateLimiter:
    """The process's one limiter for this configuration, built on first use.

    Every client of the process must share it: two limiters on one backend would still agree, but
    each would open its own connections and leak thread.
    """
    settings = settings or get_settings()
    key = (
        settings.iterable_limits_enabled,
        settings.limiter_backend,
        settings.limiter_sqlite_path,
        settings.limiter_redis_url,
        settings.limiter_postgres_url,
        settings.limiter_key_prefix,
    )
    with _process_lock:
        limiter = _process_limiters.get(key)
        if limiter is None:
            limiter = _process_limiters[key] = build_limiter(settings)
        return limiter


def iterable_client(settings: Settings | None = None) -> IterableClient:
    """An IterableClient paced by the process's shared limiter.

    When ITERABLE_CREDENTIALS_BLOCK names a block, that block is loaded and wins; otherwise
    ITERABLE_API_KEY with ITERABLE_BASE_URL or ITERABLE_REGION is used.
    """
    settings = settings or get_settings()
    limiter = process_limiter(settings)
    timeout = settings.iterable_timeout_seconds
    if settings.iterable_credentials_block:
        # _sync: this is called from sync tasks that may run inside an event loop's thread.
        loaded = IterableCredentials.load(settings.iterable_credentials_block, _sync=True)  # type: ignore[call-arg]
        block = cast(IterableCredentials, loaded)
        return block.get_client(limiter=limiter, timeout=timeout)
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
