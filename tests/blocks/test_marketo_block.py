"""MarketoCredentials: builds a working client, hides its secret, reads settings."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr

from blocks.marketo import MarketoCredentials
from iterable_recipes.clients.limiter import NoLimiter
from iterable_recipes.settings import Settings


def test_get_client_uses_the_credentials_and_overrides() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/oauth/token"):
            return httpx.Response(200, json={"access_token": "t", "token_type": "bearer", "expires_in": 3600})
        return httpx.Response(200, json={"success": True, "result": [{"id": 1}]})

    secret = SecretStr("csecret")
    block = MarketoCredentials(base_url="https://m.test/", client_id="cid", client_secret=secret)
    assert "csecret" not in repr(block)
    with block.get_client(transport=httpx.MockTransport(handler), limiter=NoLimiter()) as client:
        assert [lead.id for lead in client.get_leads_by_ids([1])] == [1]
    assert str(seen[0].url).startswith("https://m.test/identity/oauth/token?")
    assert seen[0].url.params["client_secret"] == "csecret"
    assert str(seen[1].url).startswith("https://m.test/rest/v1/leads.json?")


def test_identity_url_from_the_block() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path.endswith("/oauth/token"):
            return httpx.Response(200, json={"access_token": "t", "token_type": "bearer", "expires_in": 3600})
        return httpx.Response(200, json={"success": True, "nextPageToken": "START"})

    block = MarketoCredentials(
        base_url="https://m.test",
        client_id="c",
        client_secret=SecretStr("s"),
        identity_url="https://id.test/x",
    )
    with block.get_client(transport=httpx.MockTransport(handler), limiter=NoLimiter()) as client:
        assert client.get_paging_token(datetime(2024, 5, 1, tzinfo=UTC)) == "START"
    assert seen[0].startswith("https://id.test/x/oauth/token?")
    assert seen[1].startswith("https://m.test/rest/v1/activities/pagingtoken.json?")


def test_from_settings() -> None:
    settings = Settings(
        _env_file=None,
        marketo_base_url="https://m.test",
        marketo_client_id="cid",
        marketo_client_secret=SecretStr("csecret"),
    )
    block = MarketoCredentials.from_settings(settings)
    assert (block.base_url, block.client_secret.get_secret_value()) == ("https://m.test", "csecret")
    with pytest.raises(ValueError, match="MARKETO_CLIENT_SECRET"):
        incomplete = Settings(_env_file=None, marketo_base_url="x", marketo_client_id="y")
        MarketoCredentials.from_settings(incomplete)
