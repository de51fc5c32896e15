"""Open a Snowflake connection with snowflake-connector-python (fakesnow patches the same call in tests)."""

from __future__ import annotations

from typing import Any

import snowflake.connector


def connect(**params: Any) -> Any:
    """A new connection from ``params`` (see warehouse.credentials); the caller closes it.

    Looked up on the module at call time, so ``fakesnow.patch()`` redirects it in tests.
    """
    params.setdefault("application", "iterable_recipes")
    return snowflake.connector.connect(**params)
