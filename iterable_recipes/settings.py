"""Every setting of the project, from the environment (and a .env file), through pydantic-settings.

Variable names are the field names in upper case (ITERABLE_API_KEY, RECIPES_DATABASE_URL, ...).
When a ``*_credentials_block`` name is set, that Prefect block is loaded instead and wins. Each entry
point reads the settings once and passes them on (iterable_recipes.resources); nothing caches them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from iterable_recipes.clients.iterable import BASE_URLS, DEFAULT_HEADROOM


class Settings(BaseSettings):
    """The project's configuration; see README "Configuration" for each variable."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_nested_delimiter=None)

    # Iterable
    iterable_api_key: SecretStr | None = None
    iterable_region: Literal["us", "eu"] = "us"
    iterable_base_url: str | None = None
    iterable_credentials_block: str | None = None
    iterable_timeout_seconds: float = 30.0
    iterable_limits_enabled: bool = True
    # Pace this fraction below Iterable's stated limits (0.05: 5 % slower).
    iterable_rate_headroom: float = DEFAULT_HEADROOM
    # Opt-outs use the additive /api/subscriptions endpoints instead of bulkUpdateSubscriptions.
    iterable_optout_additive: bool = False

    # Marketo
    marketo_base_url: str | None = None
    marketo_client_id: str | None = None
    marketo_client_secret: SecretStr | None = None
    marketo_credentials_block: str | None = None
    marketo_calls_per_20s: int = 50
    marketo_max_concurrent: int = 5
    marketo_poll_start: datetime | None = None
    # Comma-separated like the CustomersDot secrets, so a rotation accepts the new and the old one.
    marketo_webhook_secret: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    marketo_webhook_header: str = "X-Recipes-Secret"

    # Snowflake
    snowflake_account: str | None = None
    snowflake_user: str | None = None
    snowflake_password: SecretStr | None = None
    snowflake_private_key_path: str | None = None
    snowflake_private_key_passphrase: SecretStr | None = None
    snowflake_role: str | None = None
    snowflake_warehouse: str | None = None
    snowflake_database: str | None = None
    snowflake_schema: str | None = None
    snowflake_credentials_block: str | None = None
    snowflake_state_schema: str = "ITERABLE_SYNC_STATE"
    # Only for a Snowflake-compatible endpoint other than <account>.snowflakecomputing.com (fakesnow).
    snowflake_host: str | None = None
    snowflake_port: int | None = None
    snowflake_protocol: str | None = None
    # Folder of sync definitions (*.yaml); None means the shipped iterable_recipes/sync/syncs.
    sync_definitions_dir: str | None = None
    # Rows sent to Iterable per sync batch still waiting for an answer (pipelining over the rate limit).
    sync_batches_in_flight: int = 4

    # App database (inbox, Marketo cursor, opt-out audit)
    recipes_database_url: str = "sqlite:///.recipes/recipes.db"
    inbox_lease_seconds: int = 300
    inbox_max_attempts: int = 20
    inbox_payload_retention_days: int = 30
    # SQLite only. FULL: each commit is fsynced before the 2xx. NORMAL (WAL): survives a killed process,
    # not a power cut, and intake is much faster on slow disks.
    inbox_sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"

    # Drains
    drain_batch_size: int = 1000
    drain_batches_in_flight: int = 4
    # Iterable applies profile updates asynchronously; an event for a not-yet-visible person waits this long.
    event_not_found_retry_seconds: float = 60.0

    # Webhooks
    customersdot_webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    webhook_max_body_bytes: int = 64 * 1024
    customersdot_drain_deployment: str = "customersdot-events/customersdot-drain"
    optout_drain_deployment: str = "marketo-opt-outs/marketo-opt-out-drain"
    nudge_window_seconds: float = 1.0

    # Rate limiter shared by every sending process
    limiter_backend: Literal["memory", "sqlite", "redis", "postgres"] = "sqlite"
    limiter_sqlite_path: str = ".recipes/limiter.sqlite"
    limiter_redis_url: str = "redis://127.0.0.1:6379/0"
    limiter_postgres_url: str | None = None
    limiter_key_prefix: str = "recipes"

    # Operations: the Prefect notification block automations alert through ("slack-webhook/ops"), and
    # the work pool `recipes setup` creates (prefect.yaml names the same pool).
    recipes_alert_block: str | None = None
    recipes_work_pool: str = "recipes-process"

    # Consent policy file; None means the shipped iterable_recipes/optouts/consent.yaml.
    consent_policy_path: str | None = None

    @field_validator("customersdot_webhook_secrets", "marketo_webhook_secret", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        """Accept a comma-separated list, so rotation is "new,old" in one variable."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def iterable_url(self) -> str:
        """The explicit base URL when set, else the region's data center."""
        return (self.iterable_base_url or BASE_URLS[self.iterable_region]).rstrip("/")


def load_settings() -> Settings:
    """The settings as the environment (and .env) give them now: read anew on every call."""
    return Settings()
