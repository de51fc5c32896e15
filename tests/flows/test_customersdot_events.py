import httpx
import pytest

from dev.standins.serving import serving
from iterable_recipes.store.inbox import Inbox
from tests.integration import customersdot_event, signed

pytestmark = pytest.mark.usefixtures("prefect_server")


def _post_all(url: str, bodies: list[dict]) -> list[int]:
    from iterable_recipes.receiver.app import create_app

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


def test_a_refused_key_stops_claiming_puts_the_batches_back_and_fails_the_run(
    iterable_standin, app_database, monkeypatch
):
    from flows.customersdot_events import customersdot_drain
    from iterable_recipes.clients.errors import ApiError
    from iterable_recipes.store.inbox import NewItem

    monkeypatch.setenv("DRAIN_BATCHES_IN_FLIGHT", "2")
    inbox = Inbox(app_database)
    bodies = [customersdot_event() for _ in range(40)]
    inbox.add_many([NewItem("customersdot", b["id"], b["type"], b) for b in bodies])
    sandbox = iterable_standin.sandbox
    sandbox.set_faults(endpoint="users/bulkUpdate", fail_next=[401] * 100)

    state = customersdot_drain(batch_size=5, return_state=True)

    assert state.is_failed()
    with pytest.raises(ApiError):
        state.result()
    # Claiming stopped at the refusal: only the batches in flight then (at most 2 x 5) were taken,
    # and they are due again at once for the next run; the rest was never claimed.
    waiting = inbox.list_items(status="retry", source="customersdot", limit=100)
    assert 0 < len(waiting) <= 2 * 5
    assert inbox.counts()["customersdot"] == {"pending": 40 - len(waiting), "retry": len(waiting)}
    assert sandbox.events() == {}
    inbox.dispose()


class OutcomesLostInbox(Inbox):
    """An inbox whose outcome writes fail, as when the database goes away mid-run."""

    def settle(self, outcomes, owner):
        raise ConnectionError("database went away")


def test_a_failed_drain_gives_its_leases_back_so_a_retry_takes_them_at_once(
    iterable_standin, app_database, test_parts
):
    from flows.customersdot_events import customersdot_drain
    from iterable_recipes.store.inbox import NewItem

    bodies = [customersdot_event() for _ in range(3)]
    inbox = Inbox(app_database)
    ids = [r.id for r in inbox.add_many([NewItem("customersdot", b["id"], b["type"], b) for b in bodies])]
    test_parts["inbox"] = OutcomesLostInbox(app_database)

    state = customersdot_drain(return_state=True)

    assert state.is_failed()
    waiting = inbox.list_items(source="customersdot")
    assert {(i.status, i.lease_owner, i.attempts) for i in waiting} == {("retry", None, 1)}
    retried = inbox.claim("customersdot", 10, 300, "retry-of-the-run")
    assert sorted(i.id for i in retried) == ids, "the failed run still holds its items"
    inbox.dispose()
    test_parts["inbox"].dispose()


def test_both_drains_give_their_leases_back_however_their_run_ends():
    from flows.customersdot_events import customersdot_drain
    from flows.marketo_unsubscribes import marketo_optout_drain
    from tasks.store import release_leases

    for drain in (customersdot_drain, marketo_optout_drain):
        hooks = (drain.on_failure_hooks, drain.on_cancellation_hooks, drain.on_crashed_hooks)
        assert all(release_leases in h for h in hooks), drain.name


def test_fewer_collections_restores_the_collector():
    import gc

    from iterable_recipes.customersdot.drain import fewer_collections

    before = gc.get_threshold()
    with fewer_collections(threshold=12_345):
        assert gc.get_threshold()[0] == 12_345
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def _run_artifacts(state) -> dict[str, list]:
    """The artifacts the flow run of ``state`` created, by key (None for unkeyed ones: progress)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    wanted = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=wanted)
    by_key: dict[str, list] = {}
    for artifact in found:
        by_key.setdefault(artifact.key or str(artifact.type), []).append(artifact)
    return by_key


def test_a_drain_that_finds_nothing_publishes_no_artifact_but_one_with_work_shows_its_progress(
    iterable_standin, app_database
):
    from flows.customersdot_events import customersdot_drain

    empty = customersdot_drain(return_state=True)
    assert empty.is_completed() and empty.result()["received"] == 0
    assert _run_artifacts(empty) == {}

    assert _post_all("/webhooks/customersdot", [customersdot_event("saas_trial_started")]) == [202]
    worked = customersdot_drain(return_state=True)
    artifacts = _run_artifacts(worked)
    assert sorted(artifacts) == ["customersdot-counts", "customersdot-progress", "progress"]
    assert artifacts["progress"][0].data == 100.0
    assert "| 1 | 1 (100 %) |" in artifacts["customersdot-progress"][0].data
