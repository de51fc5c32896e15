"""Read an applied user from the stand-in when the test expects one to exist."""

from __future__ import annotations

from typing import Any

from dev.standins.iterable import IterableSandbox


def known_user(sandbox: IterableSandbox, email: str) -> dict[str, Any]:
    """The applied user with ``email``; fails the test when there is none."""
    user = sandbox.user(email)
    assert user is not None, f"no applied user {email!r}"
    return user
