"""The Iterable credentials block, so deployments keep the API key in Prefect, not in the environment."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

if TYPE_CHECKING:
    from iterable_recipes.clients.iterable import IterableClient


class IterableCredentials(Block):
    """An Iterable project's server-side API key and data center.

    ``base_url`` (when set) wins over ``region``: it points at a stand-in or a proxy.
    """

    _block_type_name: ClassVar[str] = "Iterable Credentials"
    _block_type_slug: ClassVar[str] = "iterable-credentials"
    _description: ClassVar[str] = "API key and data center (US or EU) of one Iterable project."

    api_key: SecretStr = Field(description="Server-side API key of the Iterable project.")
    region: Literal["us", "eu"] = Field(
        default="us", description="Data center: us (api.iterable.com) or eu (api.eu.iterable.com)."
    )
    base_url: str | None = Field(
        default=None, description="Explicit API base URL; overrides the region (stand-ins, proxies)."
    )

    def get_client(self, **overrides: Any) -> IterableClient:
        """An IterableClient for this project; ``overrides`` go to its constructor (limiter, timeout, ...)."""
        # Imported here so registering the block type needs no client code.
        from iterable_recipes.clients.iterable import IterableClient

        kwargs: dict[str, Any] = {"base_url": self.base_url, "region": self.region}
        kwargs.update(overrides)
        return IterableClient(self.api_key.get_secret_value(), **kwargs)
