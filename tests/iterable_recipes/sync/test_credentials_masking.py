"""Connection params from settings or a prefect-snowflake block (key-pair included), and email masking."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from iterable_recipes.masking import mask_email, mask_identity
from iterable_recipes.masking import mask_emails as mask_text
from iterable_recipes.settings import Settings
from iterable_recipes.sync.credentials import connection_params, params_from_settings


def pem(tmp_path: Path, passphrase: bytes | None) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    enc = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    path = tmp_path / "key.p8"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
    return path


def test_settings_with_password() -> None:
    settings = Settings(snowflake_account="acct", snowflake_user="u", snowflake_password="pw",
                        snowflake_database="DB", snowflake_warehouse="WH")  # fmt: skip
    params = params_from_settings(settings)
    assert params == {"account": "acct", "user": "u", "password": "pw", "database": "DB", "warehouse": "WH"}


def test_settings_with_encrypted_key_pair(tmp_path: Path) -> None:
    settings = Settings(snowflake_account="acct", snowflake_user="u",
                        snowflake_private_key_path=str(pem(tmp_path, b"secret")),
                        snowflake_private_key_passphrase="secret")  # fmt: skip
    params = params_from_settings(settings)
    assert "password" not in params and params["private_key"][:1] == b"\x30"  # DER sequence


def test_missing_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="SNOWFLAKE_ACCOUNT"):
        params_from_settings(Settings(snowflake_account=None, snowflake_user=None))


def test_block_wins_and_resolves_its_key(tmp_path: Path) -> None:
    from prefect_snowflake import SnowflakeCredentials

    block = SnowflakeCredentials(account="blk", user="svc", private_key_path=pem(tmp_path, None), role="R")
    settings = Settings(snowflake_account="other", snowflake_user="x", snowflake_password="pw",
                        snowflake_database="DB", snowflake_schema="S")  # fmt: skip
    params = connection_params(block, settings)
    assert (params["account"], params["user"], params["role"], params["database"]) == (
        "blk",
        "svc",
        "R",
        "DB",
    )
    assert isinstance(params["private_key"], bytes) and "password" not in params
    assert "private_key_path" not in params


def test_masking() -> None:
    assert mask_email("alice@example.com") == "a***@e***.com"
    assert (
        mask_text("No record for email: bob%40mail.example.org here")
        == "No record for email: b***%40m***.org here"
    )
    assert mask_identity("12345", "userId") == "12***"
    assert mask_email("not an email") == "(not an address)"
