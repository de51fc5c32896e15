"""Builds the stand-in's FastAPI app: the gate, the ``/api`` routes and the ``/_sandbox`` control API."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from dev.standins.iterable import api_routes, control_routes
from dev.standins.iterable.gate import TRANSPORT_KEY, Gate
from dev.standins.iterable.options import SandboxOptions
from dev.standins.iterable.store import IterableSandbox


class SandboxFastAPI(FastAPI):
    """FastAPI that notes the connection's transport in the scope, so a fault can drop the connection."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Find uvicorn's transport behind ``send`` (a bound method of its request cycle)."""
        if scope["type"] == "http":
            cycle = getattr(send, "__self__", None)
            scope[TRANSPORT_KEY] = getattr(cycle, "transport", None)
        await super().__call__(scope, receive, send)


def create_app(options: SandboxOptions | None = None) -> FastAPI:
    """A new stand-in with its own state in ``app.state.sandbox``."""
    sandbox = IterableSandbox(options)
    app = SandboxFastAPI(
        title="Iterable sandbox", docs_url="/_sandbox/docs", openapi_url="/_sandbox/openapi.json"
    )
    app.state.sandbox = sandbox
    app.add_middleware(Gate, sandbox=sandbox)
    app.include_router(api_routes.router)
    app.include_router(control_routes.router)
    return app
