"""The versioned contract of what CustomersDot posts to us (version "1").

The receiver publishes these models as JSON Schema in its OpenAPI document. Unknown fields are refused,
so a misspelt field fails loudly instead of silently dropping data.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from iterable_recipes.identities import Email, UserId

CONTRACT_VERSION = "1"
# Letters, digits and hyphens: the event id becomes Iterable's event id as is.
EVENT_ID_PATTERN = r"^[A-Za-z0-9-]{1,200}$"


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
    """Validate a raw JSON body; raises pydantic.ValidationError (its errors name the field).

    Strict, as the published JSON Schema reads: a number is no date, a string no boolean.
    """
    return customersdot_event_adapter.validate_json(body, strict=True)


def is_forwardable(event: SaasTrialStarted | FreeRegistration | NamespaceUserInvited) -> bool:
    """Personal free registrations are kept but never sent to Iterable (GitLab syncs team/company only)."""
    return not (isinstance(event, FreeRegistration) and event.data.registration_kind == "personal")
