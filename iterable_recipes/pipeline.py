"""Keep a few batches in flight at once: the next claim waits for a free slot, not for the last send.

A drain claims a batch only when one of ``depth`` slots is free, hands it to a worker thread, and goes
on claiming; a slot is freed only when that batch's work (its sends and its outcomes) is over. So at
most ``depth`` batches are ever leased at a time, which is all a crash can make us send again. Each
worker runs in a copy of the caller's context, so what it does belongs to the caller's run.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class Slot:
    """One free place in the pipeline; ``run`` hands it to a worker, which frees it when done."""

    def __init__(self, pipeline: BatchPipeline) -> None:
        self._pipeline = pipeline
        self.used = False

    def run(self, work: Callable[..., None], *args: Any) -> None:
        """Do ``work(*args)`` on a worker thread; the slot is free again when it returns or raises."""
        self.used = True
        self._pipeline._submit(work, args)


class BatchPipeline:
    """Up to ``depth`` batches at once on worker threads; use as a context manager, then ``slots()``."""

    def __init__(self, depth: int, name: str = "batch") -> None:
        self.depth = max(1, depth)
        self._slots = threading.BoundedSemaphore(self.depth)
        self._pool = ThreadPoolExecutor(max_workers=self.depth, thread_name_prefix=name)
        self._futures: list[Future[None]] = []
        self._error: BaseException | None = None
        self.stopped = False

    def __enter__(self) -> BatchPipeline:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._pool.shutdown(wait=True)
        if exc_type is None:
            self.raise_if_failed()

    def stop(self) -> None:
        """Claim nothing more (a worker saw a reason to stop); batches in flight still finish."""
        self.stopped = True

    def slots(self, limit: int | None = None) -> Iterator[Slot]:
        """Yield a free slot at a time (at most ``limit``), until stopped or a worker failed.

        A slot the caller does not ``run`` (nothing was claimed) is given back at once.
        """
        given = 0
        while limit is None or given < limit:
            self._slots.acquire()
            slot = Slot(self)
            try:
                if self.stopped or self._error is not None:
                    return
                given += 1
                yield slot
            finally:
                if not slot.used:
                    self._slots.release()

    def _submit(self, work: Callable[..., None], args: tuple[Any, ...]) -> None:
        context = contextvars.copy_context()
        future = self._pool.submit(context.run, self._run, work, args)
        self._futures = [f for f in self._futures if not f.done()] + [future]

    def _run(self, work: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            work(*args)
        except BaseException as exc:
            # The batch's leases run out and a later run takes its items; claim nothing more.
            self._error = self._error or exc
            self.stopped = True
            raise
        finally:
            self._slots.release()

    def raise_if_failed(self) -> None:
        """Re-raise the first unexpected error of a worker (the run must fail, saying why)."""
        if self._error is not None:
            raise self._error
