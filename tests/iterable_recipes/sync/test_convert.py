"""Warehouse values to Iterable types: the per-column fast converters agree with ``convert``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from iterable_recipes.sync.convert import convert, converter, to_iterable_date
from iterable_recipes.sync.definitions import FieldType

SAMPLES: dict[FieldType, list[Any]] = {
    FieldType.STRING: [
        "x",
        "",
        True,
        False,
        7,
        2.5,
        Decimal("10.00"),
        Decimal("1.50"),
        datetime(2025, 1, 2, 3, 4, 5),
    ],
    FieldType.NUMBER: [0, -3, 2.5, True, False, Decimal("4"), Decimal("4.25"), "12", "1.5"],
    FieldType.BOOLEAN: [True, False, 0, 1, Decimal("0"), "true", " FALSE "],
    FieldType.DATE: [
        datetime(2025, 1, 2, 3, 4, 5, 999_999),
        datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
        date(2024, 2, 29),
        "2025-01-02T03:04:05",
        "2025-01-02T03:04:05+01:00",
    ],
    FieldType.OBJECT: ['{"a": [1, 2]}', "[]", "null", {"already": "parsed"}],
}


@pytest.mark.parametrize("field_type", list(FieldType))
def test_fast_converters_agree_with_convert(field_type: FieldType) -> None:
    convert_value = converter(field_type)
    for value in SAMPLES[field_type]:
        assert convert_value(value) == convert(value, field_type), value


def test_dates_are_utc_in_iterable_format() -> None:
    assert to_iterable_date(datetime(2025, 1, 2, 3, 4, 5, 678)) == "2025-01-02 03:04:05 +00:00"
    aware = datetime(2025, 1, 2, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert to_iterable_date(aware) == "2025-01-01 23:00:00 +00:00"
    assert to_iterable_date(datetime(2025, 1, 2, tzinfo=UTC)) == "2025-01-02 00:00:00 +00:00"
    assert to_iterable_date(date(2024, 2, 29)) == "2024-02-29 00:00:00 +00:00"
    assert to_iterable_date(datetime(999, 1, 2)) == "0999-01-02 00:00:00 +00:00"  # four-digit year
    with pytest.raises(TypeError):
        to_iterable_date(5)


def test_bad_values_still_raise() -> None:
    with pytest.raises(TypeError):
        converter(FieldType.BOOLEAN)("maybe")
    with pytest.raises(TypeError):
        converter(FieldType.NUMBER)([1])
