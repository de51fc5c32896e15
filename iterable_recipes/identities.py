"""How people are named across the recipes: the one email normalisation, and the email and user-id shapes
every contract accepts.

The same person must be the same key everywhere (the receiver, the poll, the opt-out, the CustomersDot
chain, the sync's identity in SQL): ``normalise_email`` is the one rule, and SQL that keys people by
email applies ``TRIM_CHARS`` the same way. ``email_match_key`` adds IDNA to it, for matching a vendor's
answer to what we sent. User ids compare exactly.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

# Exactly the characters for which Python's str.isspace() is true (29 code points: tab, newline, NBSP,
# U+2000-U+200A, U+3000, the line and paragraph separators, ...), plus four invisible characters that
# are not whitespace to Python but arrive in pasted addresses: U+180E, U+200B, U+2060 and U+FEFF (BOM).
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
INVISIBLE = "\u180e\u200b\u2060\ufeff"
TRIM_CHARS = PY_WHITESPACE + INVISIBLE
# No address holds "@" or any of TRIM_CHARS inside a part. Written out, not as `\s`: the published JSON
# Schema is read in the ECMA-262 dialect, whose `\s` lacks U+0085 and U+001C-U+001F, so a client would
# admit addresses this server refuses.
_NOT_IN_ADDRESS = "@" + "".join(f"\\u{ord(char):04x}" for char in TRIM_CHARS)
_ADDRESS = rf"[^{_NOT_IN_ADDRESS}]+@[^{_NOT_IN_ADDRESS}]+\.[^{_NOT_IN_ADDRESS}]+"
EMAIL_PATTERN = rf"^{_ADDRESS}$"
# An address as a person typed it into a form: padded with any of TRIM_CHARS at either end.
_PAD = "".join(f"\\u{ord(char):04x}" for char in TRIM_CHARS)
TYPED_EMAIL_PATTERN = rf"^[{_PAD}]*{_ADDRESS}[{_PAD}]*$"


def normalise_email(email: str) -> str:
    """``email`` trimmed of every Unicode whitespace (and invisible) character at both ends, lower-cased.

    Characters inside the address are left alone: an address with a space inside is not one, and the
    contracts refuse it rather than guessing.
    """
    return email.strip(TRIM_CHARS).lower()


def email_match_key(email: str) -> str:
    """``email`` normalised, its domain in Unicode (punycode labels decoded): the form two spellings of
    one address share, for pinning a vendor's answer on what we sent (``xn--bcher-kva.de`` is
    ``bücher.de``).

    A domain IDNA cannot read (an empty or over-long label, ...) keeps its normalised form.
    """
    address = normalise_email(email)
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    try:
        # Encoding first turns both spellings into the ASCII form; decoding gives one Unicode form.
        domain = domain.encode("idna").decode("idna")
    except UnicodeError:
        return address
    return f"{local}@{domain.lower()}"


def _int_to_str(value: Any) -> Any:
    """Integers (and JSON numbers such as 3.0 that are integers) become their digits."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Email = Annotated[str, Field(min_length=3, max_length=254, pattern=EMAIL_PATTERN)]
# For bodies a person's typing reaches unchanged (Marketo's lead tokens): padding is accepted, then
# trimmed and lower-cased, so a padded, capitalised address is the same person as its plain form, never a
# refusal (no address is written here: the image's layer scan allows none in the project's files).
TypedEmail = Annotated[
    str, Field(min_length=3, max_length=254, pattern=TYPED_EMAIL_PATTERN), AfterValidator(normalise_email)
]
USER_ID_MAX_CHARS = 64
# Published as the server reads it: a string, or an integer (written out, it fits the same length).
_USER_ID_SCHEMA = {
    "anyOf": [
        {"type": "string", "minLength": 1, "maxLength": USER_ID_MAX_CHARS},
        {
            "type": "integer",
            "minimum": 1 - 10 ** (USER_ID_MAX_CHARS - 1),
            "maximum": 10**USER_ID_MAX_CHARS - 1,
        },
    ]
}
UserId = Annotated[
    str,
    BeforeValidator(_int_to_str),
    Field(min_length=1, max_length=USER_ID_MAX_CHARS),
    WithJsonSchema(_USER_ID_SCHEMA),
]
