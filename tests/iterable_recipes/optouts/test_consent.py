from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from iterable_recipes.clients.iterable_models import Channel, MessageType
from iterable_recipes.config_files import ConfigError
from iterable_recipes.optouts.consent import (
    DEFAULT_CONSENT_POLICY_PATH,
    ConsentError,
    ConsentPolicy,
    load_consent_policy,
)
from iterable_recipes.resources import Resources

SHIPPED: dict[str, Any] = yaml.safe_load(DEFAULT_CONSENT_POLICY_PATH.read_text())

# Iterable's answers as the stand-in seeds them (GET /api/channels, GET /api/messageTypes).
ITERABLE_CHANNELS = [
    {"id": 1, "name": "Marketing Email", "channelType": "Marketing", "messageMedium": "Email"},
    {"id": 2, "name": "Transactional Email", "channelType": "Transactional", "messageMedium": "Email"},
    {"id": 3, "name": "Marketing SMS", "channelType": "Marketing", "messageMedium": "SMS"},
]
ITERABLE_TYPES = [
    {"id": 101, "name": "GitLab Marketing", "channelId": 1, "subscriptionPolicy": "OptIn"},
    {"id": 102, "name": "Marketing Message", "channelId": 1, "subscriptionPolicy": "OptOut"},
    {"id": 201, "name": "Receipts", "channelId": 2, "subscriptionPolicy": "OptOut"},
    {"id": 301, "name": "SMS Promotions", "channelId": 3, "subscriptionPolicy": "OptIn"},
]


def write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "consent.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def refused(tmp_path: Path, raw: dict[str, Any]) -> str:
    path = write(tmp_path, raw)
    with pytest.raises(ConsentError) as info:
        load_consent_policy(path)
    message = str(info.value)
    assert str(path) in message
    return message


@pytest.fixture
def policy() -> ConsentPolicy:
    return load_consent_policy(DEFAULT_CONSENT_POLICY_PATH)


@pytest.fixture
def raw() -> dict[str, Any]:
    return copy.deepcopy(SHIPPED)


# ---- the shipped file ---------------------------------------------------------------------------


def test_shipped_policy_matches_the_stand_in_seed(policy: ConsentPolicy) -> None:
    assert policy.main_message_type.name == "GitLab Marketing"
    assert policy.main_message_type.subscription_policy == "OptIn"
    assert policy.marketing_email_channel.name == "Marketing Email"
    marketing_message = policy.message_type(102)
    assert marketing_message is not None and marketing_message.subscription_policy == "OptOut"
    assert policy.opt_out.unsubscribe_channel_ids == [1]
    policy.check_against(ITERABLE_CHANNELS, ITERABLE_TYPES)


