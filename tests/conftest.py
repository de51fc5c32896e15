"""Shared fixtures: the real PostgreSQL and Redis (own database, own key prefix), and a Prefect server.

Outside CI a missing PostgreSQL or Redis skips the tests that need it, saying why; under CI=true it
fails them, since CI must prove them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# End-to-end fixtures (stand-ins over real sockets, a fresh app database) for every test folder.
pytest_plugins = ["tests.integration"]

ROOT = Path(__file__).resolve().parent.parent
# The vendors' published specifications, read where they are (never copied in): RECIPES_REFERENCE_DIR,
# by default ../shared/reference beside the checkout.
REFERENCE = Path(os.environ.get("RECIPES_REFERENCE_DIR") or ROOT.parent / "shared" / "reference")
PUBLISHED_AT = {
    "iterable/api-docs.json": "Iterable serves it at https://api.iterable.com/api-docs "
    "(also in the GitHub repository Iterable/api-client)",
    "marketo/swagger-mapi.json": "Adobe publishes it in the GitHub repository AdobeDocs/marketo-apis "
    "(static/swagger-mapi.json)",
    "marketo/swagger-identity.json": "Adobe publishes it in the GitHub repository AdobeDocs/marketo-apis "
    "(static/swagger-identity.json)",
}
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# Tests never reach a vendor; keep Prefect quiet and local.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
for var in ("ITERABLE_API_KEY", "MARKETO_CLIENT_SECRET", "SNOWFLAKE_PASSWORD", "RECIPES_MASKING_KEY"):
    os.environ.pop(var, None)


@pytest.fixture(autouse=True)
def _masking_key_of_its_own() -> Iterator[None]:
    """Each test starts untagged and leaves the masker as it found it: the tag key is process-wide, set
    by every entry point (the CLI callback, run_resources) a test may go through."""
    from iterable_recipes import masking

    masking.set_tag_key(None)
    yield
    masking.set_tag_key(None)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """End-to-end tests first, the soak's test last. They are the longest tests by far: `make test`
    (`pytest -n 2 --dist load`) hands out the first tests one per worker, so each worker starts one
    and the rest fill in around them, instead of one worker finishing them alone at the end. The
    soak's test only waits for the soak (tests/soak/conftest.py)."""

    def rank(item: pytest.Item) -> int:
        if "tests/soak/" in str(item.fspath).replace(os.sep, "/"):
            return 2
        return 0 if item.get_closest_marker("e2e") else 1

    items.sort(key=rank)


def asked_by(*names: str) -> bool:
    """Whether any of the environment variables ``names`` is 1, true or yes."""
    return any(os.environ.get(name, "") in {"1", "true", "yes"} for name in names)


def gate_folder(items: list[pytest.Item], folder: str, marker: str, wanted: bool, reason: str) -> None:
    """Mark every test under tests/``folder``/ with ``marker``; skip them with ``reason`` unless
    ``wanted`` (the opt-in suites: end-to-end, the soak, the containers)."""
    for item in items:
        if f"tests/{folder}/" not in str(item.fspath).replace(os.sep, "/"):
            continue
        item.add_marker(getattr(pytest.mark, marker))
        if not wanted:
            item.add_marker(pytest.mark.skip(reason=reason))


def unavailable(what: str, why: str) -> None:
    """Skip outside CI, fail under CI=true: a service CI should have is never silently absent."""
    message = f"{what} unreachable ({why})"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(f"{message}; start it to run this test")


def reference_file(*parts: str) -> Path:
    """A vendor specification under RECIPES_REFERENCE_DIR; skipped outside CI when absent, fails in CI."""
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        name = "/".join(parts)
        message = (
            f"the vendor specification {name} is not in RECIPES_REFERENCE_DIR ({REFERENCE}); "
            f"{PUBLISHED_AT.get(name, 'see the vendor')}: download it there, or point "
            "RECIPES_REFERENCE_DIR at a folder holding it"
        )
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@contextmanager
def scratch_database(prefix: str, driver: str = "psycopg") -> Iterator[str]:
    """A new PostgreSQL database (``prefix`` and a random suffix) as a SQLAlchemy URL for ``driver``;
    dropped on exit, with any connection still open to it."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", f"postgresql+{driver}://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database of the tests' own, dropped afterwards (SQLAlchemy URL, psycopg 3)."""
    import psycopg

    try:
        psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        unavailable("PostgreSQL at 127.0.0.1:5432", str(exc).splitlines()[0])
    with scratch_database("recipes_test") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The machine's Redis, checked reachable; tests use ``redis_prefix`` for their keys."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        unavailable("Redis at 127.0.0.1:6379", str(exc))
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    prefix = f"recipes-test-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A real Prefect server (temporary SQLite database) for the whole session, started on first use.

    One per pytest worker (`make test` runs two). Its start migrates a new database, which on two busy
    cores has taken over a minute: the timeout leaves room for that.
    """
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=240):
        yield
