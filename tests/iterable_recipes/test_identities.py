"""The one email normalisation: every Unicode whitespace (and the invisible padding) trimmed, lower-cased."""

from __future__ import annotations

import sys

import pytest

from iterable_recipes.identities import INVISIBLE, PY_WHITESPACE, normalise_email


def test_the_trimmed_set_is_exactly_pythons_whitespace_plus_the_invisible_four() -> None:
    every_space = {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    assert set(PY_WHITESPACE) == every_space
    # Not whitespace to Python (so str.strip() keeps them), yet they arrive in pasted addresses.
    assert not any(char.isspace() for char in INVISIBLE)
    assert "\u200b" in INVISIBLE


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (" x@example.com", "x@example.com"),
        ("x@example.com\t", "x@example.com"),
        ("\u00a0X@Example.COM\u00a0", "x@example.com"),
        ("\u200bx@example.com\ufeff", "x@example.com"),
        ("\u3000\u2028x@example.com\r\n", "x@example.com"),
    ],
)
def test_padding_goes_and_case_folds(raw: str, clean: str) -> None:
    assert normalise_email(raw) == clean


def test_what_is_inside_the_address_is_left_alone() -> None:
    # Not an address: the contracts refuse it rather than the normalisation guessing.
    assert normalise_email("a b@example.com") == "a b@example.com"
    assert normalise_email("   ") == ""
