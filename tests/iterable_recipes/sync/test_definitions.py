"""Sync definitions: the shipped file loads; bad files and definitions that misfit the model are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dev.warehouse import MODEL_TABLE
from iterable_recipes.clients.iterable_models import SUBSCRIPTION_FIELDS
from iterable_recipes.config_files import ConfigError
from iterable_recipes.sync import validate_against_warehouse
from iterable_recipes.sync.definitions import (
    EXAMPLES_DIR,
    SYNCS_DIR,
    FieldType,
    all_sync_definitions,
    load_named_sync,
    load_sync_definition,
)

GOOD = """
name: demo
source: {table: SENSITIVE.POC_PUMP_MARKETING_CONTACT_NAMESPACE_DETAIL}
identity: {column: email_address, kind: email}
fields:
  GITLAB_PLAN_TITLE: {field: plan, type: string}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_gitlab_sync_is_update_only_on_recent_users() -> None:
    defn = all_sync_definitions()["gitlab_marketing_contacts"]
    assert defn.mode.value == "update" and defn.identity.kind.value == "email"
    assert "DATEADD(MONTH, -2" in (defn.source.sql or "")
    assert defn.fields["NAMESPACES_ARRAY"].type is FieldType.OBJECT
    assert len(defn.fields) == 19 and defn.path.endswith("gitlab_marketing_contacts.yaml")
    assert str(SYNCS_DIR) in defn.path


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ("schedule: '0 5 * * *'\n", "(top level)", "prefect.yaml"),
        ("batch_size: 5000\n", "batch_size", "less than or equal to 1000"),
        ("kind: custom_events\n", "(top level)", "event_name is required"),
        ("merge_nested_objects: true\n", "(top level)", "no field has type object"),
        ("not_in_iterable_retry_hours: 0\n", "not_in_iterable_retry_hours", "greater than 0"),
        ("on_invalid_rows: skip\n", "on_invalid_rows", "'warn' or 'fail'"),
        ("on_row_removed: delete\n", "on_row_removed", "'keep' or 'clear_fields'"),
        (
            "kind: custom_events\nevent_name: e\non_row_removed: clear_fields\n",
            "(top level)",
            "only applies to kind user_profiles",
        ),
    ],
)
def test_bad_definitions_name_file_key_and_problem(
    tmp_path: Path, extra: str, key: str, problem: str
) -> None:
    path = write(tmp_path, GOOD + extra)
    with pytest.raises(ConfigError) as err:
        load_sync_definition(path)
    assert f"{path}: {key}" in str(err.value) and problem in str(err.value)


def test_invalid_rows_warn_unless_the_definition_says_fail(tmp_path: Path) -> None:
    assert load_sync_definition(write(tmp_path, GOOD)).on_invalid_rows == "warn"
    assert load_sync_definition(write(tmp_path, GOOD + "on_invalid_rows: fail\n")).on_invalid_rows == "fail"


def test_bad_field_type_and_column_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_sync_definition(write(tmp_path, GOOD + "  USER_ID: {field: uid, type: integer}\n"))
    assert "fields.USER_ID.type: Input should be 'string'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_sync_definition(write(tmp_path, GOOD + "  'bad col': {field: x, type: string}\n"))
    assert "fields: Value error, column 'bad col' is not a plain SQL identifier" in str(err.value)


def test_a_field_may_be_marked_sensitive_with_a_plain_boolean_only(tmp_path: Path) -> None:
    plain = load_sync_definition(write(tmp_path, GOOD))
    marked = load_sync_definition(
        write(tmp_path, GOOD.replace("type: string}", "type: string, sensitive: true}"))
    )
    assert not plain.fields["GITLAB_PLAN_TITLE"].sensitive and marked.fields["GITLAB_PLAN_TITLE"].sensitive
    # Display only: marking a field sensitive changes nothing sent, so no row is sent again for it.
    assert marked.mapping_fingerprint == plain.mapping_fingerprint
    with pytest.raises(ConfigError) as err:
        load_sync_definition(
            write(tmp_path, GOOD.replace("type: string}", "type: string, sensitive: 'yes'}"))
        )
    assert f"{tmp_path / 'demo.yaml'}: fields.GITLAB_PLAN_TITLE.sensitive" in str(err.value)
    assert "sensitive is true or false" in str(err.value)


def test_valid_definition_passes_the_warehouse_check(seeded: Any, tmp_path: Path) -> None:
    columns = validate_against_warehouse(all_sync_definitions()["gitlab_marketing_contacts"], seeded)
    assert columns["NAMESPACES_ARRAY"] == "VARIANT" and columns["EMAIL_ADDRESS"] == "TEXT"


