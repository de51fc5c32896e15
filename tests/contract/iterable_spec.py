"""Check requests against Iterable's Swagger 2.0 spec with unknown fields forbidden, for any test to use.

``validate_iterable_request(method, path, body, query)`` finds the operation by path template and
method, checks path and query parameters, and validates the body against the body parameter's schema
after two changes: every ``$ref`` is resolved against the document, and every object schema that
declares ``properties`` gets ``additionalProperties: false`` (the spec's definitions allow any field,
so a misspelt one would pass). Free-form objects (``dataFields``, ``params``: ``type: object`` without
``properties``) stay open, since their keys are the project's own fields.

``SpecCheckingTransport(inner)`` wraps any httpx transport and validates each request before passing
it on; violations are recorded and raised as ``SpecViolation``.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from typing import Any
from urllib.parse import unquote

import httpx
from jsonschema import Draft4Validator

from tests.conftest import reference_file


class SpecViolation(AssertionError):
    """A request the spec does not allow."""


@cache
def _document() -> dict[str, Any]:
    with reference_file("iterable", "api-docs.json").open(encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


@cache
def _routes() -> list[tuple[re.Pattern[str], str, int]]:
    routes = []
    for template in _document()["paths"]:
        pattern = re.sub(r"\\\{[^/]+?\\\}", "([^/]+)", re.escape(template))
        routes.append((re.compile(f"^{pattern}$"), template, template.count("{")))
    # A literal segment beats a template: /api/users/byUserId is not /api/users/{email}.
    routes.sort(key=lambda route: route[2])
    return routes


def find_operation(method: str, path: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The spec's (path template, operation, path parameters) for ``method`` ``path``."""
    method = method.lower()
    for pattern, template, _ in _routes():
        match = pattern.match(path)
        if match and method in _document()["paths"][template]:
            names = re.findall(r"\{([^/]+?)\}", template)
            values = {name: unquote(value) for name, value in zip(names, match.groups(), strict=True)}
            return template, _document()["paths"][template][method], values
    raise SpecViolation(f"{method.upper()} {path}: no such operation in the spec")


def _resolve(schema: Any, seen: tuple[str, ...] = ()) -> Any:
    """``schema`` with $refs inlined and unknown properties forbidden on every object with properties."""
    if isinstance(schema, list):
        return [_resolve(item, seen) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name in seen:
            return {}  # a recursive definition: stop here rather than loop
        return _resolve(_document()["definitions"][name], (*seen, name))
    out = {key: _resolve(value, seen) for key, value in schema.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


@cache
def _body_validator(template: str, method: str) -> Draft4Validator | None:
    operation = _document()["paths"][template][method]
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "body":
            return Draft4Validator(_resolve(copy.deepcopy(parameter["schema"])))
    return None


def _check_simple(parameter: dict[str, Any], value: str) -> str | None:
    kind = parameter.get("type")
    if kind == "integer" and not re.fullmatch(r"-?\d+", value):
        return f"{parameter['in']} parameter {parameter['name']} must be an integer"
    if kind == "boolean" and value not in {"true", "false"}:
        return f"{parameter['in']} parameter {parameter['name']} must be a boolean"
    if "enum" in parameter and value not in parameter["enum"]:
        return f"{parameter['in']} parameter {parameter['name']} not in {parameter['enum']}"
    return None


def spec_errors(method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> list[str]:
    """Every way this request breaks the spec (empty when it conforms)."""
    template, operation, path_values = find_operation(method, path)
    query = query or {}
    errors: list[str] = []
    declared_query = set()
    for parameter in operation.get("parameters", []):
        where = parameter.get("in")
        if where == "path":
            problem = _check_simple(parameter, path_values.get(parameter["name"], ""))
            if problem:
                errors.append(problem)
        elif where == "query":
            declared_query.add(parameter["name"])
            if parameter["name"] in query:
                problem = _check_simple(parameter, query[parameter["name"]])
                if problem:
                    errors.append(problem)
            elif parameter.get("required"):
                errors.append(f"query parameter {parameter['name']} is required")
    errors.extend(f"unknown query parameter {name}" for name in sorted(set(query) - declared_query))
    validator = _body_validator(template, method.lower())
    if validator is None:
        if body not in (None, b"", ""):
            errors.append("this operation takes no body")
        return errors
    if body is None:
        errors.append("a body is required")
        return errors
    for failure in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
        location = "/".join(str(p) for p in failure.absolute_path) or "(body)"
        errors.append(f"{location}: {failure.message}")
    return errors


def validate_iterable_request(
    method: str, path: str, body: Any = None, query: dict[str, str] | None = None
) -> None:
    """Raise ``SpecViolation`` listing every way this request breaks the spec."""
    errors = spec_errors(method, path, body, query)
    if errors:
        raise SpecViolation(f"{method.upper()} {path}: " + "; ".join(errors))


class SpecCheckingTransport(httpx.BaseTransport):
    """Validates each request against the spec, then hands it to ``inner``.

    ``checked`` lists (method, path template) of requests that passed, ``sent`` the same with each
    one's concrete path and JSON body; ``violations`` the messages of those that did not (they raise
    ``SpecViolation`` and never reach ``inner``).
    """

    def __init__(self, inner: httpx.BaseTransport) -> None:
        # Read the spec now, in the test's own thread: without it the test is skipped (or fails in CI)
        # here, never inside a client's worker thread, where a skip would only end that thread.
        _routes()
        self.inner = inner
        self.checked: list[tuple[str, str]] = []
        self.sent: list[tuple[str, str, Any]] = []
        self.violations: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Validate ``request``; forward it when it conforms."""
        raw = request.read()
        path = request.url.raw_path.split(b"?", 1)[0].decode("ascii")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        query = dict(request.url.params)
        try:
            validate_iterable_request(request.method, path, body, query)
        except SpecViolation as violation:
            self.violations.append(str(violation))
            raise
        self.checked.append((request.method, find_operation(request.method, path)[0]))
        self.sent.append((request.method, path, body))
        return self.inner.handle_request(request)

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()
