import httpx
import pytest

from inbox.store import Inbox
from sandbox.serving import serving
from tests.integration import customersdot_event, signed

pytestmark = pytest.mark.usefixtures("prefect_server")


def _post_all(url: str, bodies: list[dict]) -> list[int]:
    from webhooks.app import create_app

    statuses = []
    with serving(create_app()) as base, httpx.Client(base_url=base) as http:
        for body in bodies:
            raw, headers = signed(body)
            statuses.append(http.post(url, content=raw, headers=headers).status_code)
    return statuses


def test_signed_webhook_to_iterable_profile_and_event(iterable_standin, app_database):
    from flows.customersdot_events import customersdot_drain

    trial = customersdot_event("saas_trial_started", company="Acme", latest_trial_start_date="2026-11-20")
    invite = customersdot_event("namespace_user_invited", firstName="Grace")
    personal = customersdot_event("free_registration", registration_kind="personal")
    assert _post_all("/webhooks/customersdot", [trial, invite, personal]) == [202, 202, 202]

    counts = customersdot_drain()

    sandbox = iterable_standin.sandbox
    user = sandbox.user(trial["person"]["email"])
    assert user is not None and user["dataFields"]["company"] == "Acme"
    events = sandbox.events()
    assert events["cdot-" + trial["id"]]["eventName"] == "SaaS Trials"
    # The personal sign-up was stored as skipped at intake: the drain never sees it.
    assert counts["received"] == 2 and counts["delivered"] == 2, counts
    assert sandbox.user(personal["person"]["email"]) is None
    inbox = Inbox(app_database)
    assert inbox.counts()["customersdot"] == {"delivered": 2, "skipped": 1}