def test_unknown_column_is_refused_naming_file_and_key(seeded: Any, tmp_path: Path) -> None:
    defn = load_sync_definition(write(tmp_path, GOOD + "  PLAN_NAME: {field: plan_name, type: string}\n"))
    with pytest.raises(ConfigError) as err:
        validate_against_warehouse(defn, seeded)
    assert f"{defn.path}: fields.PLAN_NAME: column PLAN_NAME is not in the source query" in str(err.value)


def test_changed_column_type_is_refused(seeded: Any, tmp_path: Path) -> None:
    defn = load_sync_definition(
        write(
            tmp_path, GOOD + "  CURRENT_MEMBER_COUNT: {field: members, type: number, source_type: NUMBER}\n"
        )
    )
    validate_against_warehouse(defn, seeded)
    cur = seeded.cursor()
    cur.execute(f"ALTER TABLE {MODEL_TABLE} DROP COLUMN CURRENT_MEMBER_COUNT")
    cur.execute(f"ALTER TABLE {MODEL_TABLE} ADD COLUMN CURRENT_MEMBER_COUNT VARCHAR")
    with pytest.raises(ConfigError) as err:
        validate_against_warehouse(defn, seeded)
    message = str(err.value)
    assert (
        f"{defn.path}: fields.CURRENT_MEMBER_COUNT.type: mapped as number but the column is TEXT" in message
    )
    assert "fields.CURRENT_MEMBER_COUNT.source_type: declared NUMBER but the column is now TEXT" in message


def test_broken_source_query_is_a_config_error(seeded: Any, tmp_path: Path) -> None:
    defn = load_sync_definition(write(tmp_path, GOOD.replace("POC_PUMP", "NO_SUCH")))
    with pytest.raises(ConfigError, match=r"source: the query failed"):
        validate_against_warehouse(defn, seeded)


def test_events_carry_stable_ids_and_no_email_in_the_id(seeded: Any, tmp_path: Path) -> None:
    from iterable_recipes.sync import iter_batches, plan_changes
    from tests.iterable_recipes.sync.conftest import STATE

    text = GOOD + "kind: custom_events\nevent_name: namespaceDetails\n"
    defn = load_sync_definition(write(tmp_path, text))
    plan_changes(seeded, defn, "e1", state_schema=STATE)
    first = next(iter_batches(seeded, defn, "e1", state_schema=STATE)).items[0]
    plan_changes(seeded, defn, "e2", state_schema=STATE)
    again = next(iter_batches(seeded, defn, "e2", state_schema=STATE)).items[0]
    assert first == again and first["eventName"] == "namespaceDetails"
    assert len(first["id"]) == 64 and "@" not in first["id"] and first["dataFields"]["plan"]


@pytest.mark.parametrize("target", sorted(SUBSCRIPTION_FIELDS))
@pytest.mark.parametrize("kind", ["", "kind: custom_events\nevent_name: Synced\n"])
def test_a_subscription_field_is_refused_as_a_target(tmp_path: Path, target: str, kind: str) -> None:
    # users/bulkUpdate writes these arrays as sent: a sync naming one would overwrite consent.
    path = write(tmp_path, kind + GOOD + f"  PLAN_IDS: {{field: {target}, type: object}}\n")
    with pytest.raises(ConfigError) as err:
        load_sync_definition(path)
    message = str(err.value)
    assert f"{path}: fields.PLAN_IDS.field" in message
    assert f"{target!r} is a subscription field" in message


def folder_with_bad_files(tmp_path: Path) -> Path:
    """A definitions folder holding the good ``demo`` sync beside a file that is not YAML and one that
    breaks the schema."""
    folder = tmp_path / "syncs"
    folder.mkdir()
    (folder / "demo.yaml").write_text(GOOD, encoding="utf-8")
    (folder / "not_yaml.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    (folder / "bad_batch.yml").write_text(
        GOOD.replace("name: demo", "name: bad_batch") + "batch_size: 5000\n", encoding="utf-8"
    )
    return folder


def test_a_sync_loads_only_its_own_file_so_bad_files_beside_it_do_not_matter(tmp_path: Path) -> None:
    folder = folder_with_bad_files(tmp_path)
    defn = load_named_sync("demo", folder)
    assert defn.name == "demo" and defn.path == str(folder / "demo.yaml")
    with pytest.raises(ConfigError) as err:
        load_named_sync("bad_batch", folder)
    assert f"{folder / 'bad_batch.yml'}: batch_size: " in str(err.value)