def test_consent_policy_path_setting_picks_another_file(
    tmp_path: Path, raw: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    raw["message_types"][0]["id"] = 111
    raw["main_message_type_id"] = 111
    monkeypatch.setenv("CONSENT_POLICY_PATH", str(write(tmp_path, raw)))
    assert Resources.from_settings().consent_policy.main_message_type_id == 111


def test_consent_error_is_a_config_error() -> None:
    assert issubclass(ConsentError, ConfigError)


# ---- refused at load ----------------------------------------------------------------------------


def test_main_type_with_optout_policy_is_refused(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["main_message_type_id"] = 102
    message = refused(tmp_path, raw)
    assert "main_message_type_id" in message
    assert "'Marketing Message'" in message and "OptOut" in message


def test_optout_leaving_only_the_transactional_channel_is_refused(
    tmp_path: Path, raw: dict[str, Any]
) -> None:
    raw["opt_out"] = {"unsubscribe_channel_ids": [2]}
    message = refused(tmp_path, raw)
    assert "reachable on marketing channel 1 'Marketing Email'" in message
    assert "opt_out.unsubscribe_channel_ids must include it" in message


def test_optout_unsubscribing_another_channel_but_not_marketing_email_is_refused(
    tmp_path: Path, raw: dict[str, Any]
) -> None:
    raw["opt_out"] = {"unsubscribe_channel_ids": [3]}
    assert "reachable on marketing channel 1 'Marketing Email'" in refused(tmp_path, raw)


def test_optout_without_any_action_is_refused(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["opt_out"] = {}
    assert "reachable on marketing channel 1" in refused(tmp_path, raw)


def test_the_retired_list_of_types_to_remove_is_refused_saying_why(
    tmp_path: Path, raw: dict[str, Any]
) -> None:
    # A file still listing types to remove would claim an opt-out writes them; it never does.
    raw["opt_out"]["remove_subscribed_message_type_ids"] = [101, 102]
    message = refused(tmp_path, raw)
    assert "remove_subscribed_message_type_ids is no longer used" in message
    assert "delete the key" in message


def test_type_on_unknown_channel_is_refused(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["message_types"].append(
        {"id": 901, "name": "Push News", "channel_id": 9, "subscription_policy": "OptIn"}
    )
    assert "message type 901 'Push News' references unknown channel 9" in refused(tmp_path, raw)


def test_marketing_email_channel_must_be_marketing_email(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["marketing_email_channel_id"] = 2
    message = refused(tmp_path, raw)
    assert "marketing_email_channel_id" in message and "Transactional Email, not Marketing Email" in message


def test_unknown_ids_in_the_optout_and_main_type_are_refused(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["main_message_type_id"] = 555
    raw["opt_out"]["unsubscribe_channel_ids"] = [1, 7]
    message = refused(tmp_path, raw)
    assert "main_message_type_id: message type 555 is not listed" in message
    assert "channel 7 is not listed" in message


def test_duplicate_ids_and_unknown_keys_are_refused(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["channels"].append(dict(raw["channels"][0]))
    assert "channels: an id appears twice" in refused(tmp_path, raw)
    raw = copy.deepcopy(SHIPPED)
    raw["opt_out"]["unsubscribe_message_type_ids"] = [102]
    assert "opt_out.unsubscribe_message_type_ids" in refused(tmp_path, raw)


def test_missing_file_is_a_consent_error(tmp_path: Path) -> None:
    with pytest.raises(ConsentError, match="file not found"):
        load_consent_policy(tmp_path / "absent.yaml")


# ---- checked against Iterable -------------------------------------------------------------------


def test_check_against_names_every_disagreement(policy: ConsentPolicy) -> None:
    channels = [dict(c) for c in ITERABLE_CHANNELS if c["id"] != 3]
    channels[0]["name"] = "Newsletters"
    types = [dict(t) for t in ITERABLE_TYPES]
    types[1]["subscriptionPolicy"] = "OptIn"
    types[2]["channelId"] = 1
    with pytest.raises(ConsentError) as info:
        policy.check_against(channels, types)
    message = str(info.value)
    assert "channel 1 'Marketing Email': name is 'Newsletters' in Iterable" in message
    assert "channel 3 'Marketing SMS' does not exist in Iterable" in message
    assert "message type 102 'Marketing Message': subscriptionPolicy is 'OptIn' in Iterable" in message
    assert "message type 201 'Receipts': channelId is 1 in Iterable, 2 in the policy" in message


def test_check_against_refuses_an_unknown_type_on_the_unsubscribed_channel(policy: ConsentPolicy) -> None:
    types = [*ITERABLE_TYPES, {"id": 150, "name": "Webinars", "channelId": 1, "subscriptionPolicy": "OptIn"}]
    with pytest.raises(ConsentError, match="150 'Webinars' on channel 1 is missing from the policy"):
        policy.check_against(ITERABLE_CHANNELS, types)
    # An unknown type elsewhere is no business of the opt-out.
    sms_alerts = {"id": 350, "name": "SMS Alerts", "channelId": 3, "subscriptionPolicy": "OptIn"}
    elsewhere = [*ITERABLE_TYPES, sms_alerts]
    policy.check_against(ITERABLE_CHANNELS, elsewhere)


def test_check_against_accepts_parsed_client_models(policy: ConsentPolicy) -> None:
    channels = [Channel.model_validate(c) for c in ITERABLE_CHANNELS]
    types = [MessageType.model_validate(t) for t in ITERABLE_TYPES]
    policy.check_against(channels, types)
    types[0] = MessageType.model_validate({**ITERABLE_TYPES[0], "name": "Renamed"})
    with pytest.raises(ConsentError, match="name is 'Renamed' in Iterable"):
        policy.check_against(channels, types)


# ---- call-time guard ----------------------------------------------------------------------------


def test_subscribing_to_an_optout_marketing_type_is_refused(policy: ConsentPolicy) -> None:
    with pytest.raises(ConsentError, match="102 'Marketing Message': it is a marketing type with an OptOut"):
        policy.assert_may_subscribe([101, 102])


def test_subscribing_to_an_unknown_type_is_refused(policy: ConsentPolicy) -> None:
    with pytest.raises(ConsentError, match="message type 999: it is not in"):
        policy.assert_may_subscribe([999])


def test_subscribing_to_optin_and_transactional_types_is_allowed(policy: ConsentPolicy) -> None:
    policy.assert_may_subscribe([101, 301, 201])
    policy.assert_may_subscribe([])


# ---- opt-out arrays -----------------------------------------------------------------------------


def test_optout_adds_the_channel_to_the_profiles_own_list(policy: ConsentPolicy) -> None:
    fields = {
        "unsubscribedChannelIds": [3],
        "subscribedMessageTypeIds": [301, 101, 102],
        "unsubscribedMessageTypeIds": [201],
    }
    assert policy.optout_channel_ids(fields) == [3, 1]
    assert fields["unsubscribedChannelIds"] == [3]  # the profile's arrays are not mutated
    assert not policy.is_opted_out(fields)


def test_optout_of_a_bare_profile(policy: ConsentPolicy) -> None:
    assert policy.optout_channel_ids({"unsubscribedChannelIds": None}) == [1]
    assert not policy.is_opted_out({})


def test_optout_is_idempotent_and_recognised(policy: ConsentPolicy) -> None:
    fields = {"unsubscribedChannelIds": [1, 3], "subscribedMessageTypeIds": [301]}
    assert policy.is_opted_out(fields)
    assert policy.optout_channel_ids(fields) == [1, 3]
