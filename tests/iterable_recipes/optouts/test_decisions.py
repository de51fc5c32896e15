"""Opt-out decisions against the Iterable stand-in: they fail closed on answers they cannot read, write
nothing read earlier, and touch only the marketing email channel."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from iterable_recipes.clients.iterable import IterableClient
from iterable_recipes.optouts import decisions
from iterable_recipes.optouts.consent import DEFAULT_CONSENT_POLICY_PATH, ConsentPolicy, load_consent_policy
from iterable_recipes.optouts.decisions import checked_policy, opt_out_people, outcome_for
from tests.integration import IterableStandIn

KNOWN = "known@example.com"


@pytest.fixture
def client(iterable_standin: IterableStandIn, test_parts: dict[str, Any]) -> IterableClient:
    iterable_standin.sandbox.seed_users([{"email": KNOWN, "subscribedMessageTypeIds": [101]}])
    client: IterableClient = test_parts["iterable"]
    return client


def policy_of(client: IterableClient) -> ConsentPolicy:
    """The shipped policy, checked against the stand-in's channels and message types."""
    return checked_policy(client, load_consent_policy(DEFAULT_CONSENT_POLICY_PATH))


def opt_out(client: IterableClient, emails: list[str]) -> list[Any]:
    return opt_out_people(client, policy_of(client), emails, additive=False)


def test_an_error_shape_under_200_from_get_by_email_is_retried_never_not_in_iterable(
    client: IterableClient, iterable_standin: IterableStandIn
) -> None:
    shape = {"code": "BadParams", "msg": "Something went wrong"}
    iterable_standin.sandbox.set_faults(endpoint="users/getByEmail", fail_next=[{"body": shape}])
    (decision,) = opt_out(client, [KNOWN])
    assert decision.outcome == "failed" and decision.retryable, decision
    assert outcome_for(1, decision).status == "retry"
    assert iterable_standin.sandbox.stats()["subscription_writes"] == {}
    # Once Iterable answers properly, the same item goes through.
    (again,) = opt_out(client, [KNOWN])
    assert again.outcome == "opted_out"


UNICODE = "ada@bücher.example"


@pytest.mark.parametrize(
    ("answer", "retryable"),
    [
        # failCount > 0 and nobody named: which of them was applied cannot be told.
        ({"successCount": 0, "failCount": 1}, True),
        ({"successCount": 1, "failCount": 1, "invalidEmails": ["someone.else@example.com"]}, True),
        # Named in another form (the punycode of the address we sent): pinned on that item.
        ({"successCount": 0, "failCount": 1, "invalidEmails": ["ada@xn--bcher-kva.example"]}, False),
        ({"successCount": 0, "failCount": 1, "validEmailFailures": ["ADA@XN--BCHER-KVA.example"]}, True),
    ],
    ids=["none-named", "stranger-named", "punycode-invalid", "punycode-valid-failure"],
)
def test_a_bulk_failure_that_cannot_be_pinned_on_the_item_is_never_opted_out(
    client: IterableClient, iterable_standin: IterableStandIn, answer: dict[str, Any], retryable: bool
) -> None:
    iterable_standin.sandbox.seed_users([{"email": UNICODE, "subscribedMessageTypeIds": [101]}])
    full: dict[str, Any] = {
        "invalidEmails": [],
        "invalidUserIds": [],
        "validEmailFailures": [],
        "validUserIdFailures": [],
    }
    iterable_standin.sandbox.set_faults(
        endpoint="users/bulkUpdateSubscriptions", fail_next=[{"body": full | answer}]
    )
    (decision,) = opt_out(client, [UNICODE])
    assert decision.outcome == "failed", decision
    assert decision.retryable is retryable
    assert "@" not in decision.detail


# ---- the opt-out writes nothing read earlier, and only the marketing email channel -----------------

PERSON = "person@example.com"
PATHS = {False: "fallback", True: "additive"}


def sends(standin: IterableStandIn) -> list[tuple[str, str, Any]]:
    """Every request our client sent that is not a read (method, path, body)."""
    return [sent for sent in standin.transport.sent if sent[0] != "GET"]


@pytest.mark.parametrize("additive", [False, True], ids=PATHS.get)
def test_a_message_type_left_between_our_look_up_and_our_write_stays_left(
    client: IterableClient, iterable_standin: IterableStandIn, additive: bool
) -> None:
    sandbox = iterable_standin.sandbox
    sandbox.seed_users([{"email": PERSON, "subscribedMessageTypeIds": [101, 301]}])
    # Right after our look-up answers, the person leaves SMS Promotions on their own.
    sandbox.change_after_lookup(PERSON, subscribedMessageTypeIds=[101])
    (decision,) = opt_out_people(client, policy_of(client), [PERSON], additive)
    assert decision.outcome == "opted_out", decision
    person = sandbox.user(PERSON)
    assert person is not None and person["unsubscribedChannelIds"] == [1]
    # Their choice stands; GitLab Marketing stays as they set it, dormant under the left channel.
    assert person["subscribedMessageTypeIds"] == [101]


