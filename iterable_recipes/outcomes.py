"""What a sending task returns: counts and item positions with reasons, never an email."""

from __future__ import annotations

from dataclasses import dataclass, field

from iterable_recipes.clients.errors import ApiError, RetryableError
from iterable_recipes.clients.iterable_models import BulkResult, FailureCategory
from iterable_recipes.masking import mask_emails


@dataclass(frozen=True)
class ItemFailure:
    """Why the item at one position failed, and whether sending it again later may succeed."""

    category: str
    reason: str
    retryable: bool


@dataclass
class ItemsReport:
    """The outcome of sending a list of items: position -> failure for the ones that did not pass."""

    sent: int
    failures: dict[int, ItemFailure] = field(default_factory=dict)

    @property
    def accepted(self) -> list[int]:
        """Positions Iterable accepted."""
        return [i for i in range(self.sent) if i not in self.failures]

    @classmethod
    def from_bulk(cls, result: BulkResult) -> ItemsReport:
        """Per-position outcomes from the client's bulk result (identities left behind)."""
        return cls(
            sent=result.size,
            failures={
                index: ItemFailure(str(f.category), mask_emails(f.reason), f.retryable)
                for index, f in result.failures.items()
            },
        )

    @classmethod
    def whole_request_failed(cls, size: int, error: ApiError) -> ItemsReport:
        """Every item failed the same way because the request as a whole did."""
        failure = ItemFailure(
            error.code or type(error).__name__, mask_emails(str(error)), isinstance(error, RetryableError)
        )
        return cls(sent=size, failures=dict.fromkeys(range(size), failure))

    def not_found(self) -> set[int]:
        """Positions Iterable reported as an unknown user."""
        return {i for i, f in self.failures.items() if f.category == FailureCategory.NOT_FOUND}
