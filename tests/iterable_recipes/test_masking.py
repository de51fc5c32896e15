"""The masker's keyed tag: masked addresses stay apart, one person keeps one tag, the key never shows."""

from __future__ import annotations

import hashlib
import logging
import re

import pytest

from iterable_recipes import masking
from iterable_recipes.masking import email_tag, install_masking, mask_email, mask_emails, mask_identity

KEY = "a-masking-key-for-tests-only-0123456789"
TAG = re.compile(r"#([0-9a-f]{8,})\b")


def _tag(text: str) -> str:
    found = TAG.findall(text)
    assert len(found) == 1, text
    return str(found[0])


def test_two_addresses_mask_to_different_tagged_forms() -> None:
    masking.set_tag_key(KEY)
    # The same masked shape (d***@e***.com) for both: only the tag tells them apart.
    first, second = mask_email("dana@example.com"), mask_email("dora@example.com")
    assert first.startswith("d***@e***.com #") and second.startswith("d***@e***.com #")
    assert first != second
    assert re.fullmatch(r"d\*\*\*@e\*\*\*\.com #[0-9a-f]{8}", first)


def test_the_same_address_in_any_case_or_padding_gets_the_same_tag() -> None:
    masking.set_tag_key(KEY)
    tag = _tag(mask_email("dana@example.com"))
    assert _tag(mask_email("  Dana@EXAMPLE.com\u00a0")) == tag
    assert _tag(mask_emails("refused: DANA@example.com has a field of another type")) == tag
    assert _tag(mask_emails("GET /api/users/getByEmail?email=Dana%40Example.com")) == tag
    # The sentence's full stop is not the address's.
    assert mask_emails("sent to dana@example.com.") == f"sent to d***@e***.com #{tag}."
    assert email_tag("\u200bdana@example.com ") == tag
    assert _tag(mask_identity("dana@example.com", "email")) == tag


def test_without_a_key_the_form_is_as_before() -> None:
    assert mask_email("dana@example.com") == "d***@e***.com"
    assert mask_emails("a dana@example.com b dora%40example.org") == "a d***@e***.com b d***%40e***.org"
    assert email_tag("dana@example.com") is None


def test_the_tag_is_keyed_and_the_key_never_appears() -> None:
    masking.set_tag_key(KEY)
    tagged = mask_emails(f"dana@example.com and {KEY[:12]}")
    tag = _tag(tagged)
    assert KEY not in tagged and KEY not in mask_email("dana@example.com")
    # Not a plain hash anyone could compute from a guessed address: another key gives another tag.
    assert tag != hashlib.sha256(b"dana@example.com").hexdigest()[: len(tag)]
    masking.set_tag_key(KEY + "-rotated")
    assert _tag(mask_email("dana@example.com")) != tag


def test_a_tagged_form_is_masked_again_unchanged() -> None:
    masking.set_tag_key(KEY)
    once = mask_emails("error for dana@example.com: refused")
    assert mask_emails(once) == once


def test_log_records_carry_the_tag_and_neither_the_address_nor_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    install_masking(tag_key=KEY)
    with caplog.at_level(logging.INFO):
        logging.getLogger("test.masking").info("opted out %s (key %s)", "dana@example.com", "***")
    message = caplog.records[-1].getMessage()
    assert message.startswith("opted out d***@e***.com #") and _tag(message) == email_tag("dana@example.com")
    assert "dana@" not in message and KEY not in message
