"""A dry run's preview against the Iterable stand-in over a real socket: each sampled field now in
Iterable beside what the run would write, type problems, sensitive fields hidden, addresses masked,
"unknown" where Iterable did not answer, and the estimate of a known change set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dev.warehouse import seed_model
from iterable_recipes import masking
from iterable_recipes.sync import plan_run
from iterable_recipes.sync.definitions import SYNCS_DIR, SyncDefinition, load_sync_definition
from iterable_recipes.sync.estimate import estimate_run
from iterable_recipes.sync.preview import (
    NOT_IN_ITERABLE,
    SKIPPED,
    Preview,
    preview_rows,
    rows_it_would_not_send,
    staged_sample,
)
from iterable_recipes.sync.results import ChangeSetSummary
from tests.integration import assert_no_raw_email
from tests.iterable_recipes.sync.conftest import STATE

GITLAB = "gitlab_marketing_contacts"
EMAILS = [f"user{i}@example.com" for i in range(4)]


def definition(tmp_path: Path, name: str, **changes: Any) -> SyncDefinition:
    """GitLab's shipped sync (update mode, by email) under ``name``, GLM_CONTENT marked sensitive."""
    shipped = yaml.safe_load((SYNCS_DIR / f"{GITLAB}.yaml").read_text())
    shipped["fields"]["GLM_CONTENT"]["sensitive"] = True
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(shipped | {"name": name} | changes))
    return load_sync_definition(path)


@pytest.fixture
def known_person(iterable_standin: Any) -> None:
    """user1 in Iterable (its plan, a sensitive value, an address in a field, a number held as a
    string); user0, user2 and user3 unknown to it."""
    masking.set_tag_key("preview-test-key-0123456789")  # tags tell the masked people apart
    iterable_standin.sandbox.seed_users(
        [
            {
                "email": "user1@example.com",
                "dataFields": {
                    "namespace_id": 1000001,  # what the model holds: unchanged
                    "gitlab_plan_title": "Free",  # the model now says "Ultimate Trial"
                    "glm_content": "content-old-value",  # sensitive
                    "glm_source": "owner@corp.example.org",
                    "user_access_level": "50",  # Iterable now holds the field as a string
                },
            }
        ]
    )


def previewed(conn: Any, client: Any, defn: SyncDefinition, run_id: str) -> tuple[ChangeSetSummary, Preview]:
    plan = plan_run(conn, defn, run_id, STATE, dry_run=True)
    return plan, preview_rows(client, defn, staged_sample(conn, defn, run_id, 20, state_schema=STATE))


def by_field(preview: Preview, email: str) -> dict[str, dict[str, str]]:
    return {row["field"]: row for row in preview.rows if row["identity"] == masking.mask_email(email)}


