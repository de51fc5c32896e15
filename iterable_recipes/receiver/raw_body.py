"""Whether a validated body can be stored as it came: read back, it must say what the contract read."""

from __future__ import annotations

import re

from pydantic import BaseModel

# One JSON string, escapes included (the unrolled form: no backtracking per character).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def key_count(body: bytes) -> int:
    """How many object keys the JSON text ``body`` holds, repeats included: outside its strings, valid
    JSON has a colon only after a key."""
    spaced = b'" ' in body or b'"\n' in body or b'"\t' in body or b'"\r' in body
    if not spaced and b"\\" not in body:
        # No escapes, so every quote bounds a string; no quote followed by whitespace, so each key's colon
        # follows its closing quote: each '":' is one key (compact bodies, the common case, read once).
        return body.count(b'":')
    return _STRING.sub(b"", body).count(b":")


def fields_given(model: BaseModel) -> int:
    """How many keys the input of ``model`` held, through its nested models (a repeated key counts once)."""
    given = model.__pydantic_fields_set__
    count = len(given)
    values = model.__dict__
    # The nested models given (a default one held no key of the input).
    for name in given:
        value = values.get(name)
        if isinstance(value, BaseModel):
            count += fields_given(value)
    return count


def storable_as_sent(body: bytes, model: BaseModel) -> bool:
    """True when ``body`` (valid JSON that validated as ``model``) holds each of its keys once, each a
    field of the model: read back, by a drain or by SQL's JSON paths, it then says what the model read.

    A repeated key is where they differ: the model and Python's json take its last value, SQLite's
    json_extract its first. Any other object (a dict-typed field, extras) makes this False too: safe,
    the caller then stores the model's own form.
    """
    return key_count(body) == fields_given(model)
