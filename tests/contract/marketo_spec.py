"""Check Marketo requests (path, query) and answers against Marketo's Swagger 2.0 specs, for any test to use.

``validate_marketo_request(method, url)`` finds the operation in swagger-mapi.json or
swagger-identity.json by path template and method, then checks the query: every required parameter
present and non-empty, no parameter the operation does not declare, and each value of the declared
simple type (integer, number, boolean, string with its enum and date-time format). Array parameters are
accepted comma-separated (what Marketo's docs and every parameter description say) or repeated (the
spec's ``collectionFormat: multi``), each item checked against ``items``.

``validate_marketo_response(method, url, body)`` validates a 200 body against the operation's response
schema, with one overlay: ``Attribute.value`` is declared ``type: object`` but Marketo sends strings
and numbers there, so it is left untyped.

``MarketoSpecCheckingTransport(inner)`` validates each request before passing it on (and each JSON
answer, when ``check_responses``); it counts what it checked so a test can prove it saw traffic.
Messages name parameters, never their values: the identity call carries the client secret.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx
from jsonschema import Draft4Validator

from tests.conftest import reference_file

SPEC_FILES = ("swagger-mapi.json", "swagger-identity.json")


class MarketoSpecViolation(AssertionError):
    """A request or answer the Marketo spec does not allow."""


@cache
def _documents() -> tuple[dict[str, Any], ...]:
    docs = []
    for name in SPEC_FILES:
        with reference_file("marketo", name).open(encoding="utf-8") as handle:
            docs.append(json.load(handle))
    return tuple(docs)


@cache
def _routes() -> list[tuple[re.Pattern[str], str, int, int]]:
    routes = []
    for index, doc in enumerate(_documents()):
        for template in doc["paths"]:
            pattern = re.sub(r"\\\{[^/]+?\\\}", "([^/]+)", re.escape(template))
            routes.append((re.compile(f"^{pattern}$"), template, template.count("{"), index))
    routes.sort(key=lambda route: route[2])  # literal segments beat templates
    return routes


def find_operation(method: str, path: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """The (spec document, operation, path parameter values) for ``method`` ``path``."""
    method = method.lower()
    for pattern, template, _, index in _routes():
        match = pattern.match(path)
        doc = _documents()[index]
        if match and method in doc["paths"][template]:
            names = re.findall(r"\{([^/]+?)\}", template)
            values = {n: unquote(v) for n, v in zip(names, match.groups(), strict=True)}
            return doc, doc["paths"][template][method], values
    raise MarketoSpecViolation(f"{method.upper()} {path}: no such operation in the Marketo specs")


def _type_problem(value: str, spec: dict[str, Any]) -> str | None:
    """Why ``value`` does not fit the simple type ``spec``, or None."""
    kind = spec.get("type", "string")
    if kind == "integer" and not re.fullmatch(r"-?\d+", value):
        return "is not an integer"
    if kind == "number":
        try:
            float(value)
        except ValueError:
            return "is not a number"
    if kind == "boolean" and value not in ("true", "false"):
        return "is not a boolean"
    if "enum" in spec and value not in spec["enum"]:
        return "is not one of the allowed values"
    if spec.get("format") == "date-time":
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return "is not an ISO 8601 date-time"
    return None


def _check_value(name: str, raw: list[str], spec: dict[str, Any], problems: list[str]) -> None:
    if spec.get("type") == "array":
        items = [part for value in raw for part in value.split(",")]
        if any(not part for part in items):
            problems.append(f"{name} has an empty item")
        for part in items:
            why = _type_problem(part, spec.get("items", {}))
            if why:
                problems.append(f"an item of {name} {why}")
                return
        return
    if len(raw) > 1:
        problems.append(f"{name} is repeated but not an array")
    for value in raw:
        why = _type_problem(value, spec)
        if why:
            problems.append(f"{name} {why}")


def validate_marketo_request(method: str, url: str | httpx.URL) -> None:
    """Raise ``MarketoSpecViolation`` listing every way ``method url`` breaks the Marketo specs."""
    parts = urlsplit(str(url))
    _, operation, path_values = find_operation(method, parts.path)
    declared = {p["name"]: p for p in operation.get("parameters", [])}
    query: dict[str, list[str]] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(name, []).append(value)
    problems: list[str] = []
    for name in sorted(set(query) - {n for n, p in declared.items() if p.get("in") == "query"}):
        problems.append(f"unknown query parameter {name}")
    for name, spec in declared.items():
        where = spec.get("in")
        if where == "path":
            _check_value(name, [path_values.get(name, "")], spec, problems)
        elif where == "query":
            values = query.get(name)
            if not values or all(v == "" for v in values):
                if spec.get("required"):
                    problems.append(f"required query parameter {name} is missing")
                continue
            _check_value(name, values, spec, problems)
    if problems:
        raise MarketoSpecViolation(f"{method.upper()} {parts.path}: " + "; ".join(problems))


def _resolve(schema: Any, doc: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """``schema`` with $refs inlined, and ``Attribute.value`` left untyped (see module docstring)."""
    if isinstance(schema, list):
        return [_resolve(item, doc, seen) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name in seen:
            return {}
        resolved = copy.deepcopy(doc["definitions"][name])
        if name == "Attribute":
            resolved["properties"]["value"] = {}
        return _resolve(resolved, doc, (*seen, name))
    return {key: _resolve(value, doc, seen) for key, value in schema.items()}


def validate_marketo_response(method: str, url: str | httpx.URL, body: Any) -> None:
    """Raise ``MarketoSpecViolation`` when a 200 ``body`` does not fit the operation's response schema."""
    doc, operation, _ = find_operation(method, urlsplit(str(url)).path)
    schema = operation.get("responses", {}).get("200", {}).get("schema")
    if schema is None:
        return
    errors = sorted(Draft4Validator(_resolve(schema, doc)).iter_errors(body), key=str)
    if errors:
        # The validator's name, not its message: a message quotes the value, which may be an email.
        where = "/".join(str(p) for p in errors[0].absolute_path)
        path = urlsplit(str(url)).path
        raise MarketoSpecViolation(f"{method} {path} answer at '{where}' fails '{errors[0].validator}'")


def require_specs() -> None:
    """Read Marketo's specs now, in the calling thread: without them the test is skipped (fails in CI)
    here, never inside a client's worker thread, where a skip would only end that thread."""
    _routes()


class MarketoSpecCheckingTransport(httpx.BaseTransport):
    """Validates each request (and optionally each 200 JSON answer) before handing it on."""

    def __init__(self, inner: httpx.BaseTransport | None = None, *, check_responses: bool = True) -> None:
        require_specs()
        self.inner = inner or httpx.HTTPTransport()
        self.check_responses = check_responses
        self.checked: list[str] = []
        self.violations: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Check ``request`` against the specs, then send it through the inner transport."""
        try:
            validate_marketo_request(request.method, request.url)
        except MarketoSpecViolation as exc:
            self.violations.append(str(exc))
            raise
        self.checked.append(f"{request.method} {request.url.path}")
        response = self.inner.handle_request(request)
        if self.check_responses and response.status_code == 200:
            response.read()
            try:
                body = response.json()
            except ValueError:
                body = None
            if body is not None:
                try:
                    validate_marketo_response(request.method, request.url, body)
                except MarketoSpecViolation as exc:
                    self.violations.append(str(exc))
                    raise
        return response

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()
