"""The Marketo stand-in's HTTP face: identity, paging token, activities, lead changes and leads routes."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from dev.standins.marketo import paging
from dev.standins.marketo.control import router as control_router
from dev.standins.marketo.state import (
    DEFAULT_LEAD_FIELDS,
    LEAD_FIELDS,
    MarketoError,
    MarketoSandbox,
    SandboxOptions,
    request_id,
)

MAX_ACTIVITY_TYPES = 10
MAX_FILTER_VALUES = 300
MAX_URI_BYTES = 8 * 1024


def create_app(options: SandboxOptions | dict[str, Any] | None = None) -> FastAPI:
    """A fresh stand-in; its state (``MarketoSandbox``) is ``app.state.sandbox``."""
    if isinstance(options, dict):
        options = SandboxOptions(**options)
    app = FastAPI(title="Marketo stand-in", docs_url=None, redoc_url=None)
    sandbox = MarketoSandbox(options)
    app.state.sandbox = sandbox
    app.include_router(control_router)

    @app.api_route("/identity/oauth/token", methods=["GET", "POST"])
    def token(request: Request) -> JSONResponse:
        q = request.query_params
        if q.get("grant_type") != "client_credentials":
            return JSONResponse(
                {"error": "invalid_request", "error_description": "Unsupported grant type"}, 400
            )
        issued = sandbox.issue_token(q.get("client_id", ""), q.get("client_secret", ""))
        if issued is None:
            return JSONResponse({"error": "unauthorized", "error_description": "Bad client credentials"}, 401)
        access_token, expires_in = issued
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "bearer",
                "expires_in": expires_in,
                "scope": "api-user@sandbox.invalid",
            }
        )

    @app.get("/rest/v1/activities/pagingtoken.json")
    def paging_token(request: Request) -> JSONResponse:
        def answer() -> dict[str, Any]:
            raw = _required(request, "sinceDatetime")
            try:
                since = datetime.fromisoformat(raw.replace(" ", "+"))
            except ValueError:
                raise MarketoError("1003", "Invalid value for sinceDatetime") from None
            return {"nextPageToken": paging.from_datetime(_aware(since))}

        return _rest(sandbox, request, answer)

    @app.get("/rest/v1/activities.json")
    def activities(request: Request) -> JSONResponse:
        def answer() -> dict[str, Any]:
            token = _required(request, "nextPageToken")
            type_ids = _int_list(_list(request, "activityTypeIds"), "activityTypeIds")
            if not type_ids:
                raise MarketoError("1003", "activityTypeIds is required")
            if len(type_ids) > MAX_ACTIVITY_TYPES:
                raise MarketoError("1003", f"At most {MAX_ACTIVITY_TYPES} activityTypeIds")
            scanned, next_token, more = _scan(sandbox, request, token)
            result = [a.as_activity() for a in scanned if a.type_id in set(type_ids)]
            return {"result": result, "nextPageToken": next_token, "moreResult": more}

        return _rest(sandbox, request, answer)

    @app.get("/rest/v1/activities/leadchanges.json")
    def lead_changes(request: Request) -> JSONResponse:
        def answer() -> dict[str, Any]:
            token = _required(request, "nextPageToken")
            names = {n.lower() for n in _list(request, "fields")}
            if not names:
                raise MarketoError("1003", "fields is required")
            scanned, next_token, more = _scan(sandbox, request, token)
            result = [row for a in scanned if (row := a.as_lead_change(names)) is not None]
            return {"result": result, "nextPageToken": next_token, "moreResult": more}

        return _rest(sandbox, request, answer)

    @app.get("/rest/v1/leads.json")
    def leads(request: Request) -> JSONResponse:
        def answer() -> dict[str, Any]:
            filter_type = _required(request, "filterType")
            values = _list(request, "filterValues")
            if filter_type not in ("id", "email"):
                raise MarketoError("1003", "Stand-in supports filterType id and email only")
            if not values:
                raise MarketoError("1003", "filterValues is required")
            if len(values) > MAX_FILTER_VALUES:
                raise MarketoError("1003", f"At most {MAX_FILTER_VALUES} filterValues")
            fields = _list(request, "fields") or list(DEFAULT_LEAD_FIELDS)
            unknown = [f for f in fields if f not in LEAD_FIELDS]
            if unknown:
                raise MarketoError("1006", f"Field '{unknown[0]}' not found")
            found = sandbox.leads_by(filter_type, values)
            return {"result": [{f: lead.get(f) for f in ["id", *fields]} for lead in found]}

        return _rest(sandbox, request, answer)

    return app


def _rest(sandbox: MarketoSandbox, request: Request, answer: Callable[[], dict[str, Any]]) -> JSONResponse:
    """Run one REST call the Marketo way: admitted or refused first, errors as HTTP 200 bodies."""
    envelope: dict[str, Any] = {"requestId": request_id(), "warnings": [], "errors": []}
    if len(str(request.url.query).encode()) > MAX_URI_BYTES:
        return JSONResponse({"error": "Request-URI Too Long"}, 414)
    endpoint = f"{request.method} {request.url.path}"
    try:
        sandbox.admit(endpoint, request.headers.get("authorization"))
    except MarketoError as err:
        return _refusal(envelope, err)
    try:
        if sandbox.options.latency:
            time.sleep(sandbox.options.latency)
        try:
            body = answer()
        except MarketoError as err:
            return _refusal(envelope, err)
        return JSONResponse({**envelope, "success": True, **body})
    finally:
        sandbox.release()


def _refusal(envelope: dict[str, Any], err: MarketoError) -> JSONResponse:
    if err.http_status != 200:
        return JSONResponse({"error": err.message}, err.http_status)
    errors = [{"code": err.code, "message": err.message}]
    return JSONResponse({**envelope, "success": False, "errors": errors, "result": []})


def _scan(sandbox: MarketoSandbox, request: Request, token: str) -> tuple[list[Any], str, bool]:
    window = sandbox.options.scan_window
    batch = request.query_params.get("batchSize")
    if batch:
        window = max(1, min(window, _int_list([batch], "batchSize")[0]))
    try:
        return sandbox.scan(token, window)
    except ValueError:
        raise MarketoError("1003", "Invalid nextPageToken") from None


def _required(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise MarketoError("1003", f"{name} is required")
    return value


def _list(request: Request, name: str) -> list[str]:
    """Marketo takes comma-separated values; the spec says repeated parameters: accept both."""
    return [part for raw in request.query_params.getlist(name) for part in raw.split(",") if part]


def _int_list(values: list[str], name: str) -> list[int]:
    try:
        return [int(v) for v in values]
    except ValueError:
        raise MarketoError("1003", f"{name} must be integers") from None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
