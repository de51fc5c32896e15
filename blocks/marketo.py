"""Prefect block holding Marketo's client credentials, so deployments load them by name, not from env."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from iterable_recipes.clients.marketo import MarketoClient
from iterable_recipes.settings import Settings


class MarketoCredentials(Block):
    """A Marketo custom service's REST base URL and client credentials."""

    _block_type_name = "Marketo Credentials"
    _description = "Marketo REST base URL and a custom service's client id and secret."

    base_url: str = Field(description="REST base URL, e.g. https://123-ABC-456.mktorest.com")
    client_id: str = Field(description="Client ID of the custom service (Admin > LaunchPoint)")
    client_secret: SecretStr = Field(description="Client secret of the custom service")
    identity_url: str | None = Field(default=None, description="Identity URL; default base_url + /identity")

    @classmethod
    def from_settings(cls, settings: Settings) -> MarketoCredentials:
        """Credentials from MARKETO_* settings; ``ValueError`` naming what is missing."""
        missing = settings.missing("marketo")
        if missing:
            raise ValueError(f"Marketo settings missing: {', '.join(missing)}")
        assert settings.marketo_base_url and settings.marketo_client_id and settings.marketo_client_secret
        return cls(
            base_url=settings.marketo_base_url,
            client_id=settings.marketo_client_id,
            client_secret=settings.marketo_client_secret,
        )

    def get_client(self, **overrides: Any) -> MarketoClient:
        """A ``MarketoClient`` for these credentials; ``overrides`` are passed to its constructor.

        Give a shared ``limiter`` when several processes poll the same instance; the in-process default
        only paces this one client.
        """
        options: dict[str, Any] = {"identity_url": self.identity_url} | overrides
        return MarketoClient(self.base_url, self.client_id, self.client_secret.get_secret_value(), **options)
