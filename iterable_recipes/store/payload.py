"""How the inbox encodes a payload: once, with orjson, or not at all when the caller hands JSON text over."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class EncodedJSON:
    """A payload already encoded as one JSON object (a validated request body), stored as is.

    The caller vouches that reading ``text`` back gives the payload the drains expect.
    """

    text: str


def encode_payload(payload: Mapping[str, Any] | EncodedJSON) -> str:
    """The JSON text stored for ``payload``: an EncodedJSON's own text, else the mapping encoded once."""
    if isinstance(payload, EncodedJSON):
        return payload.text
    value = payload if isinstance(payload, dict) else dict(payload)
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        # What orjson refuses and the json module takes (integers past 64 bits, non-string keys).
        return json.dumps(value)
