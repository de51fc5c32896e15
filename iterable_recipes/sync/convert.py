"""Convert warehouse values to the Iterable type a field is mapped as (Iterable fixes a field's type)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson

from iterable_recipes.sync.definitions import FieldType

ITERABLE_DATE_FORMAT = "%Y-%m-%d %H:%M:%S +00:00"  # what to_iterable_date writes, as a strftime format


def to_iterable_date(value: Any) -> str:
    """A date/datetime as Iterable's ``YYYY-MM-DD HH:MM:SS +00:00``; naive datetimes are taken as UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
        # isoformat is several times faster than strftime and pads the year to four digits
        return moment.isoformat(" ", "seconds") + " +00:00"
    if isinstance(value, date):
        return value.isoformat() + " 00:00:00 +00:00"
    raise TypeError(f"cannot send a {type(value).__name__} as a date")


def _number(value: Any) -> int | float:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, str):
        as_dec = Decimal(value)
        return int(as_dec) if as_dec == as_dec.to_integral_value() else float(as_dec)
    raise TypeError(f"cannot send a {type(value).__name__} as a number")


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    raise TypeError(f"cannot send {type(value).__name__} value as a boolean")


def _string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return to_iterable_date(value)
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral_value() else str(value)
    return str(value)


def _loads(text: str) -> Any:
    """JSON text as Python values: orjson (a few times faster), else the standard library for what
    orjson refuses (integers beyond 64 bits), so a value that fails still fails with its own error."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _object(value: Any) -> Any:
    # The connector returns VARIANT/OBJECT/ARRAY values as JSON text.
    return _loads(value) if isinstance(value, str) else value


_CONVERTERS = {
    FieldType.STRING: _string,
    FieldType.NUMBER: _number,
    FieldType.BOOLEAN: _boolean,
    FieldType.DATE: to_iterable_date,
    FieldType.OBJECT: _object,
}


def convert(value: Any, field_type: FieldType) -> Any:
    """``value`` as the JSON value Iterable should receive for a field of ``field_type`` (None stays None)."""
    if value is None:
        return None
    return _CONVERTERS[field_type](value)


def _fast_string(value: Any) -> Any:
    return value if type(value) is str else _string(value)


def _fast_number(value: Any) -> Any:
    kind = type(value)
    return value if kind is int or kind is float else _number(value)


def _fast_boolean(value: Any) -> Any:
    return value if type(value) is bool else _boolean(value)


def _fast_date(value: Any) -> str:
    if type(value) is datetime and value.tzinfo is None:  # what the connector returns for TIMESTAMP_NTZ
        return value.isoformat(" ", "seconds") + " +00:00"
    return to_iterable_date(value)


_FAST = {
    FieldType.STRING: _fast_string,
    FieldType.NUMBER: _fast_number,
    FieldType.BOOLEAN: _fast_boolean,
    FieldType.DATE: _fast_date,
    FieldType.OBJECT: _object,
}


def converter(field_type: FieldType) -> Callable[[Any], Any]:
    """The converter ``convert`` applies for ``field_type``, for values known not to be None.

    Looked up once per column rather than once per value; the common Python type of each Iterable
    type is passed through without the general checks (same results as ``convert``).
    """
    return _FAST[field_type]
