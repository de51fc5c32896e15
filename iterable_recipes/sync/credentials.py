"""Build Snowflake connection parameters from a prefect-snowflake credentials block or SNOWFLAKE_* settings.

No Prefect import here: the lead's task loads ``SnowflakeCredentials`` and passes the block object in,
so this module (and the warehouse package) stays importable without a Prefect server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretBytes, SecretStr

from iterable_recipes.settings import Settings, load_settings

# Block fields that are not connector arguments.
_NOT_CONNECT_ARGS = {"block_type_slug", "private_key", "private_key_path", "private_key_passphrase"}


def _secret(value: Any) -> Any:
    if isinstance(value, SecretStr | SecretBytes):
        return value.get_secret_value()
    return value


def private_key_der(pem: bytes, passphrase: str | bytes | None = None) -> bytes:
    """A PEM private key (optionally encrypted) as the DER/PKCS8 bytes the connector's key-pair auth takes."""
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        load_pem_private_key,
    )

    password = passphrase.encode() if isinstance(passphrase, str) else passphrase
    key = load_pem_private_key(pem, password=password or None)
    return key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())


def _location(settings: Settings) -> dict[str, Any]:
    pairs = {
        "database": settings.snowflake_database,
        "schema": settings.snowflake_schema,
        "warehouse": settings.snowflake_warehouse,
        "role": settings.snowflake_role,
        "host": settings.snowflake_host,
        "port": settings.snowflake_port,
        "protocol": settings.snowflake_protocol,
    }
    return {k: v for k, v in pairs.items() if v}


def params_from_block(block: Any, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Connection params from a loaded prefect-snowflake ``SnowflakeCredentials`` block.

    Mirrors the block's own ``get_client`` (secrets unwrapped, key-pair resolved to DER) without
    connecting. Database, schema and warehouse come from settings (the credentials block has none)
    unless given in ``overrides``.
    """
    settings = settings or load_settings()
    dumped = block.model_dump(exclude_unset=True)
    params: dict[str, Any] = {k: _secret(v) for k, v in dumped.items() if k not in _NOT_CONNECT_ARGS}
    params = _location(settings) | params
    der = block.resolve_private_key()
    if der is not None:
        params["private_key"] = der
        params.pop("password", None)
    return params | overrides


def params_from_settings(settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Connection params from SNOWFLAKE_* settings; a private key path means key-pair authentication."""
    settings = settings or load_settings()
    missing = settings.missing("snowflake")
    if missing or not settings.snowflake_account or not settings.snowflake_user:
        shown = ", ".join(missing)
        raise ValueError(f"Snowflake settings missing: {shown} (or name SNOWFLAKE_CREDENTIALS_BLOCK)")
    params: dict[str, Any] = {"account": settings.snowflake_account, "user": settings.snowflake_user}
    if settings.snowflake_private_key_path:
        pem = Path(settings.snowflake_private_key_path).expanduser().read_bytes()
        passphrase = _secret(settings.snowflake_private_key_passphrase)
        params["private_key"] = private_key_der(pem, passphrase)
    else:
        assert settings.snowflake_password is not None  # missing() holds one of the two
        params["password"] = settings.snowflake_password.get_secret_value()
    return params | _location(settings) | overrides


def connection_params(
    block: Any | None = None, settings: Settings | None = None, **overrides: Any
) -> dict[str, Any]:
    """The block's params when a block is given (it wins), else the settings'."""
    if block is not None:
        return params_from_block(block, settings, **overrides)
    return params_from_settings(settings, **overrides)
