"""Marketo-like paging tokens for the stand-in: opaque strings that encode a position in the activity log."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

# A position is (activity date, sequence number); a token from a date alone sits before every activity
# of that instant, so "activities after the token" means "at or after the date".
Position = tuple[datetime, int]
_PREFIX = "mkto1"


def encode(position: Position) -> str:
    """An opaque, URL-safe token for ``position`` (base32, like Marketo's own tokens)."""
    moment, seq = position
    raw = f"{_PREFIX}|{moment.astimezone(UTC).isoformat()}|{seq}".encode()
    return base64.b32encode(raw).decode().rstrip("=")


def decode(token: str) -> Position:
    """The position a token encodes; ``ValueError`` when it is not one of ours."""
    padded = token + "=" * (-len(token) % 8)
    try:
        prefix, moment, seq = base64.b32decode(padded.upper()).decode().split("|")
        if prefix != _PREFIX:
            raise ValueError("unknown token version")
        return datetime.fromisoformat(moment), int(seq)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("invalid paging token") from exc


def from_datetime(since: datetime) -> str:
    """The token of ``pagingtoken.json``: before every activity at or after ``since``."""
    return encode((since, -1))
