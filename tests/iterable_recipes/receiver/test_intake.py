"""The group committer on a real SQLite inbox: requests waiting together share a commit, each answered after
it; stop commits what is queued; a bad item fails alone; a broken connection is replaced."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import Connection

from iterable_recipes.receiver.intake import GroupCommitter
from iterable_recipes.store import AddResult, Inbox, NewItem, migrate

# Only a broken hand-off waits this long.
HANDOFF_TIMEOUT = 60.0


class GatedInbox(Inbox):
    """Records each batch committed; the first commit waits until the test opens the gate."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.batches: list[list[str]] = []
        self.connections: list[Connection | None] = []
        self.entered = threading.Event()
        self.gate = threading.Event()

    def add_many(self, items: Sequence[NewItem], conn: Connection | None = None) -> list[AddResult]:
        self.entered.set()
        assert self.gate.wait(HANDOFF_TIMEOUT)
        self.batches.append([i.source_id for i in items])
        self.connections.append(conn)
        return super().add_many(items, conn)


def item(source_id: str, kind: str = "k") -> NewItem:
    return NewItem("test", source_id, kind, {"n": source_id})


@pytest.fixture
def inbox(tmp_path: Path) -> GatedInbox:
    url = f"sqlite:///{tmp_path}/recipes.db"
    migrate(url)
    return GatedInbox(url)


def test_requests_waiting_during_a_commit_share_the_next_one(inbox: GatedInbox) -> None:
    async def scenario() -> list[AddResult]:
        committer = GroupCommitter(inbox)
        await committer.start()
        first = asyncio.ensure_future(committer.add(item("a")))
        assert await asyncio.to_thread(inbox.entered.wait, HANDOFF_TIMEOUT)  # the writer holds "a"
        rest = [asyncio.ensure_future(committer.add(item(name))) for name in ("b", "c", "d")]
        await asyncio.sleep(0)  # queued behind the held commit
        assert not any(f.done() for f in [first, *rest])  # nobody answered before the commit
        inbox.gate.set()
        results = await asyncio.gather(first, *rest)
        await committer.stop()
        return list(results)

    results = asyncio.run(scenario())
    assert inbox.batches == [["a"], ["b", "c", "d"]]
    assert all(r.created for r in results) and len({r.id for r in results}) == 4
    assert {i.source_id for i in inbox.list_items(source="test")} == {"a", "b", "c", "d"}


def test_stop_commits_what_is_queued(inbox: GatedInbox) -> None:
    async def scenario() -> list[AddResult]:
        committer = GroupCommitter(inbox)
        await committer.start()
        waiting = [asyncio.ensure_future(committer.add(item(name))) for name in ("a", "b")]
        await asyncio.sleep(0)
        inbox.gate.set()
        await committer.stop()
        return list(await asyncio.gather(*waiting))

    assert [r.created for r in asyncio.run(scenario())] == [True, True]
    assert len(inbox.list_items(source="test")) == 2


def test_a_bad_item_fails_alone(inbox: GatedInbox) -> None:
    inbox.gate.set()
    too_long = "x" * 100  # longer than the kind column: refused below, as PostgreSQL would refuse it

    async def scenario() -> list[AddResult | BaseException]:
        committer = GroupCommitter(inbox)
        await committer.start()
        original = inbox.add_many

        def refuse_long_kinds(items: Sequence[NewItem], conn: Connection | None = None) -> list[AddResult]:
            if any(len(i.kind) > 64 for i in items):
                raise ValueError("kind too long")
            return original(items, conn)

        inbox.add_many = refuse_long_kinds  # type: ignore[method-assign]
        answers = [committer.add(item("good-1")), committer.add(item("bad", too_long))]
        answers.append(committer.add(item("good-2")))
        results = await asyncio.gather(*answers, return_exceptions=True)
        await committer.stop()
        return list(results)

    good_1, bad, good_2 = asyncio.run(scenario())
    assert isinstance(good_1, AddResult) and isinstance(good_2, AddResult)
    assert isinstance(bad, ValueError)
    assert {i.source_id for i in inbox.list_items(source="test")} == {"good-1", "good-2"}


def test_the_writer_keeps_its_connection_and_replaces_one_that_broke(inbox: GatedInbox) -> None:
    """Commits share the writer thread's own connection; when it breaks between two, the next batch
    is still stored and answered (on a fresh one), nothing lost."""
    inbox.gate.set()

    async def scenario() -> list[AddResult]:
        committer = GroupCommitter(inbox)
        await committer.start()
        results = [await committer.add(item("a")), await committer.add(item("b"))]
        kept = inbox.connections[-1]
        assert kept is not None and inbox.connections == [kept, kept]
        driver = kept.connection.driver_connection
        assert driver is not None
        driver.close()  # the database connection goes away under it
        results.append(await committer.add(item("c")))
        await committer.stop()
        return results

    results = asyncio.run(scenario())
    assert all(r.created for r in results)
    assert {i.source_id for i in inbox.list_items(source="test")} == {"a", "b", "c"}
    fresh = inbox.connections[-1]
    assert fresh is not None and fresh is not inbox.connections[0]
