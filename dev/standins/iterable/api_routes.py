"""The ``/api`` routes: parse JSON by hand (no per-item pydantic on hot paths), call the behaviour modules."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from dev.standins.iterable import endpoints, events, exports, lists, profiles, subscriptions
from dev.standins.iterable.answers import Answer, bad_params, envelope
from dev.standins.iterable.gate import BODY_KEY
from dev.standins.iterable.store import IterableSandbox

router = APIRouter(prefix="/api")


def _sandbox(request: Request) -> IterableSandbox:
    sandbox: IterableSandbox = request.app.state.sandbox
    return sandbox


def _reply(answer: Answer) -> Response:
    status, body = answer
    return JSONResponse(body, status_code=status)


async def _json(request: Request) -> Any:
    """The parsed body, or a BadJsonBody response."""
    raw = request.scope.get(BODY_KEY)
    if raw is None:
        raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return JSONResponse(
            envelope("Could not parse the request body as JSON", "BadJsonBody"), status_code=400
        )


async def _post(request: Request, handler: Callable[[IterableSandbox, Any], Answer]) -> Response:
    body = await _json(request)
    if isinstance(body, Response):
        return body
    reply = _reply(handler(_sandbox(request), body))
    # What the write stored lives as long as the sandbox: out of the cyclic collector's scans, whose
    # pauses grow with it and would otherwise stop this loop (and its rate-limit clock) for 100+ ms.
    gc.freeze()
    return reply


@router.post("/events/track")
async def track(request: Request) -> Response:
    """Track one custom event."""
    return await _post(request, events.track)


@router.post("/events/trackBulk")
async def track_bulk(request: Request) -> Response:
    """Track many custom events."""
    return await _post(request, events.track_bulk)


@router.post("/users/update")
async def update_user(request: Request) -> Response:
    """Upsert one profile."""
    return await _post(request, profiles.update_user)


@router.post("/users/bulkUpdate")
async def bulk_update(request: Request) -> Response:
    """Upsert many profiles."""
    return await _post(request, profiles.bulk_update)


@router.post("/users/updateSubscriptions")
async def update_subscriptions(request: Request) -> Response:
    """Overwrite one user's subscription arrays."""
    return await _post(request, subscriptions.update_subscriptions)


@router.post("/users/bulkUpdateSubscriptions")
async def bulk_update_subscriptions(request: Request) -> Response:
    """Overwrite many users' subscription arrays."""
    return await _post(request, subscriptions.bulk_update_subscriptions)


def _user_answer(sandbox: IterableSandbox, email: str | None = None, user_id: str | None = None) -> Response:
    if not email and not user_id:
        return _reply(bad_params("email or userId is required"))
    with sandbox.lock:
        sandbox.settle()
        user = sandbox.find(email=email, user_id=user_id)
        # An unknown user is a 200 with an empty object, exactly as Iterable answers.
        answer = JSONResponse({"user": user.api_view()} if user is not None else {})
        if user is not None:
            sandbox.looked_up(user)
        return answer


@router.get("/users/getByEmail")
async def get_by_email(request: Request, email: str | None = None) -> Response:
    """Read a user by email (query form)."""
    return _user_answer(_sandbox(request), email=email)


@router.get("/users/getFields")
async def get_fields(request: Request) -> Response:
    """The project's user fields and the type each was fixed to by its first write (before the path
    form of getByEmail, which would read "getFields" as an address)."""
    sandbox = _sandbox(request)
    with sandbox.lock:
        sandbox.settle()
        return JSONResponse({"fields": dict(sandbox.user_field_types)})


@router.get("/users/byUserId")
async def get_by_user_id(request: Request, userId: str | None = None) -> Response:
    """Read a user by userId (query form)."""
    return _user_answer(_sandbox(request), user_id=userId)


@router.get("/users/byUserId/{user_id}")
async def get_by_user_id_path(request: Request, user_id: str) -> Response:
    """Read a user by userId (path form)."""
    return _user_answer(_sandbox(request), user_id=user_id)


@router.get("/users/{email}")
async def get_by_email_path(request: Request, email: str) -> Response:
    """Read a user by email (path form)."""
    return _user_answer(_sandbox(request), email=email)


@router.get("/channels")
async def channels(request: Request) -> Response:
    """The project's channels."""
    sandbox = _sandbox(request)
    with sandbox.lock:
        return JSONResponse({"channels": list(sandbox.channels.values())})


@router.get("/messageTypes")
async def message_types(request: Request) -> Response:
    """The project's message types."""
    sandbox = _sandbox(request)
    with sandbox.lock:
        return JSONResponse({"messageTypes": list(sandbox.message_types.values())})


