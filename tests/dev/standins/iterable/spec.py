"""Validate answers against Iterable's own Swagger 2.0 definitions (the contract)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jsonschema

from tests.conftest import reference_file


@cache
def _spec() -> dict[str, Any]:
    return json.loads(reference_file("iterable", "api-docs.json").read_text(encoding="utf-8"))


def assert_matches(definition: str, body: Any) -> None:
    """Validate ``body`` against a definition of Iterable's Swagger 2.0 spec (draft 4 schemas)."""
    schema = {"$ref": f"#/definitions/{definition}", "definitions": _spec()["definitions"]}
    jsonschema.Draft4Validator(schema).validate(body)