def test_an_unknown_sync_names_the_folder_and_the_syncs_it_holds(tmp_path: Path) -> None:
    folder = folder_with_bad_files(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_named_sync("nope", folder)
    message = str(err.value)
    assert "unknown sync 'nope'" in message and str(folder) in message
    assert "bad_batch, demo, not_yaml" in message
    with pytest.raises(ConfigError, match="not a sync name"):
        load_named_sync("../syncs/demo", folder)


def test_a_sync_file_is_named_after_its_sync(tmp_path: Path) -> None:
    path = tmp_path / "other.yaml"
    path.write_text(GOOD, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_sync_definition(path)
    assert f"{path}: name: " in str(err.value) and "'demo'" in str(err.value)
    # The name may be left out: the file's name gives it.
    path.write_text(GOOD.replace("name: demo\n", ""), encoding="utf-8")
    assert load_sync_definition(path).name == "other"


def test_loading_every_sync_reports_every_bad_file_at_once(tmp_path: Path) -> None:
    folder = folder_with_bad_files(tmp_path)
    (folder / "demo.yml").write_text(GOOD, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        all_sync_definitions(folder)
    lines = str(err.value).splitlines()
    assert any(line.startswith(f"{folder / 'not_yaml.yaml'}: not valid YAML") for line in lines)
    assert any(line.startswith(f"{folder / 'bad_batch.yml'}: batch_size: ") for line in lines)
    assert any(
        line.startswith(f"{folder / 'demo.yml'}: name: sync 'demo' is already defined") for line in lines
    )
    assert all(line.startswith(str(folder)) for line in lines), lines


LIST = """
source: {sql: "SELECT EMAIL_ADDRESS FROM ANALYTICS.PUBLIC.MEMBERS"}
identity: {column: email_address, kind: email}
kind: list_membership
"""


def test_a_list_membership_sync_names_its_list_and_counts_as_marketing(tmp_path: Path) -> None:
    defn = load_sync_definition(write(tmp_path, LIST + "list_id: 4321\n"))
    assert defn.is_list and defn.list_id == 4321 and defn.fields == {}
    assert defn.is_marketing_list  # every list counts as marketing unless it says otherwise
    assert not load_sync_definition(
        write(tmp_path, LIST + "list_id: 4321\nmarketing: false\n")
    ).is_marketing_list
    # The list is part of what a row hash covers; the other kinds' fingerprints do not change.
    other = load_sync_definition(write(tmp_path, LIST + "list_id: 4322\n"))
    assert other.mapping_fingerprint != defn.mapping_fingerprint


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ("", "list_id", "required when kind is list_membership"),
        ("list_id: 0\n", "list_id", "greater than 0"),
        ("list_id: twelve\n", "list_id", "valid integer"),
        ("list_id: 5\nmarketing: sometimes\n", "marketing", "must be true or false"),
        ("list_id: 5\nmarketing: 1\n", "marketing", "must be true or false"),
        ("list_id: 5\nmode: upsert\n", "(top level)", "creates nobody"),
        ("list_id: 5\nfields: {A: {field: a, type: string}}\n", "fields", "maps no fields"),
        ("list_id: 5\nevent_name: joined\n", "(top level)", "event_name only applies"),
    ],
)
def test_bad_list_definitions_name_file_key_and_problem(
    tmp_path: Path, extra: str, key: str, problem: str
) -> None:
    path = write(tmp_path, LIST + extra)
    with pytest.raises(ConfigError) as err:
        load_sync_definition(path)
    assert f"{path}: {key}: " in str(err.value) and problem in str(err.value)


def test_list_settings_belong_to_list_syncs_and_marketing_lists_to_emails(tmp_path: Path) -> None:
    for extra, key in (("list_id: 5\n", "list_id"), ("marketing: false\n", "marketing")):
        with pytest.raises(ConfigError, match=f"{key}: Value error, only applies to kind list_membership"):
            load_sync_definition(write(tmp_path, GOOD.replace("fields:", f"{extra}fields:")))
    by_user_id = LIST.replace("{column: email_address, kind: email}", "{column: user_id, kind: userId}")
    with pytest.raises(ConfigError, match=r"marketing: .*must be keyed by email"):
        load_sync_definition(write(tmp_path, by_user_id + "list_id: 5\n"))
    assert load_sync_definition(write(tmp_path, by_user_id + "list_id: 5\nmarketing: false\n")).is_list


def test_examples_load_but_are_never_syncs(tmp_path: Path) -> None:
    examples = sorted(EXAMPLES_DIR.glob("*.yaml"))
    assert examples, "the examples folder holds at least one definition"
    for path in examples:
        assert load_sync_definition(path).name == path.stem  # each example is a valid definition
    shipped = all_sync_definitions()
    assert not {path.stem for path in examples} & set(shipped)
    with pytest.raises(ConfigError, match="example definitions, never loaded as syncs"):
        load_named_sync(examples[0].stem, EXAMPLES_DIR)
    with pytest.raises(ConfigError, match="example definitions"):
        all_sync_definitions(EXAMPLES_DIR)
    # The wheel leaves the folder out (pyproject.toml), so an installed project has no examples to find.
    pyproject = (Path(__file__).resolve().parents[3] / "pyproject.toml").read_text(encoding="utf-8")
    assert 'exclude = ["iterable_recipes/sync/examples"]' in pyproject
