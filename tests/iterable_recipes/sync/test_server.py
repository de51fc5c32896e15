"""The warehouse layer against fakesnow in server mode: the connector over real HTTP, as in production."""

from __future__ import annotations

import fakesnow

from dev.warehouse import mutate, picked_emails, seed_model
from iterable_recipes.sync import accept_batch, connect, ensure_state, finish_run, iter_batches, plan_changes
from iterable_recipes.sync.definitions import SyncDefinition


def test_plan_read_accept_over_the_wire(gitlab: SyncDefinition) -> None:
    with fakesnow.server(session_parameters={"FAKESNOW_DB_PATH": ":isolated:"}) as params:
        conn = connect(**params, database="ANALYTICS", schema="PUBLIC")
        try:
            ensure_state(conn, "WIRE_STATE")
            seed_model(conn, 1_500)
            first = plan_changes(conn, gitlab, "w1", state_schema="WIRE_STATE", batch_size=600)
            assert (first.new, first.batches) == (1_500, 3)
            sizes = []
            for batch in iter_batches(conn, gitlab, "w1", state_schema="WIRE_STATE", fetch_size=400):
                sizes.append(len(batch))
                accept_batch(conn, gitlab, "w1", batch.batch_no, state_schema="WIRE_STATE")
            assert sizes == [600, 600, 300]
            assert finish_run(conn, gitlab, "w1", state_schema="WIRE_STATE").accepted == 1_500
            expected = picked_emails(conn, 0.02, seed=4)
            mutate(conn, 0.02, seed=4)
            plan_changes(conn, gitlab, "w2", state_schema="WIRE_STATE")
            read = [
                i for b in iter_batches(conn, gitlab, "w2", state_schema="WIRE_STATE") for i in b.identities
            ]
            assert set(read) == expected and len(read) == len(expected) > 0
        finally:
            conn.close()
