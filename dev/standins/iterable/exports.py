"""GET export/data.json for ``dataTypeName=user``: every profile, one JSON object a line.

Iterable's user export flattens a profile: ``email``, ``userId``, ``signupDate``, ``profileUpdatedAt``,
the subscription arrays and the custom fields side by side. ``range`` is taken on ``profileUpdatedAt``;
``onlyFields`` (repeated, or comma separated as its description says) and ``omitFields`` pick columns.
Other data types are not served here (400), since the stand-in keeps no message history.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from dev.standins.iterable.answers import Answer, bad_params
from dev.standins.iterable.store import IterableSandbox, User

RANGES = ("Today", "Yesterday", "BeforeToday", "All")
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"


def _fields(values: Sequence[str]) -> list[str]:
    """Field names from repeated and comma-separated values alike."""
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def _row(user: User) -> dict[str, Any]:
    """The flat export row of one profile."""
    row: dict[str, Any] = dict(user.data)
    row.update({name: list(ids) for name, ids in user.subs.items()})
    row.update(email=user.email, signupDate=user.signup_date, profileUpdatedAt=user.updated_at)
    if user.user_id is not None:
        row["userId"] = user.user_id
    return row


def _in_range(user: User, wanted: str, today: datetime) -> bool:
    """Whether the profile's last update falls in the named range (UTC days)."""
    if wanted == "All":
        return True
    updated = datetime.strptime(user.updated_at, DATE_FORMAT)
    if wanted == "Today":
        return updated >= today
    if wanted == "Yesterday":
        return today - timedelta(days=1) <= updated < today
    return updated < today


def export_lines(
    sb: IterableSandbox, data_type: str, wanted: str | None, only: Sequence[str], omit: Sequence[str]
) -> Answer | list[str]:
    """The export's lines, or the 400 answer for a request it cannot serve."""
    if data_type != "user":
        return bad_params(f"the stand-in exports dataTypeName=user only, not {data_type!r}")
    wanted = wanted or "Today"
    if wanted not in RANGES:
        return bad_params(f"range must be one of {', '.join(RANGES)}")
    keep, drop = set(_fields(only)), set(_fields(omit))
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    lines = []
    with sb.lock:
        sb.settle()
        for user in sb.users_by_email.values():
            if not _in_range(user, wanted, today):
                continue
            row = {k: v for k, v in _row(user).items() if (not keep or k in keep) and k not in drop}
            lines.append(json.dumps(row, separators=(",", ":")))
    return lines
