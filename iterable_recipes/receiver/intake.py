"""Group commit: requests waiting at the same moment share one transaction, each answered after it commits."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from iterable_recipes.store import AddResult, Inbox, NewItem

log = logging.getLogger(__name__)


class GroupCommitter:
    """Queue events from request handlers and commit them in batches on writer threads.

    One writer suits SQLite (one writer at a time anyway); PostgreSQL takes several in parallel.
    """

    def __init__(self, inbox: Inbox, *, writers: int | None = None, max_batch: int = 500) -> None:
        self.inbox = inbox
        self.writers = writers or (1 if inbox.is_sqlite else 4)
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[NewItem, asyncio.Future[AddResult]]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start the writer tasks on the running loop."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(self.writers, thread_name_prefix="inbox-writer")
        self._tasks = [asyncio.create_task(self._writer()) for _ in range(self.writers)]

    async def stop(self) -> None:
        """Let queued events commit, then stop the writers."""
        if self._queue is not None:
            await self._queue.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def add(self, item: NewItem) -> AddResult:
        """Store ``item``; returns once its transaction has committed (raises if it could not)."""
        if self._queue is None:
            raise RuntimeError("GroupCommitter.start() was not awaited")
        future: asyncio.Future[AddResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _writer(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await loop.run_in_executor(
                    self._executor, self._commit, [item for item, _ in batch]
                )
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue  # the request went away (client disconnected); its event is stored
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _commit(self, items: list[NewItem]) -> list[AddResult | Exception]:
        """Commit the batch; if it fails, commit item by item so one bad item fails alone."""
        try:
            return list(self.inbox.add_many(items))
        except Exception:
            if len(items) == 1:
                raise
            log.warning("group commit of %d events failed; committing them one by one", len(items))
        outcomes: list[AddResult | Exception] = []
        for item in items:
            try:
                outcomes.append(self.inbox.add_many([item])[0])
            except Exception as exc:
                outcomes.append(exc)
        return outcomes
