"""The stand-in's control API (/_sandbox/...): seed leads and unsubscribes, inject faults, read counts.

The demo drives a stand-in running in another process through these routes; tests in the same process
may use ``app.state.sandbox`` directly instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from dev.standins.marketo.state import Faults, How, MarketoSandbox

router = APIRouter(prefix="/_sandbox")


class LeadIn(BaseModel):
    """A lead to seed."""

    id: int
    email: str
    unsubscribed: bool = False


class LeadsIn(BaseModel):
    """Leads to seed."""

    leads: list[LeadIn]


class UnsubscribeIn(BaseModel):
    """An unsubscribe happening."""

    lead_id: int
    how: How = "link"
    at: datetime | None = None


class NoiseIn(BaseModel):
    """Activities that are not unsubscribes."""

    n: int
    at: datetime | None = None


def _sandbox(request: Request) -> MarketoSandbox:
    sandbox: MarketoSandbox = request.app.state.sandbox
    return sandbox


@router.post("/leads")
def seed_leads(body: LeadsIn, request: Request) -> dict[str, int]:
    """Add or replace leads."""
    return {"added": _sandbox(request).add_leads([lead.model_dump() for lead in body.leads])}


@router.post("/unsubscribe")
def unsubscribe(body: UnsubscribeIn, request: Request) -> dict[str, list[str]]:
    """Log an unsubscribe of an existing lead; 404 for an unknown lead."""
    try:
        guids = _sandbox(request).unsubscribe(body.lead_id, body.how, body.at)
    except KeyError:
        raise HTTPException(404, f"no lead {body.lead_id}") from None
    return {"activities": guids}


@router.post("/noise")
def noise(body: NoiseIn, request: Request) -> dict[str, int]:
    """Log activities of other types and changes of other fields."""
    return {"added": _sandbox(request).add_noise(body.n, body.at)}


@router.post("/faults")
def faults(body: dict[str, Any], request: Request) -> dict[str, Any]:
    """Merge fault settings (fields of ``Faults``); unknown names are a 422."""
    unknown = set(body) - set(Faults.model_fields)
    if unknown:
        raise HTTPException(422, f"unknown faults: {sorted(unknown)}")
    return _sandbox(request).set_faults(**body).model_dump()


@router.post("/reset")
def reset(request: Request) -> dict[str, bool]:
    """Forget everything but the options."""
    _sandbox(request).reset()
    return {"reset": True}


@router.get("/stats")
def stats(request: Request) -> dict[str, Any]:
    """Calls per endpoint, refusals per code, tokens issued, highest concurrency."""
    return _sandbox(request).stats()
