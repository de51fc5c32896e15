"""Cut bulk items into requests Iterable accepts, and isolate the records that spoil a batch.

Iterable documents a 4 MB body for users/bulkUpdate and common practice caps every bulk call at 1000
items; ``batches`` holds both, measuring the JSON bytes as the client sends them. When Iterable refuses
a batch as a whole (413, BatchTooLarge, a bulk RequestFieldsTypesMismatched), ``send_splitting``
bisects it so the good records still go through and each bad one is recorded with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel

from iterable_recipes.clients.errors import SplitBatchError
from iterable_recipes.clients.iterable_models import (
    BulkItem,
    BulkResult,
    Encoded,
    FailureCategory,
    ItemFailure,
    encode_item,
    item_identity,
)

__all__ = [
    "DEFAULT_ENVELOPE_BYTES",
    "MAX_BULK_BYTES",
    "MAX_BULK_ITEMS",
    "batches",
    "send_in_batches",
    "send_splitting",
    "wire_size",
]

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_BULK_ITEMS = 1000
MAX_BULK_BYTES = 4_000_000
# Room for the request's wrapper, e.g. {"users":[],"createNewFields":false} or
# {"updateSubscriptionsRequests":[]}: the longest envelope the client sends is under 64 bytes.
DEFAULT_ENVELOPE_BYTES = 64


def wire_size(item: BulkItem) -> int:
    """Bytes ``item`` takes in the request body, serialized the way the client serializes it (an
    ``Encoded`` item is measured by its bytes, without encoding it again)."""
    if isinstance(item, Encoded):
        return len(item.raw)
    if isinstance(item, BaseModel):
        return len(item.model_dump_json(by_alias=True, exclude_none=True).encode())
    return len(orjson.dumps(item))


def batches(
    items: Iterable[T],
    max_items: int = MAX_BULK_ITEMS,
    max_bytes: int = MAX_BULK_BYTES,
    *,
    envelope_bytes: int = DEFAULT_ENVELOPE_BYTES,
    size_of: Callable[[Any], int] = wire_size,
) -> Iterator[list[T]]:
    """Yield consecutive lists of at most ``max_items`` items whose request body fits ``max_bytes``.

    The body counted is the envelope plus each item plus the commas between them. An item too big
    to fit even alone is yielded by itself: Iterable will refuse it, and ``send_splitting`` records
    it as a failure instead of stopping the rest.
    """
    if max_items < 1:
        raise ValueError("max_items must be at least 1")
    batch: list[T] = []
    used = envelope_bytes
    for item in items:
        size = size_of(item) + (1 if batch else 0)
        if batch and (len(batch) >= max_items or used + size > max_bytes):
            yield batch
            batch, used = [], envelope_bytes
            size -= 1
        batch.append(item)
        used += size
    if batch:
        yield batch


def send_splitting(batch: Sequence[T], send: Callable[[Sequence[T]], BulkResult]) -> BulkResult:
    """Send ``batch``; when Iterable refuses it whole, bisect down to single items and send the parts.

    A single item that still raises ``SplitBatchError`` becomes a permanent failure carrying the
    error's code as its reason; every other part's result is kept. Results are merged in the order
    of ``batch``. Retryable and permanent errors of a whole request propagate unchanged.
    """
    try:
        return send(batch)
    except SplitBatchError as error:
        if len(batch) > 1:
            # One line per refused request, not per half: the halves' refusals show in its answer.
            log.warning(
                "Iterable refused a request of %d items whole (%s); sending it in halves to find "
                "the items it refuses",
                len(batch),
                error,
            )
        return _split(batch, send, error)


def _split(
    batch: Sequence[T], send: Callable[[Sequence[T]], BulkResult], error: SplitBatchError
) -> BulkResult:
    """Bisect a refused ``batch`` quietly down to single items (each refused one recorded)."""
    if len(batch) == 1:
        return _isolated(batch[0], error)
    middle = len(batch) // 2
    return _send_half(batch[:middle], send).extend(_send_half(batch[middle:], send))


def _send_half(batch: Sequence[T], send: Callable[[Sequence[T]], BulkResult]) -> BulkResult:
    """Send one half of a refused batch; refused again, split it again."""
    try:
        return send(batch)
    except SplitBatchError as error:
        return _split(batch, send, error)


def _isolated(item: Any, error: SplitBatchError) -> BulkResult:
    if error.code == "RequestFieldsTypesMismatched":
        category = FailureCategory.INVALID_DATA
    elif error.code == "BatchTooLarge" or error.status == 413:
        category = FailureCategory.TOO_LARGE
    else:
        category = FailureCategory.REJECTED
    identity = item_identity(item) if isinstance(item, BaseModel | Mapping | Encoded) else None
    result = BulkResult(error.endpoint, identities=[identity])
    result.failures[0] = ItemFailure(0, category, error.message, identity)
    return result


def send_in_batches(items: Sequence[BulkItem], send: Callable[[Sequence[Encoded]], BulkResult]) -> BulkResult:
    """Send ``items`` in requests of at most 1000 items and 4 MB, splitting refused ones; one result
    for all of them, by position. Each item is encoded once (``Encoded``): its bytes size the
    requests and are what ``send`` (a client method) puts in the body."""
    results = [send_splitting(chunk, send) for chunk in batches([encode_item(i) for i in items])]
    return BulkResult.merge(results[0].endpoint if results else "bulk", results)
