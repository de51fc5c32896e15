from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iterable_recipes.clients.batching import batches, send_splitting, wire_size
from iterable_recipes.clients.errors import PermanentError, RetryableError, SplitBatchError
from iterable_recipes.clients.iterable_models import BulkResult, BulkUser, FailureCategory
from tests.iterable_recipes.clients.fakes import Script, error, ok

ENVELOPE = len(b'{"users":[],"createNewFields":false}')


def user(i: int, pad: int = 0) -> dict[str, Any]:
    return {"email": f"user{i}@example.com", "dataFields": {"n": i, "pad": "x" * pad}}


def body_size(batch: list[Any]) -> int:
    wire = [u.to_wire() if isinstance(u, BulkUser) else u for u in batch]
    body = {"users": wire, "createNewFields": False}
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())


def test_cuts_at_item_count() -> None:
    sizes = [len(b) for b in batches((user(i) for i in range(2500)), max_items=1000)]
    assert sizes == [1000, 1000, 500]


def test_cuts_at_bytes_including_envelope() -> None:
    items = [user(i, pad=900) for i in range(50)]
    limit = 10_000
    cut = list(batches(items, max_items=1000, max_bytes=limit))
    assert len(cut) > 1
    assert [i for b in cut for i in b] == items
    for batch in cut:
        assert body_size(batch) <= limit
    # Greedy: adding the next item's first element would have crossed the limit.
    for batch, following in itertools.pairwise(cut):
        assert body_size([*batch, following[0]]) > limit


def test_default_limits_are_1000_items_and_4_mb() -> None:
    big = [user(i, pad=9000) for i in range(1000)]
    cut = list(batches(big))
    assert all(body_size(b) <= 4_000_000 for b in cut)
    assert len(cut) == 3


def test_models_and_unicode_are_measured_as_sent() -> None:
    items = [BulkUser(email=f"u{i}@example.com", data_fields={"name": "é" * 100}) for i in range(30)]
    assert wire_size(items[0]) == len(
        json.dumps(items[0].to_wire(), separators=(",", ":"), ensure_ascii=False).encode()
    )
    for batch in batches(items, max_bytes=1500):
        assert body_size(batch) <= 1500


def test_an_item_too_big_alone_goes_alone() -> None:
    cut = list(batches([user(1), user(2, pad=5000), user(3)], max_bytes=1000))
    assert [len(b) for b in cut] == [1, 1, 1]


@settings(max_examples=50, deadline=None)
@given(
    pads=st.lists(st.integers(0, 400), max_size=60),
    max_items=st.integers(1, 20),
    max_bytes=st.integers(200, 3000),
)
def test_batches_keep_order_and_limits(pads: list[int], max_items: int, max_bytes: int) -> None:
    items = [user(i, pad) for i, pad in enumerate(pads)]
    cut = list(batches(items, max_items=max_items, max_bytes=max_bytes))
    assert [i for b in cut for i in b] == items
    for batch in cut:
        assert 1 <= len(batch) <= max_items
        assert len(batch) == 1 or body_size(batch) <= max_bytes


# ---- send_splitting ------------------------------------------------------------------------------


def fake_send(bad: set[int], calls: list[int]) -> Any:
    def send(batch: Sequence[dict[str, Any]]) -> BulkResult:
        calls.append(len(batch))
        if any(item["dataFields"]["n"] in bad for item in batch):
            raise SplitBatchError(
                "Field types mismatched (fields: n)",
                endpoint="users/bulkUpdate",
                status=400,
                code="RequestFieldsTypesMismatched",
            )
        return BulkResult("users/bulkUpdate", identities=[item["email"] for item in batch])

    return send


def test_split_isolates_bad_records() -> None:
    items = [user(i) for i in range(16)]
    calls: list[int] = []
    result = send_splitting(items, fake_send({3, 11}, calls))
    assert result.size == 16
    assert sorted(result.failures) == [3, 11]
    assert result.failures[3].category is FailureCategory.INVALID_DATA
    assert result.failures[3].identity == "user3@example.com"
    assert "fields: n" in result.failures[3].reason
    assert result.accepted_count == 14
    assert calls[0] == 16
    assert calls.count(1) == 4  # bisection reaches each bad record and its sibling only


def test_a_split_is_logged_once_per_refused_request(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="iterable_recipes.clients.batching"):
        send_splitting([user(i) for i in range(16)], fake_send({3, 11}, []))
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("Iterable refused a request of 16 items whole (users/bulkUpdate 400 ")
    assert "sending it in halves" in line and "@" not in line


def test_split_of_good_batch_sends_once() -> None:
    calls: list[int] = []
    result = send_splitting([user(i) for i in range(5)], fake_send(set(), calls))
    assert calls == [5]
    assert result.failed_count == 0


def test_too_large_single_item_is_recorded() -> None:
    def send(batch: Sequence[dict[str, Any]]) -> BulkResult:
        raise SplitBatchError("too large", endpoint="users/bulkUpdate", status=413)

    result = send_splitting([user(1)], send)
    assert result.failures[0].category is FailureCategory.TOO_LARGE


@pytest.mark.parametrize("exc", [PermanentError("bad key", status=401), RetryableError("down", status=503)])
def test_whole_request_errors_propagate(exc: Exception) -> None:
    def send(batch: Sequence[dict[str, Any]]) -> BulkResult:
        raise exc

    with pytest.raises(type(exc)):
        send_splitting([user(1), user(2)], send)


def test_split_through_the_client_keeps_item_outcomes_in_order() -> None:
    mismatch = error(400, "RequestFieldsTypesMismatched", "Field types mismatched")

    def answer(request: Any) -> Any:
        users = json.loads(request.content)["users"]
        if any(u["dataFields"]["n"] == 2 for u in users):
            return mismatch
        invalid = [u["email"] for u in users if u["dataFields"]["n"] == 5]
        return ok(
            {
                "successCount": len(users) - len(invalid),
                "failCount": len(invalid),
                "failedUpdates": {"invalidEmails": invalid},
            }
        )

    script = Script(answer)
    items = [user(i) for i in range(8)]
    with script.client() as client:
        result = send_splitting(items, client.bulk_update_users)
    assert {i: f.category for i, f in result.failures.items()} == {
        2: FailureCategory.INVALID_DATA,
        5: FailureCategory.INVALID,
    }
    assert [o.identity for o in result.outcomes()] == [u["email"] for u in items]
