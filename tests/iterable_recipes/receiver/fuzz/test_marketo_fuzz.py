"""Fuzz POST /webhooks/marketo/unsubscribe: wrong secrets and bad bodies are 4xx, nothing stored, no 500."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from tests.iterable_recipes.receiver.fuzz.conftest import FUZZ, MARKETO, MARKETO_SECRET, SECRET_TEXTS, Target
from tests.iterable_recipes.receiver.fuzz.strategies import (
    ascii_values,
    bodies,
    encode,
    json_values,
    latin1_values,
    tricky_text,
)

HEADER = "X-Recipes-Secret"


def near_secret(secret: str) -> st.SearchStrategy[str]:
    """Values close to the secret: prefixes, extensions, one character changed, other case, padded."""
    return st.one_of(
        st.integers(0, len(secret) - 1).map(lambda n: secret[:n]),
        ascii_values.filter(bool).map(lambda extra: secret + extra),
        st.tuples(st.integers(0, len(secret) - 1), st.characters(min_codepoint=33, max_codepoint=126))
        .filter(lambda p: secret[p[0]] != p[1])
        .map(lambda p: secret[: p[0]] + p[1] + secret[p[0] + 1 :]),
        st.sampled_from([secret.upper(), secret.lower() + "A", f"Bearer {secret}", secret[::-1]]),
    )


@st.composite
def unsubscribes(draw: st.DrawFn) -> dict[str, object]:
    """A Marketo template body with fields dropped, replaced or added."""
    body: dict[str, object] = {
        "email": f"lead-{uuid.uuid4().hex[:8]}@example.com",
        "leadId": str(uuid.uuid4().int % 10**12),
        "unsubscribedAt": "2026-11-27T10:00:00Z",
    }
    for key in draw(st.lists(st.sampled_from([*body, "extra", "email "]), max_size=3)):
        choice = draw(st.sampled_from(["delete", "json", "tricky"]))
        if choice == "delete":
            body.pop(key, None)
        else:
            body[key] = draw(json_values if choice == "json" else tricky_text)
    return body


marketo_bodies = bodies | unsubscribes().map(encode)


@FUZZ
@given(
    body=marketo_bodies,
    sent=st.one_of(
        st.none(),
        near_secret(MARKETO_SECRET),
        ascii_values,
        latin1_values.map(lambda v: v.encode("latin-1")),
    ),
    header=st.sampled_from([HEADER, HEADER.lower(), "X-Recipes-Secrets", "Authorization"]),
)
def test_a_wrong_or_missing_secret_is_refused(
    target: Target, body: bytes, sent: str | bytes | None, header: str
) -> None:
    headers: dict[str, str | bytes] = {"content-type": "application/json"}
    if sent is not None:
        headers[header] = sent
    if header.lower() == HEADER.lower() and sent in (MARKETO_SECRET, MARKETO_SECRET.encode()):
        return  # hypothesis can rebuild the secret itself; that case is the accepting test's
    before = target.stored()
    answer = target.post(MARKETO, body, headers)
    assert answer.status_code == 401, answer.text
    assert answer.text.startswith('{"error": ') and not any(s in answer.text for s in SECRET_TEXTS)
    assert target.stored() == before


@FUZZ
@given(body=marketo_bodies)
def test_bodies_with_the_secret_are_stored_once_or_refused_cleanly(target: Target, body: bytes) -> None:
    before = target.stored()
    answer = target.post(MARKETO, body, {HEADER: MARKETO_SECRET, "content-type": "application/json"})
    if answer.status_code == 202:
        assert target.stored() == before + 1
    elif answer.status_code == 200:  # the lead is already waiting
        assert answer.json()["duplicate"] is True and target.stored() == before
    else:
        assert answer.status_code in {400, 413, 422}, answer.text
        assert answer.text.startswith('{"error": ') and not any(s in answer.text for s in SECRET_TEXTS)
        assert "@example.com" not in answer.text
        assert target.stored() == before


@FUZZ
@given(repeats=st.integers(2, 4), same_body=st.booleans())
def test_a_repeated_unsubscribe_is_stored_once(target: Target, repeats: int, same_body: bool) -> None:
    lead = uuid.uuid4().int % 10**12
    before = target.stored()
    answers = []
    for n in range(repeats):
        suffix = "" if same_body else str(n)
        body = {"email": f"lead{suffix}@example.com", "leadId": str(lead), "unsubscribedAt": f"t{suffix}"}
        answers.append(target.post(MARKETO, encode(body), {HEADER: MARKETO_SECRET}))
    assert [a.status_code for a in answers] == [202] + [200] * (repeats - 1)
    assert len({a.json()["id"] for a in answers}) == 1
    assert target.stored() == before + 1
