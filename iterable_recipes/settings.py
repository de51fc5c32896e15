"""Every setting of the project, from the environment (and a .env file), through pydantic-settings.

Variable names are the field names in upper case (ITERABLE_API_KEY, RECIPES_DATABASE_URL, ...).
When a ``*_credentials_block`` name is set, that Prefect block is loaded instead and wins. Each entry
point reads the settings once and passes them on (iterable_recipes.resources); nothing caches them.
An empty value counts as unset (a .env or compose file often leaves ``NAME=``). Bad values raise
``SettingsError``: one line per bad setting, named by its variable, never quoting a secret.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from iterable_recipes.clients.iterable import (
    BASE_URLS,
    DEFAULT_LIST_WRITES_PER_SECOND,
    DEFAULT_RATE_MARGIN_SECONDS,
    DEFAULT_RATE_SHARE,
)

WEBHOOK_SECRET_PREFIX = "whsec_"
# A guessable masking key would let anyone confirm a guessed address from its tag.
MIN_MASKING_KEY_CHARS = 16
MASKING_KEY_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"

Recipe = Literal["customersdot", "optouts", "sync"]
RECIPES: tuple[Recipe, ...] = ("customersdot", "optouts", "sync")
Part = Literal["iterable", "marketo", "snowflake", "customersdot_webhook", "marketo_webhook"]

# What each part needs: groups of variables (any one of a group will do), and the Prefect block
# setting that replaces them all. The one statement of which setting a part cannot do without.
PART_SETTINGS: dict[Part, tuple[tuple[tuple[str, ...], ...], str | None]] = {
    "iterable": ((("ITERABLE_API_KEY",),), "ITERABLE_CREDENTIALS_BLOCK"),
    "marketo": (
        (("MARKETO_BASE_URL",), ("MARKETO_CLIENT_ID",), ("MARKETO_CLIENT_SECRET",)),
        "MARKETO_CREDENTIALS_BLOCK",
    ),
    "snowflake": (
        (("SNOWFLAKE_ACCOUNT",), ("SNOWFLAKE_USER",), ("SNOWFLAKE_PASSWORD", "SNOWFLAKE_PRIVATE_KEY_PATH")),
        "SNOWFLAKE_CREDENTIALS_BLOCK",
    ),
    "customersdot_webhook": ((("CUSTOMERSDOT_WEBHOOK_SECRETS",),), None),
    "marketo_webhook": ((("MARKETO_WEBHOOK_SECRET",),), None),
}
# The parts each recipe uses (the receiver's webhook secrets included: serve runs the receiver).
RECIPE_PARTS: dict[Recipe, tuple[Part, ...]] = {
    "customersdot": ("iterable", "customersdot_webhook"),
    "optouts": ("iterable", "marketo", "marketo_webhook"),
    "sync": ("iterable", "snowflake"),
}


class SettingsError(ValueError):
    """Some settings are invalid; the message has one line per bad setting: ``VARIABLE: problem``."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{name}: {problem}" for name, problem in sorted(problems.items())))

    def report(self) -> str:
        """What an entry point tells the operator: a heading, then the bad settings one line each."""
        return f"Invalid settings (from the environment and .env):\n{self}"


def describe_settings_errors(err: ValidationError) -> dict[str, str]:
    """The problems of ``err`` by variable name, several problems of one variable joined on its line."""
    problems: dict[str, list[str]] = {}
    for problem in err.errors(include_url=False, include_input=False):
        name = str(problem["loc"][0]).upper() if problem["loc"] else "SETTINGS"
        message = str(problem["msg"]).removeprefix("Value error, ")
        problems.setdefault(name, []).append(message)
    return {name: "; ".join(messages) for name, messages in problems.items()}


