"""The one exception a request handler raises to refuse a request: an HTTP status and a clear reason."""

from __future__ import annotations

from iterable_recipes.masking import mask_emails


class Rejected(Exception):
    """Refuse the request with ``status`` and a reason safe to show and log (emails masked)."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = mask_emails(reason)
        super().__init__(f"{status}: {self.reason}")
