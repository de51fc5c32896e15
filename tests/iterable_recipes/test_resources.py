"""tasks/resources.py builds clients from blocks, so its tests sit beside the block's."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from blocks.iterable import IterableCredentials
from iterable_recipes.clients.iterable import ITERABLE_RATE_LIMITS
from iterable_recipes.clients.limiter import InMemoryLimiter, NoLimiter
from iterable_recipes.clients.shared_limiters import PostgresLimiter, RedisLimiter, SQLiteLimiter
from iterable_recipes.config_files import ConfigError
from iterable_recipes.resources import build_limiter, iterable_client, process_limiter
from iterable_recipes.settings import Settings


def settings(**values: object) -> Settings:
    values.setdefault("limiter_backend", "memory")
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_client_from_environment_settings() -> None:
    with iterable_client(settings(iterable_api_key="env-key", iterable_region="eu")) as client:
        assert client.base_url == "https://api.eu.iterable.com"
        assert client._http.headers["Api-Key"] == "env-key"
        assert isinstance(client.limiter, InMemoryLimiter)
    with iterable_client(settings(iterable_api_key="k", iterable_base_url="http://127.0.0.1:7/")) as client:
        assert client.base_url == "http://127.0.0.1:7"


def test_missing_key_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="ITERABLE_API_KEY is not set"):
        iterable_client(settings())


def test_block_wins_over_environment(prefect_server: None) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    IterableCredentials(api_key=SecretStr("block-key"), base_url="http://127.0.0.1:5/").save(name)
    chosen = settings(iterable_api_key="env-key", iterable_credentials_block=name)
    with iterable_client(chosen) as client:
        assert client.base_url == "http://127.0.0.1:5"
        assert client._http.headers["Api-Key"] == "block-key"
        assert client.limiter is process_limiter(chosen)


def test_process_limiter_is_built_once_per_configuration() -> None:
    first = process_limiter(settings())
    assert process_limiter(settings()) is first
    assert process_limiter(settings(iterable_limits_enabled=False)) is not first


def test_build_limiter_per_backend(tmp_path: Path, redis_url: str, postgres_url: str) -> None:
    assert isinstance(build_limiter(settings(iterable_limits_enabled=False)), NoLimiter)
    assert isinstance(build_limiter(settings()), InMemoryLimiter)
    prefix = f"test_{uuid.uuid4().hex[:8]}"
    built = [
        build_limiter(settings(limiter_backend="sqlite", limiter_sqlite_path=str(tmp_path / "l.sqlite"))),
        build_limiter(
            settings(limiter_backend="redis", limiter_redis_url=redis_url, limiter_key_prefix=prefix)
        ),
        build_limiter(
            settings(limiter_backend="postgres", limiter_postgres_url=postgres_url, limiter_key_prefix=prefix)
        ),
    ]
    try:
        assert [type(b) for b in built] == [SQLiteLimiter, RedisLimiter, PostgresLimiter]
        for limiter in built:
            assert isinstance(limiter, SQLiteLimiter | RedisLimiter | PostgresLimiter)
            assert limiter.burst("users/bulkUpdate") == 5
            assert limiter.burst("events/track") == ITERABLE_RATE_LIMITS["events/track"].limit // 10
            limiter.acquire("users/bulkUpdate")
    finally:
        for limiter in built:
            limiter.close()  # type: ignore[attr-defined]
        import redis

        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)


def test_postgres_backend_needs_its_url() -> None:
    with pytest.raises(ConfigError, match="LIMITER_POSTGRES_URL is not set"):
        build_limiter(settings(limiter_backend="postgres"))
