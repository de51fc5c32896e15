"""Resources builds each part from settings or blocks, on first use, and closes what it built."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from blocks.iterable import IterableCredentials
from iterable_recipes.clients.iterable import DEFAULT_RATE_MARGIN_SECONDS, ITERABLE_RATE_LIMITS
from iterable_recipes.clients.limiter import InMemoryLimiter, NoLimiter
from iterable_recipes.clients.shared_limiters import (
    PostgresLimiter,
    RedisLimiter,
    SharedLimiter,
    SQLiteLimiter,
)
from iterable_recipes.config_files import ConfigError
from iterable_recipes.resources import Resources, build_limiter, provided, run_resources
from iterable_recipes.settings import Settings


def settings(**values: Any) -> Settings:
    values.setdefault("limiter_backend", "memory")
    return Settings(_env_file=None, **values)


def test_client_from_environment_settings() -> None:
    with Resources(settings(iterable_api_key="env-key", iterable_region="eu")) as resources:
        client = resources.iterable
        assert client.base_url == "https://api.eu.iterable.com"
        assert client._http.headers["Api-Key"] == "env-key"
        assert isinstance(client.limiter, InMemoryLimiter)
        assert client.limiter is resources.limiter and resources.iterable is client
    with Resources(settings(iterable_api_key="k", iterable_base_url="http://127.0.0.1:7/")) as resources:
        assert resources.iterable.base_url == "http://127.0.0.1:7"


def test_missing_key_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="ITERABLE_API_KEY is not set"):
        _ = Resources(settings()).iterable


def test_block_wins_over_environment(prefect_server: None) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    IterableCredentials(api_key=SecretStr("block-key"), base_url="http://127.0.0.1:5/").save(name)
    chosen = settings(iterable_api_key="env-key", iterable_credentials_block=name)
    with Resources(chosen) as resources:
        client = resources.iterable
        assert client.base_url == "http://127.0.0.1:5"
        assert client._http.headers["Api-Key"] == "block-key"
        assert client.limiter is resources.limiter


def test_given_parts_are_used_and_left_open_built_parts_are_closed(tmp_path: Path) -> None:
    from iterable_recipes.store import Inbox, migrate

    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate(url)
    given = Inbox(url)
    closed: list[str] = []
    with Resources(settings(recipes_database_url=url), inbox=given) as resources:
        assert resources.inbox is given
        limiter = resources.limiter
        limiter.close = lambda: closed.append("limiter")  # type: ignore[attr-defined]
    assert closed == ["limiter"]
    assert given.ping()  # still open for its owner
    given.dispose()


def test_run_resources_uses_what_is_provided_else_builds_its_own() -> None:
    mine = Resources(settings())
    with provided(mine), run_resources() as used:
        assert used is mine
    made: list[Resources] = []

    def factory() -> Resources:
        made.append(Resources(settings()))
        return made[-1]

    with provided(factory):
        with run_resources() as first:
            pass
        with run_resources() as second:
            pass
    assert made == [first, second] and first is not second


def test_a_flow_runs_log_lines_carry_the_tag_of_its_settings_key(caplog: pytest.LogCaptureFixture) -> None:
    from iterable_recipes.masking import email_tag

    key = "a-masking-key-for-tests-only-0123456789"
    with provided(Resources(settings(recipes_masking_key=SecretStr(key)))), run_resources():
        tag = email_tag("dana@example.com")
        with caplog.at_level(logging.INFO):
            logging.getLogger("flows.test").info("Opted out %s.", "Dana@example.com")
    assert tag is not None and caplog.records[-1].getMessage() == f"Opted out D***@e***.com #{tag}."
    # A run whose settings have no key masks untagged (the key is the settings', not the last run's).
    with provided(Resources(settings())), run_resources():
        assert email_tag("dana@example.com") is None


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
        assert tuple(type(b) for b in built) == (SQLiteLimiter, RedisLimiter, PostgresLimiter)
        for limiter in built:
            assert isinstance(limiter, SQLiteLimiter | RedisLimiter | PostgresLimiter)
            # The settings' pace: the whole of each limit, its window widened by the fixed margin.
            margin = DEFAULT_RATE_MARGIN_SECONDS
            assert limiter.pace("users/bulkUpdate").interval == pytest.approx((1 + margin) / 5)
            assert limiter.pace("users/getByEmail").interval == pytest.approx(
                (ITERABLE_RATE_LIMITS["users/getByEmail"].seconds + margin) / 100
            )
            limiter.acquire("users/bulkUpdate")
    finally:
        for limiter in built:
            if isinstance(limiter, SharedLimiter):
                limiter.close()
        import redis

        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)


def test_postgres_backend_needs_its_url() -> None:
    with pytest.raises(ConfigError, match="LIMITER_POSTGRES_URL is not set"):
        build_limiter(settings(limiter_backend="postgres"))
