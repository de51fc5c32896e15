"""Hypothesis strategies for webhook bodies and headers: garbage, near-valid events, hostile header values."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from hypothesis import strategies as st

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
EVENT_KEYS = [
    "version", "id", "type", "occurred_at", "person", "email", "user_id", "data", "company",
    "latest_trial_start_date", "registration_kind", "namespace_id", "inviter_user_id", "country",
]  # fmt: skip
EVENT_TYPES = ["saas_trial_started", "free_registration", "namespace_user_invited", "unknown", ""]
tricky_text = st.sampled_from(
    [
        "", " ", "\x00", "\ud7ff", "é@ex.com", "a@b", "@", "a" * 300, "null", "1e999", "-0",
        "2024-02-30T00:00:00Z", "2024-06-11T10:00:00", "9999-12-31T23:59:59+14:00", "personal",
        "fuzz@example.com", "%40", "evt_under_score", "évt", "1" * 600,
    ]
)  # fmt: skip


def new_id() -> str:
    """A fresh event id (letters, digits and hyphens)."""
    return f"evt-{uuid.uuid4().hex}"


def event(kind: str = "saas_trial_started", email: str = "fuzz@example.com") -> dict[str, Any]:
    """A valid CustomersDot event of ``kind`` with a fresh id."""
    data: dict[str, Any] = {"company": "ACME", "latest_trial_start_date": "2024-06-11"}
    if kind == "free_registration":
        data["registration_kind"] = "company"
    return {
        "version": "1",
        "id": new_id(),
        "type": kind,
        "occurred_at": "2024-06-11T10:00:00Z",
        "person": {"email": email, "user_id": 7},
        "data": data,
    }


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with one to three fields set, replaced or deleted at a random path."""
    body = event(draw(st.sampled_from(EVENT_TYPES[:3])))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.lists(st.sampled_from(EVENT_KEYS), min_size=1, max_size=3))
        node: Any = body
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        action = draw(st.sampled_from(["set", "set", "tricky", "delete", "type"]))
        if action == "delete":
            node.pop(path[-1], None)
        elif action == "tricky":
            node[path[-1]] = draw(tricky_text)
        elif action == "type":
            node[path[-1]] = draw(st.sampled_from(EVENT_TYPES))
        else:
            node[path[-1]] = draw(json_values)
    return body


def encode(value: Any) -> bytes:
    """Compact JSON bytes; non-ASCII kept raw (UTF-8) as a real sender might."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# Bodies of every kind: raw bytes, text, any JSON, near-valid events, big ones past the limit.
bodies = st.one_of(
    st.binary(max_size=700),
    st.text(max_size=300).map(str.encode),
    json_values.map(encode),
    mutated_events().map(encode),
    st.integers(4000, 9000).map(lambda n: b'{"pad":"' + b"x" * n + b'"}'),
)
b64 = st.binary(min_size=0, max_size=40).map(lambda raw: base64.b64encode(raw).decode())
signature_values = st.one_of(
    b64.map(lambda s: f"v1,{s}"),
    st.tuples(st.sampled_from(["v1", "v2", "v1a", "", "V1"]), b64).map(",".join),
    st.lists(b64.map(lambda s: f"v1,{s}"), min_size=2, max_size=5).map(" ".join),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(str.strip),
)
timestamp_values = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", "now", "1e400", "-1", "0x10", "1718000000.5", "nan", "inf"]),
    st.just("\u00b9\u00b2\u00b3".encode("latin-1")),  # digits to str.isdigit, not to int()
)
# Legal header values: no control characters, no surrounding whitespace (clients refuse to send those).
ascii_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(str.strip)
latin1_values = st.text(
    st.characters(min_codepoint=32, max_codepoint=255, exclude_characters=[chr(c) for c in range(127, 160)]),
    max_size=30,
).map(str.strip)


@st.composite
def signature_headers(draw: st.DrawFn) -> dict[str, str | bytes]:
    """Any subset of the Standard Webhooks headers with hostile values, plus stray headers."""
    headers: dict[str, str | bytes] = {}
    if draw(st.booleans()):
        headers["webhook-id"] = draw(ascii_values)
    if draw(st.booleans()):
        headers["webhook-timestamp"] = draw(timestamp_values)
    if draw(st.booleans()):
        headers["webhook-signature"] = draw(signature_values)
    if draw(st.booleans()):
        headers["content-type"] = draw(st.sampled_from(["application/json", "text/plain", "", "x/y; a=b"]))
    if draw(st.booleans()):
        headers["x-any"] = draw(ascii_values)
    if draw(st.integers(0, 9)) == 0:  # a Content-Length that does not match the body (in process only)
        lengths: list[str | bytes] = ["9" * 5000, "-1", "1e3", "\u00b2".encode("latin-1"), "0"]
        headers["content-length"] = draw(st.sampled_from(lengths))
    return headers
