"""A bounded queue that groups same-size images into batches for one inference thread.

Requests wait in arrival order. The worker takes the oldest one and every waiting request of
the same size (up to ``max_batch``); if that is fewer than ``max_batch`` it waits for more
until the oldest has waited ``max_wait``, then runs the batch on its own thread, so the event
loop keeps accepting, decoding and answering while the model computes. Requests of another
size stay queued, in order, for a later batch. A full queue refuses at once (:class:`QueueFull`)
instead of letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatchStats", "MicroBatcher", "QueueFull"]


class QueueFull(RuntimeError):
    """The queue holds ``max_queue`` waiting requests; try again later."""


@dataclass
class BatchStats:
    """Counters since start: batches run, images in them, the largest batch, failures."""

    batches: int = 0
    images: int = 0
    largest: int = 0
    rejected: int = 0
    failed: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches


@dataclass
class _Request:
    key: Hashable
    item: Any
    future: asyncio.Future
    arrived: float


class MicroBatcher:
    """Run ``run_batch`` on batches of same-key items submitted from concurrent coroutines.

    Args:
        run_batch: ``items -> results`` (same length, same order), called on one worker
            thread; all items of a call share a key. An exception fails the batch's requests
            (a batch of several is retried one by one first, so one bad item fails alone).
        max_batch: most items per call.
        max_wait: seconds the oldest waiting item may wait for company.
        max_queue: most items waiting (not yet running).
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[Any]], Sequence[Any]],
        *,
        max_batch: int = 8,
        max_wait: float = 0.01,
        max_queue: int = 64,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait, max_queue
        self.stats = BatchStats()
        self._pending: deque[_Request] = deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def waiting(self) -> int:
        """Requests queued and not yet running."""
        return sum(not r.future.done() for r in self._pending)

    async def start(self) -> None:
        """Start the worker (call from the event loop that will submit)."""
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fcnseg-infer")
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        """Stop the worker; queued requests fail with ``RuntimeError``."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._pending:
            r = self._pending.popleft()
            if not r.future.done():
                r.future.set_exception(RuntimeError("server shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, key: Hashable, item: Any) -> Any:
        """Queue ``item`` (batched only with items of the same ``key``) and await its result.

        Raises:
            QueueFull: ``max_queue`` requests are already waiting.
            RuntimeError: the batcher is not running.
            Exception: whatever ``run_batch`` raised for this item.
        """
        if self._task is None or self._task.done():
            raise RuntimeError("batcher is not running")
        if len(self._pending) >= self.max_queue:
            self._drop_abandoned()
            if len(self._pending) >= self.max_queue:
                self.stats.rejected += 1
                raise QueueFull(f"{self.max_queue} requests are already waiting")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(key, item, future, time.monotonic()))
        self._arrived.set()
        return await future

    def _drop_abandoned(self) -> None:
        # a client that went away cancels its future; its slot is freed here
        self._pending = deque(r for r in self._pending if not r.future.done())

    def _same_key(self, key: Hashable) -> int:
        return sum(r.key == key and not r.future.done() for r in self._pending)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_abandoned()
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            first = self._pending[0]
            deadline = first.arrived + self.max_wait
            while self._same_key(first.key) < self.max_batch and not first.future.done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take(first.key)
            if not batch:
                continue
            results = await loop.run_in_executor(self._executor, self._run, batch)
            for r, (ok, value) in zip(batch, results, strict=True):
                if r.future.done():
                    continue  # the client went away
                if ok:
                    r.future.set_result(value)
                else:
                    r.future.set_exception(value)

    def _take(self, key: Hashable) -> list[_Request]:
        batch: list[_Request] = []
        rest: deque[_Request] = deque()
        for r in self._pending:
            if r.future.done():
                continue
            if r.key == key and len(batch) < self.max_batch:
                batch.append(r)
            else:
                rest.append(r)
        self._pending = rest
        return batch

    def _run(self, batch: list[_Request]) -> list[tuple[bool, Any]]:
        """On the worker thread: results as ``(ok, value-or-exception)`` per request."""
        items = [r.item for r in batch]
        try:
            outs = list(self.run_batch(items))
            if len(outs) != len(items):
                raise RuntimeError(f"run_batch returned {len(outs)} results for {len(items)}")
            self._count(len(items))
            return [(True, o) for o in outs]
        except Exception as e:  # noqa: BLE001 - handed to the waiting requests
            if len(items) == 1:
                self.stats.failed += 1
                return [(False, e)]
        return [self._run([r])[0] for r in batch]  # find the bad item; the others still succeed

    def _count(self, n: int) -> None:
        s = self.stats
        s.batches += 1
        s.images += n
        s.largest = max(s.largest, n)
        s.sizes[n] = s.sizes.get(n, 0) + 1
