from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from iterable_recipes.clients.iterable_models import SUBSCRIPTION_FIELDS
from iterable_recipes.config_files import ConfigError
from iterable_recipes.customersdot.contract import (
    parse_customersdot_event,
)
from iterable_recipes.customersdot.mapping import is_forwarded, load_mapping, to_iterable
from iterable_recipes.optouts.contract import MarketoUnsubscribe
from iterable_recipes.receiver.app import openapi_schemas


def event(type_: str = "saas_trial_started", **data: object) -> dict:
    return {
        "version": "1",
        "id": "evt-1",
        "type": type_,
        "occurred_at": "2024-06-11T10:00:00Z",
        "person": {"email": "person@example.com", "user_id": 42},
        "data": data,
    }


def test_trial_maps_to_saas_trials_with_profile_and_event_fields() -> None:
    parsed = parse_customersdot_event(
        json.dumps(event(company="ACME", latest_trial_start_date="2024-06-11", userRole="dev"))
    )
    assert parsed.person.user_id == "42"
    mapped = to_iterable(parsed, load_mapping())
    assert mapped is not None, "a trial is forwarded"
    profile, name, fields = mapped
    assert name == "SaaS Trials"
    assert fields == {"company": "ACME", "latest_trial_start_date": "2024-06-11", "userRole": "dev"}
    assert profile == fields, "absent fields are left out, never sent as null"


@pytest.mark.parametrize(("kind", "forwarded"), [("company", True), ("team", True), ("personal", False)])
def test_free_registration_is_forwarded_for_company_and_team_only(kind: str, forwarded: bool) -> None:
    parsed = parse_customersdot_event(json.dumps(event("free_registration", registration_kind=kind)))
    result = to_iterable(parsed, load_mapping())
    assert (result is not None) is forwarded
    assert is_forwarded(parsed, load_mapping()) is forwarded  # the receiver's question, same answer
    if result:
        assert result[1] == "SaaS Free Registration"
        assert "registration_kind" not in result[2]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"type": "nope"}, "type"),
        ({"person": {"user_id": 1}}, "email"),
        ({"version": "2"}, "version"),
        ({"id": "has spaces"}, "id"),
        ({"occurred_at": "2024-06-11T10:00:00"}, "occurred_at"),
        ({"data": {"companyNamespce": True}}, "companyNamespce"),
    ],
)
def test_the_contract_refuses_bad_events(change: dict, where: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_customersdot_event(json.dumps(event() | change))
    assert where in str(err.value)


def test_marketo_unsubscribe_body() -> None:
    body = MarketoUnsubscribe.model_validate(
        {"email": "lead@example.com", "leadId": 123, "unsubscribedAt": "2024-06-11 10:00:00", "extra": 1}
    )
    assert body.leadId == "123"
    with pytest.raises(ValidationError):
        MarketoUnsubscribe.model_validate({"leadId": 1, "unsubscribedAt": "x"})


def test_openapi_schema_is_a_discriminated_union() -> None:
    body, components = openapi_schemas()
    assert body["discriminator"]["propertyName"] == "type"
    assert {"SaasTrialStarted", "FreeRegistration", "NamespaceUserInvited", "MarketoUnsubscribe"} <= set(
        components
    )


def test_a_bad_mapping_file_names_the_file_key_and_problem(tmp_path: Path) -> None:
    bad = tmp_path / "mapping.yaml"
    bad.write_text("events:\n  saas_trial_started:\n    event_nam: SaaS Trials\n")
    with pytest.raises(ConfigError, match=r"mapping.yaml: events.saas_trial_started.event_nam"):
        load_mapping(bad)
    unknown_field = tmp_path / "fields.yaml"
    unknown_field.write_text(
        "events:\n"
        "  saas_trial_started: {event_name: A, event_fields: [compny]}\n"
        "  free_registration: {event_name: B}\n"
        "  namespace_user_invited: {event_name: C}\n"
    )
    with pytest.raises(ConfigError, match=r"saas_trial_started.event_fields.compny: no such field"):
        load_mapping(unknown_field)


@pytest.mark.parametrize("target", sorted(SUBSCRIPTION_FIELDS))
@pytest.mark.parametrize("part", ["profile_fields", "event_fields"])
def test_a_subscription_field_is_refused_as_a_mapping_target(tmp_path: Path, target: str, part: str) -> None:
    # users/bulkUpdate writes these arrays as sent: a mapping naming one would overwrite consent.
    path = tmp_path / "mapping.yaml"
    path.write_text(
        "events:\n"
        f"  saas_trial_started: {{event_name: A, {part}: {{company: {target}}}}}\n"
        "  free_registration: {event_name: B}\n"
        "  namespace_user_invited: {event_name: C}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_mapping(path)
    message = str(err.value)
    assert f"{path}: events.saas_trial_started.{part}.company" in message
    assert f"{target!r} is a subscription field" in message
