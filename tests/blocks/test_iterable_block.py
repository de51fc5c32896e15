from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from blocks.iterable import IterableCredentials
from iterable_recipes.clients.iterable import IterableClient
from iterable_recipes.clients.limiter import InMemoryLimiter


@pytest.fixture
def block_name(prefect_server: None) -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def test_save_load_round_trip_keeps_the_secret(block_name: str) -> None:
    IterableCredentials(api_key=SecretStr("it-key-123"), region="eu").save(block_name)
    loaded = IterableCredentials.load(block_name)
    assert isinstance(loaded, IterableCredentials)
    assert isinstance(loaded.api_key, SecretStr)
    assert loaded.api_key.get_secret_value() == "it-key-123"
    assert "it-key-123" not in repr(loaded)
    assert loaded.region == "eu"
    assert loaded.base_url is None


def test_block_type_is_registered_under_its_slug(block_name: str) -> None:
    from prefect.client.orchestration import get_client

    IterableCredentials(api_key=SecretStr("k"), base_url="http://127.0.0.1:9/").save(block_name)
    with get_client(sync_client=True) as client:
        block_type = client.read_block_type_by_slug("iterable-credentials")
        document = client.read_block_document_by_name(
            block_name, "iterable-credentials", include_secrets=False
        )
    assert block_type.name == "Iterable Credentials"
    assert document.data["base_url"] == "http://127.0.0.1:9/"
    # The key stays obfuscated when secrets are not asked for.
    assert document.data["api_key"] != "k"


@pytest.mark.parametrize(
    ("region", "base_url", "expected"),
    [
        ("us", None, "https://api.iterable.com"),
        ("eu", None, "https://api.eu.iterable.com"),
        ("eu", "http://127.0.0.1:8765/", "http://127.0.0.1:8765"),
    ],
)
def test_get_client_points_at_the_right_data_center(region: str, base_url: str | None, expected: str) -> None:
    block = IterableCredentials(api_key=SecretStr("k"), region=region, base_url=base_url)
    with block.get_client() as client:
        assert isinstance(client, IterableClient)
        assert client.base_url == expected
        assert client._http.headers["Api-Key"] == "k"


def test_get_client_passes_overrides() -> None:
    limiter = InMemoryLimiter({})
    block = IterableCredentials(api_key=SecretStr("k"))
    with block.get_client(limiter=limiter, base_url="http://127.0.0.1:1") as client:
        assert client.limiter is limiter
        assert client.base_url == "http://127.0.0.1:1"
