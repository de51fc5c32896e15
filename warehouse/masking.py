"""Mask email addresses (and other identities) so logs, errors, samples and stored reasons hold none raw."""

from __future__ import annotations

import re

# Emails also travel URL-encoded (%40) in look-up URLs and in error texts quoting them.
_EMAIL = re.compile(r"([A-Za-z0-9._%+\-]+)(?:@|%40)([A-Za-z0-9\-]+)((?:\.[A-Za-z0-9\-]+)*)")


def _mask_parts(local: str, domain: str, rest: str) -> str:
    tld = rest.rsplit(".", 1)[-1] if rest else ""
    return f"{local[:1]}***@{domain[:1]}***" + (f".{tld}" if tld else "")


def mask_email(email: str) -> str:
    """``alice@example.com`` -> ``a***@e***.com``; anything not shaped like an email becomes ``***``."""
    match = _EMAIL.fullmatch(email.strip())
    if not match:
        return "***"
    return _mask_parts(*match.groups())


def mask_text(text: str) -> str:
    """Mask every email address (plain or URL-encoded) inside free text, such as a vendor's error."""
    return _EMAIL.sub(lambda m: _mask_parts(*m.groups()), text)


def mask_identity(identity: str, kind: str) -> str:
    """Mask an identity for display: emails as ``a***@e***.com``, user ids keep two leading characters."""
    if kind == "email":
        return mask_email(identity)
    return identity[:2] + "***"
