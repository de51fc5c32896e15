"""Opt-out decisions fail closed on answers they cannot read, against the Iterable stand-in."""

from __future__ import annotations

from typing import Any

import pytest

from iterable_recipes.clients.iterable import IterableClient
from iterable_recipes.optouts.consent import DEFAULT_CONSENT_POLICY_PATH, load_consent_policy
from iterable_recipes.optouts.decisions import checked_policy, opt_out_people, outcome_for
from tests.integration import IterableStandIn

KNOWN = "known@example.com"


@pytest.fixture
def client(iterable_standin: IterableStandIn, test_parts: dict[str, Any]) -> IterableClient:
    iterable_standin.sandbox.seed_users([{"email": KNOWN, "subscribedMessageTypeIds": [101]}])
    client: IterableClient = test_parts["iterable"]
    return client


def opt_out(client: IterableClient, emails: list[str]) -> list[Any]:
    policy = checked_policy(client, load_consent_policy(DEFAULT_CONSENT_POLICY_PATH))
    return opt_out_people(client, policy, emails, additive=False)


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
