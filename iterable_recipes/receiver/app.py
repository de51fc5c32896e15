"""The receiver: CustomersDot and Marketo webhooks (verify, validate, commit, nudge) and /healthz.

The two webhook endpoints are plain ASGI (``asgi.py``): their POSTs skip FastAPI's stack, which serves
the rest (/healthz, the OpenAPI document, the 405 of another method).
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from iterable_recipes.customersdot.contract import (
    EVENT_TYPES,
    customersdot_event_adapter,
    parse_customersdot_event,
)
from iterable_recipes.customersdot.mapping import EventMapping, is_forwarded, load_mapping
from iterable_recipes.optouts import keys as optouts
from iterable_recipes.optouts.contract import MarketoUnsubscribe, parse_marketo_unsubscribe
from iterable_recipes.receiver.asgi import Answer, Endpoint, RawHeaders, encode, read_body, route_path
from iterable_recipes.receiver.errors import Rejected
from iterable_recipes.receiver.intake import GroupCommitter
from iterable_recipes.receiver.limits import HEADER_MAX_CHARS, check_lengths, webhook_id_max_chars
from iterable_recipes.receiver.nudge import Nudger
from iterable_recipes.receiver.raw_body import storable_as_sent
from iterable_recipes.receiver.signature import Verifier
from iterable_recipes.receiver.watch import DueWorkWatcher, Watched
from iterable_recipes.settings import Settings, load_settings
from iterable_recipes.store import EncodedJSON, Inbox, NewItem

log = logging.getLogger(__name__)
T = TypeVar("T")
SOURCE = "customersdot"
CUSTOMERSDOT_PATH = "/webhooks/customersdot"
MARKETO_PATH = "/webhooks/marketo/unsubscribe"
# The stored webhook_id is "customersdot:<webhook-id>", within its column.
CUSTOMERSDOT_HEADER_LIMITS = {
    "webhook-id": webhook_id_max_chars(f"{SOURCE}:"),
    "webhook-timestamp": HEADER_MAX_CHARS,
    "webhook-signature": HEADER_MAX_CHARS,
}
_ERROR = {
    "content": {
        "application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}
    }
}
CUSTOMERSDOT_OPERATION: dict[str, Any] = {
    "summary": "Receive one CustomersDot event (Standard Webhooks signature)",
    "operationId": "receive_customersdot_event",
    "parameters": [
        {"name": name, "in": "header", "required": True, "schema": {"type": "string", "maxLength": limit}}
        for name, limit in CUSTOMERSDOT_HEADER_LIMITS.items()
    ],
    "responses": {
        "202": {"description": "Stored: the inbox item's id"},
        "200": {"description": "A repeat of an accepted event (same webhook-id or event id): the stored id"},
        "400": {"description": "Malformed JSON or body, or a header longer than its maxLength", **_ERROR},
        "401": {
            "description": "Missing or bad signature, or timestamp outside the 5-minute window",
            **_ERROR,
        },
        "413": {"description": "Body too large", **_ERROR},
        "422": {"description": "Does not match the contract (unknown type, missing email, ...)", **_ERROR},
        "503": {"description": "Not stored (database unavailable or no secret configured); retry", **_ERROR},
    },
}
MARKETO_OPERATION: dict[str, Any] = {
    "summary": "Receive one Marketo unsubscribe (a Call Webhook flow step, shared secret in a header)",
    "operationId": "receive_marketo_unsubscribe",
    "responses": {
        "202": {"description": "Stored: the inbox item's id"},
        "200": {"description": "A repeat, or the lead is already waiting for its opt-out: the stored id"},
        "400": {"description": "Malformed JSON or body, or a header longer than its maxLength", **_ERROR},
        "401": {"description": "Missing or wrong shared secret header", **_ERROR},
        "413": {"description": "Body too large", **_ERROR},
        "422": {"description": "Does not match the template (email, leadId, unsubscribedAt)", **_ERROR},
        "503": {"description": "Not stored (database unavailable or no secret configured); retry", **_ERROR},
    },
}
PREFECT_HEALTH_TIMEOUT = 3.0


def json_response(status: int, content: dict[str, Any]) -> Response:
    """A small JSON response without the JSONResponse machinery."""
    return Response(encode(content), status_code=status, media_type="application/json")


def error(status: int, reason: str) -> Answer:
    """The one error shape: ``{"error": reason}``."""
    return status, encode({"error": reason})


def error_response(status: int, reason: str) -> Response:
    """The one error shape as a Starlette response (FastAPI's handlers)."""
    return json_response(status, {"error": reason})


def describe(err: ValidationError) -> str:
    """A clear reason built from field paths and messages only: never the input (it holds emails)."""
    problems = []
    for problem in err.errors(include_input=False, include_url=False):
        if problem["type"] == "union_tag_invalid":
            problems.append(f"type: unknown event type; expected one of {', '.join(EVENT_TYPES)}")
            continue
        if problem["type"] == "union_tag_not_found":
            problems.append(f"type: missing; expected one of {', '.join(EVENT_TYPES)}")
            continue
        # The discriminator's tag appears in the path; it is known by now, so leave it out.
        loc = [str(p) for p in problem["loc"] if str(p) not in EVENT_TYPES]
        problems.append(f"{'.'.join(loc) or 'body'}: {problem['msg']}")
    return "; ".join(problems[:10])


def validated(parse: Callable[[bytes], T], body: bytes) -> T:
    """``parse(body)``, or Rejected: 400 for malformed JSON, 422 for a body that breaks the contract."""
    try:
        return parse(body)
    except ValidationError as exc:
        json_error = any(p["type"] == "json_invalid" for p in exc.errors(include_input=False))
        raise Rejected(400 if json_error else 422, describe(exc)) from exc


class Receiver:
    """The CustomersDot endpoint's state: the verifier, the group committer, the mapping and the nudger."""

    def __init__(self, settings: Settings, inbox: Inbox, nudger: Nudger, mapping: EventMapping) -> None:
        self.settings = settings
        self.inbox = inbox
        self.nudger = nudger
        self.mapping = mapping
        self.verifier = Verifier([s.get_secret_value() for s in settings.customersdot_webhook_secrets])
        self.committer = GroupCommitter(inbox)
        self._prefect_health: tuple[float, bool] | None = None

    async def customersdot(self, headers: RawHeaders, receive: Receive) -> Answer:
        """Verify, validate, commit, nudge; 202 when stored now, 200 for a repeat, 4xx with a reason."""
        try:
            check_lengths(headers, CUSTOMERSDOT_HEADER_LIMITS)
            if not self.verifier.configured:
                return error(503, "no CustomersDot signing secret is configured")
            body = await read_body(receive, headers, self.settings.webhook_max_body_bytes)
            webhook_id = self.verifier.verify(body, headers)
            event = validated(parse_customersdot_event, body)
        except Rejected as rejected:
            log.info("refused a CustomersDot request: %s", rejected.reason)
            return error(rejected.status, rejected.reason)
        forwarded = is_forwarded(event, self.mapping)
        # The signed bytes as they came (the drain validates them again when it reads them back), unless
        # a repeated key would read back differently: then the contract's own form, encoded once.
        payload = (
            EncodedJSON(body.decode()) if storable_as_sent(body, event) else event.model_dump(mode="json")
        )
        item = NewItem(
            source=SOURCE,
            source_id=event.id,
            kind=event.type,
            payload=payload,
            webhook_id=f"{SOURCE}:{webhook_id}",
            status="pending" if forwarded else "skipped",
            reason=None if forwarded else "not forwarded by the event mapping (forward_when)",
        )
        return await self._store(item, self.settings.customersdot_drain_deployment if forwarded else None)

    async def marketo_unsubscribe(self, headers: RawHeaders, receive: Receive) -> Answer:
        """Marketo's "Call Webhook" step: shared secret, validate, commit keyed per lead, nudge the drain."""
        secrets = [s.get_secret_value().encode() for s in self.settings.marketo_webhook_secret]
        header = self.settings.marketo_webhook_header
        try:
            check_lengths(headers, {header: HEADER_MAX_CHARS})
            if not any(secrets):
                return error(503, "no Marketo webhook secret is configured")
            sent = headers.get(header.lower(), "").encode()
            # Every secret is compared (no early exit), each in constant time.
            if not sum(hmac.compare_digest(sent, secret) for secret in secrets if secret):
                raise Rejected(401, f"missing or wrong {header} header")
            body = await read_body(receive, headers, self.settings.webhook_max_body_bytes)
            unsubscribe = validated(parse_marketo_unsubscribe, body)
        except Rejected as rejected:
            log.info("refused a Marketo request: %s", rejected.reason)
            return error(rejected.status, rejected.reason)
        item = optouts.webhook_item(unsubscribe.leadId, unsubscribe.email, unsubscribe.unsubscribedAt)
        # A repeat answers 200: the same request again, or the lead already waits (queued by the poll).
        return await self._store(item, self.settings.optout_drain_deployment)

    async def _store(self, item: NewItem, drain: str | None) -> Answer:
        """Commit ``item``; 202 and a nudge of ``drain`` when new, 200 with the stored id for a repeat."""
        try:
            result = await self.committer.add(item)
        except Exception as exc:
            log.error("could not store a %s item (%s)", item.source, type(exc).__name__)
            return error(503, "could not store the request; try again later")
        # Written out as json.dumps writes them, without its cost (the id is an int).
        if not result.created:
            return 200, b'{"id": %d, "duplicate": true}' % result.id
        if drain is not None:
            self.nudger.nudge(drain)
        return 202, b'{"id": %d}' % result.id

    async def healthz(self) -> Response:
        """Database and Prefect reachability; 503 only when the database is down (Prefect is optional)."""
        database = await asyncio.to_thread(self.inbox.ping)
        prefect = await self._prefect_reachable()
        body = {
            "database": "ok" if database else "unreachable",
            "prefect": "ok" if prefect else "unreachable",
        }
        return json_response(200 if database else 503, body)

    async def _prefect_reachable(self) -> bool:
        """Prefect's health, cached for a few seconds so probes do not hammer its API."""
        loop = asyncio.get_running_loop()
        if self._prefect_health and loop.time() - self._prefect_health[0] < 5.0:
            return self._prefect_health[1]
        try:
            healthy = await asyncio.wait_for(
                asyncio.to_thread(self.nudger.trigger.healthy), PREFECT_HEALTH_TIMEOUT
            )
        except (TimeoutError, Exception):
            healthy = False
        self._prefect_health = (loop.time(), healthy)
        return healthy


def _install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{"error": ...}``; bad input is a 4xx, never a 500."""

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        answer = error_response(exc.status_code, str(exc.detail))
        # Starlette's 405 carries Allow (RFC 9110 requires it); keep every header it set.
        answer.headers.update(exc.headers or {})
        return answer

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return error_response(422, "; ".join(problems[:10]))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.error("unexpected error in the receiver (%s)", type(exc).__name__)
        return error_response(500, "internal error")


def openapi_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """(CustomersDot request body schema, component schemas with both contracts), for the OpenAPI document."""
    schema = customersdot_event_adapter.json_schema(ref_template="#/components/schemas/{model}")
    components = schema.pop("$defs", {})
    components["MarketoUnsubscribe"] = MarketoUnsubscribe.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    return schema, components


def _install_openapi(app: FastAPI, secret_header: str) -> None:
    """Publish both contracts as the endpoints' request bodies, with the headers each one requires."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        body, components = openapi_schemas()
        schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
        content = {"application/json": {"schema": body}}
        operation = CUSTOMERSDOT_OPERATION | {"requestBody": {"required": True, "content": content}}
        schema["paths"][CUSTOMERSDOT_PATH] = {"post": operation}
        marketo_body = {"application/json": {"schema": {"$ref": "#/components/schemas/MarketoUnsubscribe"}}}
        secret = {"type": "string", "maxLength": HEADER_MAX_CHARS}
        marketo_header = {"name": secret_header, "in": "header", "required": True, "schema": secret}
        schema["paths"][MARKETO_PATH] = {
            "post": MARKETO_OPERATION
            | {"parameters": [marketo_header], "requestBody": {"required": True, "content": marketo_body}}
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def watched_drains(settings: Settings, inbox: Inbox) -> list[Watched]:
    """The drains the receiver feeds, of the recipes served here, each with its question "is work due?"."""
    recheck = timedelta(days=settings.consent_recheck_days)
    drains = {
        "customersdot": Watched(settings.customersdot_drain_deployment, lambda: inbox.has_due(SOURCE)),
        # The opt-out drain also queues the ledger's due re-checks, so they are its work too.
        "optouts": Watched(
            settings.optout_drain_deployment,
            lambda: inbox.has_due(optouts.SOURCE) or inbox.ledger.any_due(recheck),
        ),
    }
    return [drains[recipe] for recipe in settings.recipes_serve_recipes if recipe in drains]


def due_work_watcher(settings: Settings, inbox: Inbox, nudger: Nudger) -> DueWorkWatcher | None:
    """The watcher over the drains, creating runs through the nudge's trigger; None when switched off."""
    if settings.due_watch_seconds <= 0:
        return None
    return DueWorkWatcher(nudger.trigger, watched_drains(settings, inbox), settings.due_watch_seconds)


class ReceiverApp(FastAPI):
    """FastAPI, but a POST to a webhook endpoint goes straight to that endpoint's ASGI app.

    FastAPI's middleware stack and Starlette's routing cost more per event than verifying it; the
    endpoints stay routes too, so FastAPI answers every other method (405) and path as before.
    """

    webhook_endpoints: dict[str, Endpoint]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection's scope."""
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.webhook_endpoints.get(route_path(scope))
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    nudger: Nudger | None = None,
    *,
    inbox: Inbox | None = None,
    mapping: EventMapping | None = None,
) -> ReceiverApp:
    """The receiver app. Given parts are used as is (and left running); missing ones are made from
    ``settings`` and closed at shutdown. The database must already be migrated (inbox.migrate)."""
    settings = settings or load_settings()
    own_inbox = inbox is None
    own_nudger = nudger is None
    store = inbox or Inbox(
        settings.recipes_database_url,
        max_attempts=settings.inbox_max_attempts,
        sqlite_synchronous=settings.inbox_sqlite_synchronous,
    )
    nudges = nudger or Nudger(window_seconds=settings.nudge_window_seconds)
    receiver = Receiver(settings, store, nudges, mapping or load_mapping())
    watcher = due_work_watcher(settings, store, nudges)
    if not receiver.verifier.configured:
        log.warning("CUSTOMERSDOT_WEBHOOK_SECRETS is empty: every CustomersDot request will be refused")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nudges.start()
        if watcher is not None:
            watcher.start()
        await receiver.committer.start()
        # The start-up heap (Prefect's import alone is large) never becomes garbage; freezing it keeps
        # full collections from walking it, which otherwise shows as 100 ms pauses in the p99.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await receiver.committer.stop()
            if watcher is not None:
                watcher.stop()
            if own_nudger:
                nudges.stop()
            if own_inbox:
                store.dispose()

    app = ReceiverApp(
        title="iterable-recipes webhooks",
        version="1",
        description="Receives CustomersDot lifecycle events (Standard Webhooks signatures) into the inbox.",
        lifespan=lifespan,
    )
    app.state.receiver = receiver
    app.state.watcher = watcher
    _install_error_handlers(app)
    # Plain ASGI endpoints: the body is read raw anyway (the signature covers the exact bytes).
    # _install_openapi publishes them with the contracts.
    app.webhook_endpoints = {
        CUSTOMERSDOT_PATH: Endpoint(receiver.customersdot),
        MARKETO_PATH: Endpoint(receiver.marketo_unsubscribe),
    }
    for path, endpoint in app.webhook_endpoints.items():
        app.router.routes.append(Route(path, endpoint, methods=["POST"]))
    app.add_api_route(
        "/healthz", receiver.healthz, methods=["GET"], summary="Database and Prefect reachability"
    )
    _install_openapi(app, settings.marketo_webhook_header)
    return app
