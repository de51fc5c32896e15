"""The body a Marketo "Call Webhook" step posts to us when a lead's Unsubscribed flag becomes true."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from iterable_recipes.identities import TypedEmail, UserId


class MarketoUnsubscribe(BaseModel):
    """The body a Marketo "Call Webhook" step posts when a lead's Unsubscribed flag becomes true.

    Built from Marketo tokens, e.g. ``{"email": "{{lead.Email Address}}", "leadId": "{{lead.Id}}",
    "unsubscribedAt": "{{system.dateTime}}"}``. Extra fields are ignored: admins edit the template by hand.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    email: TypedEmail  # Marketo sends the address as typed; it is stored normalised
    leadId: UserId
    unsubscribedAt: str = Field(
        min_length=1, max_length=64, description="Marketo's {{system.dateTime}} token"
    )


def parse_marketo_unsubscribe(body: bytes | str) -> MarketoUnsubscribe:
    """Validate a raw JSON body strictly, as the published JSON Schema reads; raises ValidationError."""
    return MarketoUnsubscribe.model_validate_json(body, strict=True)