@pytest.mark.parametrize("additive", [False, True], ids=PATHS.get)
def test_a_channel_left_before_a_write_that_failed_stays_left(
    client: IterableClient, iterable_standin: IterableStandIn, additive: bool
) -> None:
    sandbox = iterable_standin.sandbox
    sandbox.seed_users([{"email": PERSON, "subscribedMessageTypeIds": [101, 301]}])
    # The person leaves the SMS channel after our look-up; our first write then meets a 503.
    sandbox.change_after_lookup(PERSON, unsubscribedChannelIds=[3])
    write = "subscriptions/unsubscribe" if additive else "users/bulkUpdateSubscriptions"
    sandbox.set_faults(endpoint=write, fail_next=[503])
    (decision,) = opt_out_people(client, policy_of(client), [PERSON], additive)
    assert decision.outcome == "opted_out", decision
    person = sandbox.user(PERSON)
    assert person is not None and sorted(person["unsubscribedChannelIds"]) == [1, 3]
    assert person["subscribedMessageTypeIds"] == [101, 301]


def test_the_fallback_sends_only_the_channel_array_without_channel_alignment(
    client: IterableClient, iterable_standin: IterableStandIn
) -> None:
    sandbox = iterable_standin.sandbox
    sandbox.seed_users(
        [{"email": PERSON, "unsubscribedChannelIds": [3], "subscribedMessageTypeIds": [101, 301]}]
    )
    (decision,) = opt_out_people(client, policy_of(client), [PERSON], additive=False)
    assert decision.outcome == "opted_out", decision
    request = {"email": PERSON, "unsubscribedChannelIds": [3, 1], "validateChannelAlignment": False}
    assert sends(iterable_standin) == [
        ("POST", "/api/users/bulkUpdateSubscriptions", {"updateSubscriptionsRequests": [request]})
    ]
    person = sandbox.user(PERSON)
    assert person is not None and person["subscribedMessageTypeIds"] == [101, 301]
    assert person["unsubscribedChannelIds"] == [3, 1]


def test_the_fallback_reads_each_group_right_before_its_write(
    client: IterableClient, iterable_standin: IterableStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decisions, "READ_WRITE_GROUP", 2)
    people = [f"p{n}@example.com" for n in range(4)]
    iterable_standin.sandbox.seed_users([{"email": p, "subscribedMessageTypeIds": [101]} for p in people])
    policy = policy_of(client)
    iterable_standin.transport.sent.clear()
    outcomes = [d.outcome for d in opt_out_people(client, policy, people, additive=False)]
    assert outcomes == ["opted_out"] * 4
    methods = [method for method, _, _ in iterable_standin.transport.sent]
    assert methods == ["GET", "GET", "POST", "GET", "GET", "POST"]


def test_the_additive_path_unsubscribes_only_the_marketing_email_channel(
    client: IterableClient, iterable_standin: IterableStandIn
) -> None:
    sandbox = iterable_standin.sandbox
    sandbox.seed_users([{"email": PERSON, "subscribedMessageTypeIds": [101, 301]}])
    (decision,) = opt_out_people(client, policy_of(client), [PERSON], additive=True)
    assert decision.outcome == "opted_out", decision
    assert sends(iterable_standin) == [
        ("DELETE", f"/api/subscriptions/messageChannel/1/user/{quote(PERSON, safe='')}", None)
    ]
    person = sandbox.user(PERSON)
    assert person is not None and person["unsubscribedChannelIds"] == [1]
    assert person["subscribedMessageTypeIds"] == [101, 301]


def test_an_additive_unsubscribe_answered_202_is_accepted(
    client: IterableClient, iterable_standin: IterableStandIn
) -> None:
    iterable_standin.sandbox.seed_users([{"email": PERSON}])
    iterable_standin.sandbox.set_faults(
        endpoint="subscriptions/unsubscribe", fail_next=[{"status": 202, "text": ""}]
    )
    (decision,) = opt_out_people(client, policy_of(client), [PERSON], additive=True)
    assert decision.outcome == "opted_out", decision


def test_additive_endpoints_iterable_has_not_enabled_leave_the_batch_waiting(
    client: IterableClient, iterable_standin: IterableStandIn
) -> None:
    sandbox = iterable_standin.sandbox
    sandbox.seed_users([{"email": PERSON, "subscribedMessageTypeIds": [101]}, {"email": KNOWN}])
    sandbox.set_options(additive_subscriptions_enabled=False)
    decisions_ = opt_out_people(client, policy_of(client), [PERSON, KNOWN], additive=True)
    assert [(d.outcome, d.retryable) for d in decisions_] == [("failed", True)] * 2
    assert "ITERABLE_OPTOUT_ADDITIVE" in decisions_[0].detail
    assert [outcome_for(1, d).status for d in decisions_] == ["retry", "retry"]
    person = sandbox.user(PERSON)
    assert person is not None and person["unsubscribedChannelIds"] == []


@pytest.mark.parametrize("additive", [False, True], ids=PATHS.get)
def test_nobody_unknown_is_written_on_either_path(
    client: IterableClient, iterable_standin: IterableStandIn, additive: bool
) -> None:
    stranger = "stranger@example.com"
    (decision,) = opt_out_people(client, policy_of(client), [stranger], additive)
    assert decision.outcome == "not_in_iterable"
    assert iterable_standin.sandbox.user(stranger) is None
    assert sends(iterable_standin) == []
