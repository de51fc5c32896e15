"""The versioned contract of what CustomersDot posts to us, and the Marketo unsubscribe webhook body.

Version "1". The receiver publishes these models as JSON Schema in its OpenAPI document. Unknown fields
are refused, so a misspelt field fails loudly instead of silently dropping data.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

CONTRACT_VERSION = "1"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
# Letters, digits and hyphens: the event id becomes Iterable's event id as is.
EVENT_ID_PATTERN = r"^[A-Za-z0-9-]{1,200}$"


def _int_to_str(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Email = Annotated[str, Field(min_length=3, max_length=254, pattern=EMAIL_PATTERN)]
UserId = Annotated[str, BeforeValidator(_int_to_str), Field(min_length=1, max_length=64)]
ShortText = Annotated[str, Field(max_length=255)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Person(_Strict):
    """Who the event is about: the email is required (Iterable's key), the GitLab user id when known."""

    email: Email
    user_id: UserId | None = None


class ProfileData(_Strict):
    """The fields GitLab's handbook documents for the SaaS Trials and SaaS Free Registration events."""

    company: ShortText | None = None
    companyNamespace: bool | None = Field(None, description="The namespace is set up for a company")
    country: ShortText | None = None
    employeeBucket: ShortText | None = Field(None, examples=["1-99"])
    firstName: ShortText | None = None
    lastName: ShortText | None = None
    latest_trial_start_date: date | None = None
    signupReason: ShortText | None = Field(None, examples=["I want to explore GitLab"])
    state: ShortText | None = None
    userRole: ShortText | None = Field(None, examples=["product_designer"])


class FreeRegistrationData(ProfileData):
    """A free registration's fields, plus who it is for: personal sign-ups are stored, not forwarded."""

    registration_kind: Literal["company", "team", "personal"]


class InvitedUserData(ProfileData):
    """An invitation's fields: the handbook's profile fields and the namespace the person joined."""

    namespace_id: UserId | None = None
    inviter_user_id: UserId | None = None


class _Envelope(_Strict):
    version: Literal["1"] = Field(description="Contract version")
    id: str = Field(pattern=EVENT_ID_PATTERN, description="CustomersDot's event id; a repeat is stored once")
    occurred_at: AwareDatetime
    person: Person


class SaasTrialStarted(_Envelope):
    """A person started a GitLab SaaS trial (Iterable event "SaaS Trials")."""

    type: Literal["saas_trial_started"]
    data: ProfileData


class FreeRegistration(_Envelope):
    """A free GitLab.com registration (Iterable event "SaaS Free Registration" for company and team)."""

    type: Literal["free_registration"]
    data: FreeRegistrationData


class NamespaceUserInvited(_Envelope):
    """A person was invited to a namespace (the invited-user onboarding event)."""

    type: Literal["namespace_user_invited"]
    data: InvitedUserData


CustomersDotEvent = Annotated[
    SaasTrialStarted | FreeRegistration | NamespaceUserInvited,
    Field(discriminator="type"),
]
EVENT_TYPES = ("saas_trial_started", "free_registration", "namespace_user_invited")
customersdot_event_adapter: TypeAdapter[CustomersDotEvent] = TypeAdapter(CustomersDotEvent)


def parse_customersdot_event(body: bytes | str) -> SaasTrialStarted | FreeRegistration | NamespaceUserInvited:
    """Validate a raw JSON body; raises pydantic.ValidationError (its errors name the field)."""
    return customersdot_event_adapter.validate_json(body)


def is_forwardable(event: SaasTrialStarted | FreeRegistration | NamespaceUserInvited) -> bool:
    """Personal free registrations are kept but never sent to Iterable (GitLab syncs team/company only)."""
    return not (isinstance(event, FreeRegistration) and event.data.registration_kind == "personal")


class MarketoUnsubscribe(BaseModel):
    """The body a Marketo "Call Webhook" step posts when a lead's Unsubscribed flag becomes true.

    Built from Marketo tokens, e.g. ``{"email": "{{lead.Email Address}}", "leadId": "{{lead.Id}}",
    "unsubscribedAt": "{{system.dateTime}}"}``. Extra fields are ignored: admins edit the template by hand.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    email: Email
    leadId: UserId
    unsubscribedAt: str = Field(
        min_length=1, max_length=64, description="Marketo's {{system.dateTime}} token"
    )


def openapi_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """(request body schema, component schemas) of the CustomersDot contract, for the OpenAPI document."""
    schema = customersdot_event_adapter.json_schema(ref_template="#/components/schemas/{model}")
    components = schema.pop("$defs", {})
    components["MarketoUnsubscribe"] = MarketoUnsubscribe.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    return schema, components
