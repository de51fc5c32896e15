"""The pieces of the sentences a run logs: counts with their nouns, reasons tallied, an error's cause.

Everything here is text for operators, built from counts, codes and Iterable's own messages, and
masked; no Prefect (the recipes' engines build their lines with it, the flows and tasks log them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from iterable_recipes.clients.errors import ApiError
from iterable_recipes.clients.iterable_models import BulkResult
from iterable_recipes.masking import mask_emails

# A tally names this many kinds of reason, then says how many more there were (a line stays a line).
TALLY_KINDS = 3


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` with its noun, thousands separated: "1 event", "40,000 rows"."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def tally(reasons: Iterable[str]) -> str:
    """Reasons by how often they came, most common first: "invalid ×2, too_large ×1" (masked)."""
    common = Counter(reasons).most_common()
    shown = ", ".join(f"{mask_emails(reason)} ×{n}" for reason, n in common[:TALLY_KINDS])
    rest = len(common) - TALLY_KINDS
    return shown + (f" and {rest} other reason(s)" if rest > 0 else "")


def failure_reasons(result: BulkResult) -> list[str]:
    """Each refused item's reason: Iterable's code when the whole request failed, else its category
    and reason ("invalid: identifier is not valid")."""
    return [f.code or f"{f.category}: {f.reason}" for f in result.failures.values()]


def error_text(error: BaseException) -> str:
    """An error's cause for a log line or a run's state message, masked: an ``ApiError`` as endpoint,
    status, code and Iterable's text ("users/bulkUpdate 401 BadApiKey: Invalid API key")."""
    if isinstance(error, ApiError):
        return mask_emails(str(error))
    return mask_emails(f"{type(error).__name__}: {error}")


def answered(result: BulkResult, noun: str, then: str = "") -> str:
    """What Iterable answered to one step of a batch: "Iterable accepted 998 profiles of 1,000; 2
    rejected (invalid: identifier is not valid ×2)", and ``then``, what becomes of the rejected ones."""
    line = f"Iterable accepted {result.accepted_count:,} {noun} of {result.size:,}"
    if result.failures:
        line += f"; {result.failed_count:,} rejected ({tally(failure_reasons(result))})"
        line += f", {then}" if then else ""
    return line


def duration(seconds: float | None) -> str:
    """A duration the way a person reads it: "45 s", "12 min 5 s", "2 h 3 min"; "unknown" for None."""
    if seconds is None:
        return "unknown"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