class Settings(BaseSettings):
    """The project's configuration; see README "Configuration" for each variable."""

    model_config = SettingsConfigDict(
        env_file=".env",
        extra="ignore",
        env_nested_delimiter=None,
        env_ignore_empty=True,
        # Error texts reach logs and terminals: they must not quote a secret's value.
        hide_input_in_errors=True,
    )

    # Iterable
    iterable_api_key: SecretStr | None = None
    iterable_region: Literal["us", "eu"] = "us"
    # The project's type (Iterable's "Project Types and Unique Identifiers"): which identifier is unique,
    # so which writes can create people (update-only syncs check existence where they could).
    iterable_project_type: Literal["email", "userId", "hybrid"] = "email"
    iterable_base_url: str | None = None
    iterable_credentials_block: str | None = None
    iterable_timeout_seconds: float = 30.0
    iterable_limits_enabled: bool = True
    # The share of each of Iterable's limits our senders use together (other integrations of the
    # project use the rest), and the fixed margin each limit's window is widened by.
    iterable_rate_share: float = Field(default=DEFAULT_RATE_SHARE, gt=0, le=1)
    iterable_rate_margin_seconds: float = Field(default=DEFAULT_RATE_MARGIN_SECONDS, ge=0, le=1)
    # Removed (a percentage below every limit): refused with what to set instead.
    iterable_rate_headroom: float | None = None
    # lists/subscribe and lists/unsubscribe state no limit in the spec: each is paced at this rate.
    iterable_list_writes_per_second: float = Field(default=DEFAULT_LIST_WRITES_PER_SECOND, gt=0, le=100)
    # Whether Iterable enabled the additive /api/subscriptions endpoints for the project (they need its
    # enablement): opt-outs then DELETE the channel instead of writing bulkUpdateSubscriptions.
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
    # Days the change log (every row sent and Iterable's answer) is kept in the state schema; 0: only
    # while the run lasts (its per-record table still reads it).
    sync_change_log_days: float = Field(14.0, ge=0)
    # Update mode by email checks the staged people not seen in Iterable recently before sending: up to
    # this many with getByEmail (100/s: 5,000 take 50 s), more through one user export (4 a minute,
    # everyone in one request), loaded into the state schema (sync/existence.py).
    sync_export_threshold: int = Field(5000, ge=0)
    # Days a person seen in Iterable is trusted to exist; after that their next change is checked again,
    # so a person deleted in Iterable is not re-created by an update-only sync.
    sync_existence_refresh_days: float = Field(7.0, gt=0)

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
    # How often the receiver asks the inbox whether a drain has work due that no run will take (a lost
    # nudge, a retry whose backoff ended); 0 switches the watcher off (the drains' schedules remain).
    due_watch_seconds: float = Field(default=30.0, ge=0)

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

    # Consent ledger: a suppressed person Iterable does not know yet is looked up again (with backoff)
    # for this many days; a custom event of a suppressed person waits at most this long for the opt-out.
    consent_recheck_days: float = 30.0
    consent_hold_seconds: float = 3600.0
    # After our own write of a suppressed person, their opt-out is first tried this many seconds later
    # (Iterable shows a write only once applied) and again as often while Iterable does not show them.
    consent_written_retry_seconds: float = Field(default=5.0, gt=0)
    # The consent reconciliation looks suppressed people up with getByEmail up to this many, and through
    # one user export (4 a minute) above it, so a large ledger leaves getByEmail's 100/s to the drains.
    consent_export_threshold: int = Field(default=5000, ge=0)

    # The key of the tag beside each masked address (HMAC-SHA256); required in production (`recipes
    # check`), generated into .recipes/masking-key when serve runs the embedded Prefect server.
    recipes_masking_key: SecretStr | None = None

    # Which recipes `recipes serve` runs (comma-separated); their settings are checked at its start.
    recipes_serve_recipes: Annotated[list[Recipe], NoDecode] = Field(default_factory=lambda: list(RECIPES))
    # A live check that passed (API key, consent policy, field types, Marketo login) is trusted this
    # long by the flows that start with it; `recipes check` always checks anew.
    recipes_check_cache_seconds: float = 3600.0
    # How often a long run's progress artifacts are published at most (each is a request or two).
    recipes_progress_seconds: float = Field(default=5.0, gt=0)

    @field_validator("customersdot_webhook_secrets", "marketo_webhook_secret", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        """Accept a comma-separated list, so rotation is "new,old" in one variable."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("recipes_serve_recipes", mode="before")
    @classmethod
    def _split_recipes(cls, value: object) -> object:
        """customersdot,optouts,sync in any case and order; "all" means every one."""
        if isinstance(value, str):
            names = [part.strip().lower() for part in value.split(",") if part.strip()]
            return list(RECIPES) if names == ["all"] else names
        return value

    @field_validator("customersdot_webhook_secrets")
    @classmethod
    def _standard_webhooks_secrets(cls, value: list[SecretStr]) -> list[SecretStr]:
        """Each secret is "whsec_" + base64, as Standard Webhooks senders show it: refused here, at start,
        rather than by a 401 on every webhook (no prefix) or a crash (bad base64)."""
        problems = []
        for number, secret in enumerate(value, start=1):
            raw = secret.get_secret_value()
            if not raw.startswith(WEBHOOK_SECRET_PREFIX):
                problems.append(f"entry {number} lacks the {WEBHOOK_SECRET_PREFIX} prefix")
                continue
            try:
                key = base64.b64decode(raw.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if not key:
                problems.append(f"entry {number} is not valid base64 after {WEBHOOK_SECRET_PREFIX}")
        if problems:
            raise ValueError(f"{'; '.join(problems)} (each secret is {WEBHOOK_SECRET_PREFIX} + base64)")
        return value

    @field_validator("recipes_masking_key")
    @classmethod
    def _long_masking_key(cls, value: SecretStr | None) -> SecretStr | None:
        """At least MIN_MASKING_KEY_CHARS characters: a short key could be guessed, and with it the tags."""
        if value is not None and len(value.get_secret_value()) < MIN_MASKING_KEY_CHARS:
            shorter = f"shorter than {MIN_MASKING_KEY_CHARS} characters"
            raise ValueError(f"{shorter}; make one with {MASKING_KEY_HINT}")
        return value

    @field_validator("iterable_rate_headroom")
    @classmethod
    def _headroom_removed(cls, value: float | None) -> float | None:
        """ITERABLE_RATE_HEADROOM was replaced: say what keeps the old pace, rather than ignore it."""
        if value is not None:
            same = 1 / (1 + value) if value > -1 else 1.0
            raise ValueError(
                "removed: limits are now paced at ITERABLE_RATE_SHARE of each (default 1.0) with a fixed "
                f"ITERABLE_RATE_MARGIN_SECONDS; unset it, or set ITERABLE_RATE_SHARE={min(1.0, same):.3f} "
                "to keep this pace"
            )
        return value

    @field_validator("iterable_region", mode="before")
    @classmethod
    def _region_in_any_case(cls, value: object) -> object:
        """US, us, EU, eu: the data center's name in any case."""
        if not isinstance(value, str):
            return value
        region = value.strip().lower()
        if region not in BASE_URLS:
            allowed = ", ".join(BASE_URLS)
            raise ValueError(f"{value!r} is not an Iterable region; allowed: {allowed} (any case)")
        return region

    def missing(self, part: Part) -> list[str]:
        """The variables ``part`` needs and does not have ("A or B" where either will do); none when
        its credentials block is named (the block is checked when loaded)."""
        groups, block = PART_SETTINGS[part]
        if block and getattr(self, block.lower()):
            return []
        return [" or ".join(group) for group in groups if not any(getattr(self, n.lower()) for n in group)]

    @property
    def masking_key(self) -> str | None:
        """RECIPES_MASKING_KEY's value, for ``install_masking(tag_key=...)``; None when unset."""
        return self.recipes_masking_key.get_secret_value() if self.recipes_masking_key else None

    @property
    def iterable_url(self) -> str:
        """The explicit base URL when set, else the region's data center."""
        return (self.iterable_base_url or BASE_URLS[self.iterable_region]).rstrip("/")


def load_settings() -> Settings:
    """The settings as the environment (and .env) give them now: read anew on every call; raises
    SettingsError (one line per bad setting) when any is invalid."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe_settings_errors(exc)) from None
