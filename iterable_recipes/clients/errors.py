"""The one error tree every client raises, so callers decide retry, split or give up by type alone.

    ApiError                      base: carries the endpoint, HTTP status, vendor code and message
    ├── RetryableError            try the same request again later (429, 5xx, 408, transport errors,
    │                             Marketo 604/606/608/611/615/713); ``retry_after`` is the server's hint
    ├── SplitBatchError           the request as a whole cannot pass, its parts might (413,
    │                             BatchTooLarge, a bulk RequestFieldsTypesMismatched): split and resend
    └── PermanentError            never resend unchanged (every other 4xx, Marketo 603); record the reason
        └── QuotaExhaustedError   a daily quota is spent (Marketo 607): stop until it resets

Messages never hold an email address, an API key or a secret: clients build them from codes and
Iterable's own message text, which callers still pass through the masking filter before logging.
"""

from __future__ import annotations


class ApiError(Exception):
    """A vendor API call failed; ``str(err)`` is safe to log once masked."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint
        self.status = status
        self.code = code

    def __str__(self) -> str:
        parts = [p for p in (self.endpoint, str(self.status) if self.status else "", self.code or "") if p]
        prefix = " ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Keep keyword-only attributes across pickling (Prefect persists and ships exceptions).
        return (_rebuild, (type(self), self.message, self.__dict__))


def _rebuild(cls: type[ApiError], message: str, state: dict[str, object]) -> ApiError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class RetryableError(ApiError):
    """The same request may succeed later; ``retry_after`` is seconds the server asked us to wait.

    ``held_by_limiter`` is set when a rate limiter was told of this refusal (a 429) and will itself
    hold the next request back, so the retry policy adds no wait of its own.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        held_by_limiter: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after
        self.held_by_limiter = held_by_limiter


class SplitBatchError(ApiError):
    """The batch cannot pass whole; smaller batches (down to one item) may."""


class PermanentError(ApiError):
    """Resending the same request cannot succeed; record the reason and move on."""


class QuotaExhaustedError(PermanentError):
    """A daily quota is spent; nothing will pass until it resets."""


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is worth another attempt (the single retry condition of the project)."""
    return isinstance(exc, RetryableError)