def test_the_preview_shows_each_field_now_in_iterable_beside_what_would_be_written(
    conn: Any, iterable_standin: Any, test_parts: dict[str, Any], known_person: None, tmp_path: Path
) -> None:
    seed_model(conn, 4)
    defn = definition(tmp_path, "preview_update")
    plan_summary, preview = previewed(conn, test_parts["iterable"], defn, "preview-1")

    assert (preview.sampled, preview.in_iterable, preview.not_in_iterable, preview.unanswered) == (4, 1, 3, 0)
    assert len(preview.rows) == 4 * len(defn.fields)
    known = by_field(preview, "user1@example.com")
    assert "#" in known["namespace_id"]["identity"]  # the masker's form with its keyed tag
    assert (known["namespace_id"]["now in Iterable"], known["namespace_id"]["would write"]) == (
        "1000001",
    ) * 2
    assert known["namespace_id"]["change"] == "same"
    assert known["namespace_id"]["type"] == "ok (Iterable holds it as long)"
    plan = known["gitlab_plan_title"]
    assert (plan["now in Iterable"], plan["would write"], plan["change"]) == (
        "Free",
        "Ultimate Trial",
        "changed",
    )
    assert (
        known["is_active_trial"]["now in Iterable"] == "(none)"
        and known["is_active_trial"]["change"] == "new"
    )
    assert known["is_active_trial"]["type"] == "ok (new field: this write fixes its type)"
    # The field whose Iterable type disagrees: a real run would be refused at its start check.
    level = known["user_access_level"]
    assert (level["now in Iterable"], level["would write"]) == ("50", "50")
    assert level["type"] == "problem: sent as number, but Iterable holds user_access_level as string"
    assert level["change"] == "changed"  # "50" is not 50
    assert preview.type_problems == {
        "user_access_level": "sent as number, but Iterable holds user_access_level as string"
    }
    # A sensitive field is hidden in both columns; an address in a value is masked.
    secret = known["glm_content"]
    assert (secret["now in Iterable"], secret["would write"], secret["change"]) == (
        "*** (17 chars)",
        "*** (9 chars)",
        "changed",
    )
    assert not any("content-" in cell for row in preview.rows for cell in row.values())
    assert known["glm_source"]["now in Iterable"] == masking.mask_email("owner@corp.example.org")
    assert_no_raw_email([str(row) for row in preview.rows], [*EMAILS, "owner@corp.example.org"])
    # Update mode creates nobody: the unknown people's rows say so rather than "new".
    unknown = by_field(preview, "user0@example.com")
    assert {row["now in Iterable"] for row in unknown.values()} == {NOT_IN_ITERABLE}
    assert {row["change"] for row in unknown.values()} == {SKIPPED}
    assert unknown["glm_content"]["would write"] == "(not sent: null)"  # user0's GLM_CONTENT is NULL
    # Only read: one look-up per sampled person and one getFields.
    requests = iterable_standin.sandbox.stats()["requests"]
    assert set(requests) == {"users/getByEmail", "users/getFields"}
    assert sum(requests["users/getByEmail"].values()) == 4 and iterable_standin.sandbox.stats()["users"] == 1

    skipped = rows_it_would_not_send(defn, plan_summary, preview, "sync-preview-update-dry-run-invalid-rows")
    reasons = {row["not sent"]: row["rows"] for row in skipped}
    assert reasons["not in Iterable now: 3 of the 4 sampled"] == 3
    assert reasons["every row: Iterable holds user_access_level as another type"] == 4
    assert reasons["unchanged since the last accepted sync"] == 0
    line = preview.sentence()
    assert "previewed 76 field values of 4 sampled rows" in line and "1 field type problem" in line
    assert "3 of the sampled people not in Iterable" in line and "@" not in line


def test_an_outage_leaves_unknown_values_never_a_guess(
    conn: Any, iterable_standin: Any, test_parts: dict[str, Any], known_person: None, tmp_path: Path
) -> None:
    seed_model(conn, 4)
    defn = definition(tmp_path, "preview_outage")
    plan_run(conn, defn, "outage-1", STATE, dry_run=True)
    iterable_standin.sandbox.set_faults(endpoint="*", outage_seconds=300)

    preview = preview_rows(
        test_parts["iterable"], defn, staged_sample(conn, defn, "outage-1", 20, state_schema=STATE)
    )

    assert preview.unanswered == 4 and preview.not_in_iterable == 0 and preview.types_unknown
    cells = {row["now in Iterable"] for row in preview.rows}
    assert len(cells) == 1 and cells.pop().startswith(
        "unknown (Iterable did not answer: users/getByEmail 503"
    )
    assert {row["change"] for row in preview.rows} == {"unknown"}
    types = {row["type"] for row in preview.rows}
    assert len(types) == 1
    assert types.pop().startswith("unknown (Iterable did not answer: users/getFields 503")
    assert "Iterable did not answer for 4 people" in preview.sentence()


def test_a_custom_event_sync_shows_the_event_fields_and_reads_nothing(
    conn: Any, iterable_standin: Any, test_parts: dict[str, Any], tmp_path: Path
) -> None:
    masking.set_tag_key("preview-test-key-0123456789")
    seed_model(conn, 2)
    defn = definition(tmp_path, "preview_events", kind="custom_events", event_name="namespace_details")
    _, preview = previewed(conn, test_parts["iterable"], defn, "events-1")
    plan = by_field(preview, "user1@example.com")
    assert plan["gitlab_plan_title"]["would write"] == "Ultimate Trial"
    assert plan["gitlab_plan_title"]["now in Iterable"] == "(an event: nothing to read)"
    assert plan["glm_content"]["would write"] == "*** (9 chars)"
    assert iterable_standin.sandbox.stats()["requests"] == {}


