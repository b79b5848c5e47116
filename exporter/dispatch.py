"""Dispatching one account's requests: due times, concurrency and the rate limit.

`Dispatcher` keeps a heap of next-poll times and starts each due poll once a concurrency slot is
free and the rate limiter allows it, never while the account is paused (401/403, 429). Requests
besides status polls (listings, batch progress, confirmations) pass the same gates through
`admitted`. It knows nothing of what a poll does: `AccountPoller` hands it the coroutine.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator, Awaitable, Callable, Coroutine

from .health import AccountHealth
from .lifecycle import WatchedCall

log = logging.getLogger(__name__)


class RateLimiter:
    """Spaces requests 1/rate apart: never more than `rate` in any second.

    Requests get slots on a virtual schedule 1/rate apart (no credit for idle time, so no
    bursts). Above 1,000 requests/s the spacing is below the event loop's ~1 ms timer
    resolution: a sleep of a few microseconds would idle the dispatcher for a whole tick
    (capping one account at a few thousand requests/s), so a request whose slot is less than
    `SLACK` ahead goes out at once, and the slots are stretched by `SLACK` per second so that
    any second still holds at most `rate` of them.
    """

    SLACK = 0.001

    def __init__(self, rate: float) -> None:
        self._next = 0.0
        self.set_rate(rate)

    def set_rate(self, rate: float) -> None:
        """A new rate from the next slot on (a replica's share of the account's limit changed)."""
        interval = 1.0 / rate
        self.slack = self.SLACK if interval < self.SLACK else 0.0
        self.interval = interval * (1.0 + self.slack)

    async def wait(self) -> None:
        now = asyncio.get_running_loop().time()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot - now > self.slack:
            await asyncio.sleep(slot - now)


class Slots:
    """`asyncio.Semaphore` for the dispatch loop, without the scan of every waiter that
    Python 3.11's `Semaphore.acquire` makes each time (~3 % of a poll's CPU). A released slot
    is handed to the oldest waiter directly."""

    def __init__(self, value: int) -> None:
        self.free = value
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted, then cancelled: pass it on
                self.release()
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to this waiter
                return
        self.free += 1


class Dispatcher:
    """Starts `poll(call)` for each call when it is due, within the account's limits."""

    def __init__(
        self,
        name: str,
        max_concurrency: int,
        max_requests_per_second: float,
        health: AccountHealth,
        poll: Callable[[WatchedCall], Coroutine[None, None, None]],
    ) -> None:
        self.name = name
        self.health = health
        self._poll = poll
        self._heap: list[tuple[float, int, int, WatchedCall]] = []
        self._wake = asyncio.Event()
        self._slots = Slots(max_concurrency)
        self._limiter = RateLimiter(max_requests_per_second)
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def schedule(self, call: WatchedCall, delay: float) -> None:
        """Poll `call` in `delay` seconds (any earlier schedule of it is dropped)."""
        call.gen += 1
        due = asyncio.get_running_loop().time() + delay
        heapq.heappush(self._heap, (due, call.seq, call.gen, call))  # seq breaks ties: no new int per entry
        if self._heap[0][3] is call:
            self._wake.set()

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Hold a slot for one request besides the status polls, once the account is not
        paused and the rate limiter allows it."""
        loop = asyncio.get_running_loop()
        while self.health.paused_until > loop.time():
            await asyncio.sleep(self.health.paused_until - loop.time())
        await self._slots.acquire()
        try:
            await self._limiter.wait()
            yield
        finally:
            self._slots.release()

    def set_rate(self, rate: float) -> None:
        self._limiter.set_rate(rate)

    def spawn(self, work: Awaitable[None]) -> None:
        """Run `work` as part of the account (awaited or cancelled by `stop`)."""
        task = asyncio.ensure_future(work)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"poller-{self.name}")

    async def stop(self, grace: float) -> None:
        """Stop dispatching; let in-flight work finish for up to `grace` seconds, then cancel."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _sleep_until(self, when: float) -> None:
        self._wake.clear()
        timer = asyncio.get_running_loop().call_at(when, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            timer.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        heap = self._heap
        while True:
            if not heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            due, _, gen, call = heap[0]
            if gen != call.gen or not call.watching:
                heapq.heappop(heap)
                continue
            ready_at = max(due, self.health.paused_until)
            if ready_at > loop.time():
                await self._sleep_until(ready_at)
                continue
            heapq.heappop(heap)
            await self._slots.acquire()
            await self._limiter.wait()
            task = loop.create_task(self._poll(call))
            self._inflight.add(task)
            task.add_done_callback(self._poll_done)

    def _poll_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("poll task of account %s failed", self.name, exc_info=task.exception())
