"""The ``/_sandbox`` control API: inspect and seed state, read counters, set faults and options."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict

from dev.standins.iterable.faults import FaultSpec
from dev.standins.iterable.store import IterableSandbox

router = APIRouter(prefix="/_sandbox")


class SeedUser(BaseModel):
    """A user to create as if it already existed in Iterable."""

    model_config = ConfigDict(extra="forbid")

    email: str
    userId: str | None = None
    dataFields: dict[str, Any] | None = None
    emailListIds: list[int] | None = None
    unsubscribedChannelIds: list[int] | None = None
    unsubscribedMessageTypeIds: list[int] | None = None
    subscribedMessageTypeIds: list[int] | None = None


class OptionsPatch(BaseModel):
    """Options that may change while the sandbox runs; omitted ones stay as they are."""

    model_config = ConfigDict(extra="forbid")

    profile_delay_seconds: float | None = None
    limits_enabled: bool | None = None
    rate_limits: dict[str, float] | None = None
    max_body_bytes: int | None = None
    create_new_fields_default: bool | None = None
    opt_in_message_types: bool | None = None
    additive_subscriptions_enabled: bool | None = None
    project_type: Literal["email", "userId", "hybrid"] | None = None


def _sandbox(request: Request) -> IterableSandbox:
    sandbox: IterableSandbox = request.app.state.sandbox
    return sandbox


@router.get("/users")
def list_users(request: Request) -> list[dict[str, Any]]:
    """Every applied user with dataFields and subscription arrays."""
    return _sandbox(request).users()


@router.get("/users/{email}")
def get_user(request: Request, email: str) -> dict[str, Any]:
    """One applied user; 404 when unknown (or not applied yet)."""
    user = _sandbox(request).user(email)
    if user is None:
        raise HTTPException(status_code=404, detail="no such user")
    return user


@router.get("/writes/{email}")
def write_history(request: Request, email: str) -> list[dict[str, Any]]:
    """The person's event and subscription writes as they took effect, in order (``order``, ``at``
    epoch seconds, ``kind``: event with its ``id``, or subscriptions with ``unsubscribedChannelIds``)."""
    return _sandbox(request).write_history(email)


@router.post("/users")
def seed_users(request: Request, users: list[SeedUser]) -> dict[str, int]:
    """Create existing users, applied at once; 400 when their field types clash with the schema."""
    try:
        count = _sandbox(request).seed_users([user.model_dump(exclude_none=True) for user in users])
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return {"seeded": count}


@router.get("/lists/{list_id}/members")
def list_members(request: Request, list_id: int) -> list[str]:
    """The applied members of a list (404 for an unknown list)."""
    sandbox = _sandbox(request)
    if list_id not in sandbox.lists:
        raise HTTPException(status_code=404, detail="no such list")
    return sandbox.list_members(list_id)


@router.get("/events")
def list_events(request: Request) -> dict[str, dict[str, Any]]:
    """Every stored event by id."""
    return _sandbox(request).events()


@router.get("/stats")
def stats(request: Request) -> dict[str, Any]:
    """Requests per endpoint and status, writes per event id and user, users created per endpoint."""
    return _sandbox(request).stats()


@router.get("/faults")
def list_faults(request: Request) -> list[dict[str, object]]:
    """The active fault specs."""
    sandbox = _sandbox(request)
    with sandbox.lock:
        return sandbox.faults.describe()


@router.post("/faults")
def set_faults(request: Request, specs: FaultSpec | list[FaultSpec]) -> list[dict[str, object]]:
    """Install one spec or several (each replaces the spec of its endpoint)."""
    sandbox = _sandbox(request)
    for spec in specs if isinstance(specs, list) else [specs]:
        sandbox.set_faults(spec)
    with sandbox.lock:
        return sandbox.faults.describe()


@router.delete("/faults")
def clear_faults(request: Request) -> dict[str, bool]:
    """Remove every fault."""
    _sandbox(request).clear_faults()
    return {"cleared": True}


@router.post("/hold")
def hold(request: Request) -> dict[str, bool]:
    """Hold every API request until /release."""
    _sandbox(request).hold()
    return {"held": True}


@router.post("/release")
def release(request: Request) -> dict[str, bool]:
    """Answer held and later API requests."""
    _sandbox(request).release()
    return {"held": False}


@router.post("/reset")
def reset(request: Request) -> dict[str, bool]:
    """A fresh sandbox with its creation options."""
    _sandbox(request).reset()
    return {"reset": True}


@router.post("/flush")
def flush(request: Request) -> dict[str, int]:
    """Apply pending profile writes now."""
    return {"applied": _sandbox(request).flush()}


@router.get("/options")
def get_options(request: Request) -> dict[str, Any]:
    """The current options (the API key left out)."""
    return _sandbox(request).describe_options()


@router.post("/options")
def set_options(request: Request, patch: OptionsPatch) -> dict[str, Any]:
    """Change options at runtime."""
    return _sandbox(request).set_options(**patch.model_dump(exclude_none=True))
