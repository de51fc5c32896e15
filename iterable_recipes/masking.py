"""The project's one masker: email addresses, raw and URL-encoded, never leave a process in the clear.

Every entry point (the `recipes` command, `recipes serve`, the receiver, each flow run) calls
``install_masking(tag_key=...)`` with RECIPES_MASKING_KEY; from then on every log record of the process
carries a masked message. Error texts, artifact cells and audit details go through ``mask_emails``
before they are written. With a key, each masked address carries a keyed tag, ``d***@e***.com
#3f9a07c2``: the first 8 hex characters of HMAC-SHA256(key, the normalised address), the same for one
person everywhere and worthless without the key. Without one (tests, tools) the form is untagged.
The vendor clients import this module; it imports nothing of the project's but
``iterable_recipes.identities`` (the one email normalisation, so the tag follows the person).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from typing import Any
from urllib.parse import unquote

from iterable_recipes.identities import normalise_email

# An address-like token: something, "@" or its URL-encoded "%40", something; no spaces, quotes, brackets
# or the separators of URLs and lists around it. Broad on purpose (Unicode, any TLD, odd local parts):
# masking a little too much is harmless, leaking an address is not.
_STOP = r"\s\"'<>,;:/?=&()\[\]{}|\\*"
_EMAIL = re.compile(rf"[^{_STOP}@]+(?:@|%40)[^{_STOP}@]+", re.IGNORECASE)
_AT = re.compile(r"@|%40", re.IGNORECASE)
_TLD = re.compile(r"\.([^\W\d_]{2,})$")
# 8 hex characters, 32 bits: one person's tag is shared by any given other person with odds 1 in 2**32
# (a million other people: about 1 in 4,300 that someone shares it). A tag points the way; `recipes
# inbox find` matches the address itself.
TAG_HEX_CHARS = 8

# Set by each entry point from its settings; process-wide, as the logging record factory is.
_tag_key: bytes | None = None


def set_tag_key(key: str | None) -> None:
    """Tag every masked address with HMAC-SHA256 under ``key`` from now on; None masks untagged."""
    global _tag_key
    _tag_key = key.encode() if key else None


def email_tag(email: str) -> str | None:
    """The keyed tag of ``email`` (any case or padding, raw or URL-encoded), or None without a key."""
    if _tag_key is None:
        return None
    address = normalise_email(unquote(email) if "%40" in email.lower() else email)
    return hmac.new(_tag_key, address.encode(), hashlib.sha256).hexdigest()[:TAG_HEX_CHARS]


def _masked(match: re.Match[str]) -> str:
    token = match.group(0)
    # A full stop right after an address ends the sentence, not the address: kept after the masked form.
    stop = token[len(token.rstrip(".")) :]
    token = token[: len(token) - len(stop)]
    at = _AT.search(token)
    assert at is not None  # the pattern holds one
    local, domain = token[: at.start()], token[at.end() :]
    tld = _TLD.search(domain)
    masked = f"{local[:1]}***{at.group(0)}{domain[:1]}***{'.' + tld.group(1) if tld else ''}"
    tag = email_tag(token)
    return f"{masked} #{tag}{stop}" if tag else masked + stop


def mask_emails(text: str) -> str:
    """``text`` with every email address, raw or URL-encoded, replaced by a form like ``a***@e***.com``
    (``a***@e***.com #3f9a07c2`` with a tag key)."""
    if "@" not in text and "%40" not in text.lower():
        return text
    return _EMAIL.sub(_masked, text)


NOT_AN_ADDRESS = "(not an address)"


def mask_email(email: str) -> str:
    """The masked form of one address, for tables and artifacts; anything not shaped like one is
    ``(not an address)`` (not ``***``: the Prefect UI renders table cells as markdown, a rule)."""
    masked = mask_emails(email.strip())
    return masked if masked != email.strip() else NOT_AN_ADDRESS


def mask_identity(identity: str, kind: str) -> str:
    """An identity for display: emails as ``a***@e***.com``, user ids keep their first two characters."""
    return mask_email(identity) if kind == "email" else identity[:2] + "***"


_installed = False


def install_masking(tag_key: str | None = None) -> None:
    """Make every log record of this process carry a masked message, tagged under ``tag_key`` when given
    (idempotent; the key is set anew by each call).

    A record factory rather than a handler filter, so records reach every handler already masked:
    the console, files, and Prefect's API log handler alike.
    """
    global _installed
    set_tag_key(tag_key)
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed format string is the caller's bug; leave it for logging to report
            return record
        masked = mask_emails(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
