"""Mask email addresses, raw and URL-encoded, in every log record the process writes."""

from __future__ import annotations

import logging
import re
from typing import Any

# Raw (a@b.c) and URL-encoded (a%40b.c) forms, Unicode addresses included; one first character is kept.
_EMAIL = re.compile(r"([\w.%+\-])[\w.%+\-]*(@|%40)([\w\-])[\w.\-]*\.([^\W\d_]{2,})")


def mask_emails(text: str) -> str:
    """Replace every email address in ``text`` by a masked form such as ``a***@e***.com``."""
    if "@" not in text and "%40" not in text:
        return text
    return _EMAIL.sub(lambda m: f"{m.group(1)}***{m.group(2)}{m.group(3)}***.{m.group(4)}", text)


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