def test_the_estimate_of_a_known_change_set(conn: Any, tmp_path: Path) -> None:
    seed_model(conn, 2_500)
    update = definition(tmp_path, "estimate_update")
    plan = plan_run(conn, update, "estimate-1", STATE, dry_run=True)
    assert (plan.to_send, plan.batches) == (2_500, 3)

    estimate = estimate_run(update, plan, share=1 / 1.05, margin_seconds=0.0)
    # A look-up per row at 100/s at a share of 1/1.05 (95.2 %), and one bulkUpdate per batch of 1,000 at 5/s.
    assert [(load.endpoint, load.requests) for load in estimate.loads] == [
        ("users/getByEmail", 2_500),
        ("users/bulkUpdate", 3),
    ]
    assert estimate.requests == 2_503 and estimate.seconds == pytest.approx(26.25)
    text = estimate.markdown()
    assert (
        "| users/getByEmail | update mode looks each person up first | 2,500 | 100/s | 95.2/s | 26 s |"
        in text
    )
    assert "| users/bulkUpdate | one request per batch | 3 | 5/s | 4.76/s | under 1 s |" in text
    assert "**2,503 request(s), at least 26 s**" in text
    assert (
        estimate.sentence()
        == "a real run would send 2,500 row(s) in 2,503 request(s), at least 26 s at Iterable's limits"
    )

    upsert = estimate_run(
        definition(tmp_path, "estimate_upsert", mode="upsert"), plan, share=1 / 1.05, margin_seconds=0.0
    )
    assert [(load.endpoint, load.requests) for load in upsert.loads] == [("users/bulkUpdate", 3)]
    assert upsert.seconds == pytest.approx(3 * 1.05 / 5)
    events = estimate_run(
        definition(tmp_path, "estimate_events", kind="custom_events", event_name="x"),
        plan,
        margin_seconds=0.0,
    )
    assert [(load.endpoint, load.requests) for load in events.loads] == [("events/trackBulk", 3)]
    assert events.seconds == pytest.approx(0.3) and "| 10/s | 10/s |" in events.markdown()


def test_a_user_id_sync_reads_people_by_user_id(
    conn: Any, iterable_standin: Any, test_parts: dict[str, Any], tmp_path: Path
) -> None:
    seed_model(conn, 3)
    iterable_standin.sandbox.seed_users(
        [{"email": EMAILS[1], "userId": "1", "dataFields": {"gitlab_plan_title": "Free"}}]
    )
    defn = definition(tmp_path, "preview_user_ids", identity={"column": "USER_ID", "kind": "userId"})
    _, preview = previewed(conn, test_parts["iterable"], defn, "user-ids-1")

    assert (preview.in_iterable, preview.not_in_iterable) == (1, 2)
    (plan,) = [
        r for r in preview.rows if r["field"] == "gitlab_plan_title" and r["now in Iterable"] == "Free"
    ]
    assert plan["identity"] == "1***" and plan["would write"] == "Ultimate Trial"
    assert set(iterable_standin.sandbox.stats()["requests"]) == {"users/byUserId", "users/getFields"}


def test_the_estimate_of_a_list_sync_counts_look_ups_subscribes_and_unsubscribes(tmp_path: Path) -> None:
    from dataclasses import replace

    from iterable_recipes.sync.definitions import load_sync_definition
    from iterable_recipes.sync.results import ChangeSetSummary

    path = tmp_path / "members.yaml"
    path.write_text(
        "name: members\nkind: list_membership\nlist_id: 7\nsource: {sql: SELECT E FROM T}\n"
        "identity: {column: E, kind: email}\n"
    )
    defn = load_sync_definition(path)
    plan = ChangeSetSummary(
        run_id="r", sync_name="members", dry_run=True, rows_in_model=0, new=2_500, changed=0, unchanged=0,
        rejected_retry=0, not_found_retry=0, not_found_waiting=0, duplicate_rows=0, duplicate_identities=0,
        null_identities=0, removed_from_state=0, to_send=3_000, batches=4,
    )  # fmt: skip
    estimate = estimate_run(defn, replace(plan, leaving=500), list_writes_per_second=2.0, margin_seconds=0.0)
    assert [(load.endpoint, load.requests) for load in estimate.loads] == [
        ("users/getByEmail", 2_500),
        ("lists/subscribe", 3),
        ("lists/unsubscribe", 1),
    ]
    assert estimate.seconds == pytest.approx(25.0)  # the look-ups at 100/s; subscribes 1.5 s at 2/s