def _numeric(value: str) -> int:
    """A subscription group id; -1 (which matches nothing) when not numeric, so the answer is BadParams."""
    return int(value) if value.isdigit() else -1


@router.patch("/subscriptions/{group}/{group_id}/user/{email}")
async def subscribe_email(request: Request, group: str, group_id: str, email: str) -> Response:
    """Subscribe one user, by email; creates an unknown user."""
    answer = subscriptions.subscribe_one(
        _sandbox(request), group, _numeric(group_id), email, None, True, endpoints.SUBSCRIBE
    )
    return _reply(answer)


@router.delete("/subscriptions/{group}/{group_id}/user/{email}")
async def unsubscribe_email(request: Request, group: str, group_id: str, email: str) -> Response:
    """Unsubscribe one user, by email; assumed to create an unknown user too."""
    sandbox = _sandbox(request)
    answer = subscriptions.subscribe_one(
        sandbox, group, _numeric(group_id), email, None, False, endpoints.UNSUBSCRIBE
    )
    return _reply(answer)


@router.patch("/subscriptions/{group}/{group_id}/byUserId/{user_id}")
async def subscribe_user_id(request: Request, group: str, group_id: str, user_id: str) -> Response:
    """Subscribe one known user, by userId."""
    sandbox = _sandbox(request)
    answer = subscriptions.subscribe_one(
        sandbox, group, _numeric(group_id), None, user_id, True, endpoints.SUBSCRIBE
    )
    return _reply(answer)


@router.delete("/subscriptions/{group}/{group_id}/byUserId/{user_id}")
async def unsubscribe_user_id(request: Request, group: str, group_id: str, user_id: str) -> Response:
    """Unsubscribe one known user, by userId."""
    sandbox = _sandbox(request)
    answer = subscriptions.subscribe_one(
        sandbox, group, _numeric(group_id), None, user_id, False, endpoints.UNSUBSCRIBE
    )
    return _reply(answer)


@router.put("/subscriptions/{group}/{group_id}")
async def subscribe_bulk(request: Request, group: str, group_id: str, action: str = "subscribe") -> Response:
    """Subscribe or unsubscribe many users (``?action=``)."""
    body = await _json(request)
    if isinstance(body, Response):
        return body
    name = endpoints.BULK_UNSUBSCRIBE if action == "unsubscribe" else endpoints.BULK_SUBSCRIBE
    return _reply(
        subscriptions.subscribe_bulk(_sandbox(request), group, _numeric(group_id), action, body, name)
    )


@router.get("/lists")
async def get_lists(request: Request) -> Response:
    """Every list of the project."""
    return _reply(lists.all_lists(_sandbox(request)))


@router.post("/lists")
async def create_list(request: Request) -> Response:
    """Create a static list."""
    return await _post(request, lists.create)


@router.post("/lists/subscribe")
async def list_subscribe(request: Request) -> Response:
    """Add members to a static list (creates unknown addresses: an email-based project)."""
    return await _post(request, lambda sb, body: lists.change_members(sb, body, True))


@router.post("/lists/unsubscribe")
async def list_unsubscribe(request: Request) -> Response:
    """Remove members from a static list."""
    return await _post(request, lambda sb, body: lists.change_members(sb, body, False))


def _text(answer: str | tuple[int, Any]) -> Response:
    """A plain-text answer (the spec's text/plain operations), or the error envelope."""
    if isinstance(answer, tuple):
        return _reply(answer)
    return Response(answer, media_type="text/plain")


@router.get("/lists/getUsers")
async def list_users(
    request: Request, listId: str | None = None, preferUserId: str | None = None
) -> Response:
    """The members of a list, one a line."""
    return _text(lists.member_lines(_sandbox(request), listId, preferUserId))


@router.get("/lists/{list_id}/size")
async def list_size(request: Request, list_id: str) -> Response:
    """How many members a list has."""
    return _text(lists.size(_sandbox(request), list_id))


@router.get("/export/data.json")
async def export_json(request: Request) -> Response:
    """Export every user, one JSON object a line (``dataTypeName=user`` only)."""
    query = request.query_params
    lines = exports.export_lines(
        _sandbox(request),
        query.get("dataTypeName", ""),
        query.get("range"),
        query.getlist("onlyFields"),
        query.getlist("omitFields"),
    )
    if isinstance(lines, tuple):
        return _reply(lines)
    body = "".join(f"{line}\n" for line in lines)
    return Response(body, media_type="application/x-json-stream")


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def not_found(path: str) -> Response:
    """Anything the stand-in does not serve."""
    return JSONResponse(
        envelope(f"Endpoint /api/{path} is not served by the sandbox", "NotFound"), status_code=404
    )
