"""The project's one masker: email addresses, raw and URL-encoded, never leave a process in the clear.

Every entry point (the `recipes` command, `recipes serve`, the receiver, each flow run) calls
``install_masking()`` once; from then on every log record of the process carries a masked message.
Error texts, artifact cells and audit details go through ``mask_emails`` before they are written.
The vendor clients import this module and nothing else of the project's.
"""

from __future__ import annotations

import logging
import re
from typing import Any

# An address-like token: something, "@" or its URL-encoded "%40", something; no spaces, quotes, brackets
# or the separators of URLs and lists around it. Broad on purpose (Unicode, any TLD, odd local parts):
# masking a little too much is harmless, leaking an address is not.
_STOP = r"\s\"'<>,;:/?=&()\[\]{}|\\*"
_EMAIL = re.compile(rf"[^{_STOP}@]+(?:@|%40)[^{_STOP}@]+", re.IGNORECASE)
_AT = re.compile(r"@|%40", re.IGNORECASE)
_TLD = re.compile(r"\.([^\W\d_]{2,})$")


def _masked(match: re.Match[str]) -> str:
    token = match.group(0)
    at = _AT.search(token)
    assert at is not None  # the pattern holds one
    local, domain = token[: at.start()], token[at.end() :]
    tld = _TLD.search(domain)
    return f"{local[:1]}***{at.group(0)}{domain[:1]}***{'.' + tld.group(1) if tld else ''}"


def mask_emails(text: str) -> str:
    """``text`` with every email address, raw or URL-encoded, replaced by a form like ``a***@e***.com``."""
    if "@" not in text and "%40" not in text.lower():
        return text
    return _EMAIL.sub(_masked, text)


def mask_email(email: str) -> str:
    """The masked form of one address, for tables and artifacts; anything not shaped like one is ``***``."""
    masked = mask_emails(email.strip())
    return masked if masked != email.strip() else "***"


def mask_identity(identity: str, kind: str) -> str:
    """An identity for display: emails as ``a***@e***.com``, user ids keep their first two characters."""
    return mask_email(identity) if kind == "email" else identity[:2] + "***"


_installed = False


def install_masking() -> None:
    """Make every log record of this process carry a masked message (idempotent).

    A record factory rather than a handler filter, so records reach every handler already masked:
    the console, files, and Prefect's API log handler alike.
    """
    global _installed
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
