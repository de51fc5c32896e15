"""Typed shapes of the Marketo records the opt-out poll reads: activities, lead changes, leads, pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

UNSUBSCRIBE_EMAIL = 9
DATA_VALUE_CHANGE = 13
_TRUE_VALUES = {"true", "1", "yes"}
_FALSE_VALUES = {"false", "0", "no"}


class Attribute(BaseModel):
    """A secondary attribute of an activity; Marketo leaves out attributes that have no value."""

    model_config = ConfigDict(extra="allow")

    name: str
    value: Any = None


class LeadChangeField(BaseModel):
    """One field changed by a Data Value Change (only on ``activities/leadchanges.json``)."""

    model_config = ConfigDict(extra="allow")

    id: int | None = None
    name: str
    newValue: str | None = None
    oldValue: str | None = None


class Activity(BaseModel):
    """An activity or a lead change; ``marketoGUID`` is its identity (``id`` may be absent or reused)."""

    model_config = ConfigDict(extra="allow")

    marketoGUID: str | None = None
    id: int | None = None
    leadId: int
    activityDate: datetime
    activityTypeId: int
    primaryAttributeValue: str | None = None
    primaryAttributeValueId: int | None = None
    attributes: list[Attribute] = Field(default_factory=list)
    fields: list[LeadChangeField] = Field(default_factory=list)

    @property
    def key(self) -> str:
        """A stable identity: the GUID, else the legacy integer id (instances not yet migrated)."""
        return self.marketoGUID or f"id:{self.id}"

    def new_email(self) -> str | None:
        """The address a lead change of ``email`` gives the lead (None for other records)."""
        if self.activityTypeId == UNSUBSCRIBE_EMAIL:
            return None
        return next((f.newValue for f in self.fields if f.name.lower() == "email" and f.newValue), None)

    def sets_subscribed_again(self) -> bool:
        """Whether this record is a lead change of ``unsubscribed`` to false (a re-subscription)."""
        return self.activityTypeId != UNSUBSCRIBE_EMAIL and any(
            f.name.lower() == "unsubscribed" and (f.newValue or "").strip().lower() in _FALSE_VALUES
            for f in self.fields
        )

    def sets_unsubscribed(self) -> bool:
        """Whether this record says the lead's ``unsubscribed`` flag became true.

        Type 9 is the email unsubscribe link; a lead change counts when its ``unsubscribed`` field's new
        value is true (forms, the Salesforce opt-out sync and flow steps only log that).
        """
        if self.activityTypeId == UNSUBSCRIBE_EMAIL:
            return True
        return any(
            f.name.lower() == "unsubscribed" and (f.newValue or "").strip().lower() in _TRUE_VALUES
            for f in self.fields
        )


class Lead(BaseModel):
    """A lead with the fields asked for; the email stays out of ``repr`` so a logged lead leaks none."""

    model_config = ConfigDict(extra="allow")

    id: int
    email: str | None = Field(default=None, repr=False)
    unsubscribed: bool | None = None


class ActivityPage(BaseModel):
    """One page of activities or lead changes, with the cursor to store once the page is handled.

    ``items`` may be empty while ``more_result`` is true: Marketo scans a fixed window of activities
    of every type per call. ``next_page_token`` is where the next call (or the next poll) starts.
    """

    items: list[Activity]
    next_page_token: str
    more_result: bool
