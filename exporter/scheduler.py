"""Per-account poll scheduling: a heap of next-poll times, concurrency and rate limits, backoff.

Each account has its own `AccountPoller` (own heap, semaphore, rate limiter, transport), so an
account that is down or rate-limited never delays another. A poll is: build the request
(plugin), send it (transport), parse it (plugin), apply it (lifecycle), then record it (store,
metrics) and schedule the next one from the provider's cadence — or back off.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
import logging
import random
import time
from typing import TYPE_CHECKING, Callable, TypeVar

import httpx

from .config import Account
from .errors import PollError
from .history import FinishedHistory
from .lifecycle import Outcome, WatchedCall, apply_status, expire
from .logs import AccountLog
from .metrics import STATE_FAILURE_REASON, AccountMetrics, sip_code_label
from .model import CallStatus, ErrorReason, ListedCall, State
from .store import Store, Update
from .transport import Transport

if TYPE_CHECKING:
    from .discovery import ScopeWatcher

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BACKOFF_SECONDS = 300.0
AUTH_BACKOFF_BASE_SECONDS = 5.0
#: account_up drops to 0 when every request has failed for this long (auth failures: at once)
DOWN_AFTER_SECONDS = 60.0
#: failures that do not say anything about the account's health
_CALL_LEVEL = frozenset({ErrorReason.NOT_FOUND, ErrorReason.CLIENT_ERROR, ErrorReason.RATE_LIMITED})


def backoff(attempt: int, base: float, cap: float = MAX_BACKOFF_SECONDS) -> float:
    """Exponential backoff with full jitter, added to the normal interval `base`."""
    return base + random.uniform(0, min(cap, base * 2 ** min(attempt, 20)))


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
        interval = 1.0 / rate
        self.slack = self.SLACK if interval < self.SLACK else 0.0
        self.interval = interval * (1.0 + self.slack)
        self._next = 0.0

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

    def locked(self) -> bool:
        return self.free == 0

    async def acquire(self) -> bool:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted, then cancelled: pass it on
                self.release()
            raise
        return True

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to this waiter
                return
        self.free += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class AccountPoller:
    """Polls every watched call of one account."""

    def __init__(self, account: Account, metrics: AccountMetrics, transport: Transport, store: Store,
                 max_watch_seconds: float, wall_clock: Callable[[], float] = time.time) -> None:
        self.account = account
        self.name = account.name
        self.provider_name = account.provider.name
        self.metrics = metrics
        self.transport = transport
        self.store = store
        self.max_watch_seconds = max_watch_seconds
        self.wall = wall_clock
        self.calls: dict[str, WatchedCall] = {}
        self.scopes: dict[str, "ScopeWatcher"] = {}  # set by the service
        self.counts: dict[State, int] = {}
        self._heap: list[tuple[float, int, int, WatchedCall]] = []
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._slots = Slots(account.config.max_concurrency)
        self._limiter = RateLimiter(account.config.max_requests_per_second)
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.paused_until = 0.0  # loop time; set by 401/403 and 429
        self._auth_failures = 0
        self._throttled = 0  # consecutive 429 episodes without Retry-After
        self._failing_since: float | None = None  # wall time of the first failure in a row
        self.started = self.wall()
        self.last_success = 0.0
        self.events = AccountLog(self.name, self.provider_name, account.provider.base_url, self.up, wall_clock)
        self.history = FinishedHistory()

    # -- account health and batch progress (read by the collector) --------------------------------

    def batch_progress(self) -> list[tuple[str, dict[str, int]]]:
        return [(w.scope.scope["batch_id"], w.scope.progress) for w in self.scopes.values()
                if w.scope.progress and not w.scope.complete and "batch_id" in w.scope.scope]

    def up(self, now: float) -> bool:
        if self._auth_failures:
            return False
        return self._failing_since is None or now - self._failing_since < DOWN_AFTER_SECONDS

    def _succeeded(self, now: float) -> None:
        self.last_success = now
        self.events.success()
        self._auth_failures = 0
        self._throttled = 0
        self._failing_since = None

    def _failed(self, now: float) -> None:
        if self._failing_since is None:
            self._failing_since = now

    # -- membership ----------------------------------------------------------------------------

    def add(self, call: WatchedCall, first_poll_within: float | None = None) -> None:
        """Start watching; the first poll is jittered over one interval (or the given spread)."""
        self.calls[call.call_id] = call
        self.counts[call.state] = self.counts.get(call.state, 0) + 1
        spread = self.account.cadence[call.state] if first_poll_within is None else first_poll_within
        self._schedule(call, random.uniform(0, spread))

    def remove(self, call_id: str) -> WatchedCall | None:
        call = self.calls.pop(call_id, None)
        if call is not None:
            call.watching = False
            self.counts[call.state] -= 1
        return call

    def _schedule(self, call: WatchedCall, delay: float) -> None:
        loop = asyncio.get_running_loop()
        call.gen += 1
        due = loop.time() + delay
        heapq.heappush(self._heap, (due, call.seq, call.gen, call))  # seq breaks ties: no new int per entry
        if self._heap[0][3] is call:
            self._wake.set()

    # -- the loop --------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"poller-{self.name}")
        self.events.start()

    async def stop(self, grace: float) -> None:
        """Stop dispatching; let in-flight polls finish for up to `grace` seconds, then cancel."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.transport.aclose()
        await self.events.stop()

    async def _sleep_until(self, when: float) -> None:
        loop = asyncio.get_running_loop()
        self._wake.clear()
        self._timer = loop.call_at(when, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            self._timer.cancel()

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
            ready_at = max(due, self.paused_until)
            if ready_at > loop.time():
                await self._sleep_until(ready_at)
                continue
            heapq.heappop(heap)
            await self._slots.acquire()
            await self._limiter.wait()
            task = asyncio.create_task(self._poll(call))
            self._inflight.add(task)
            task.add_done_callback(self._poll_done)

    def _poll_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("poll task of account %s failed", self.name, exc_info=task.exception())

    # -- one poll --------------------------------------------------------------------------------

    async def _poll(self, call: WatchedCall) -> None:
        if not call.watching:  # unwatched while it waited for a slot
            return
        now = self.wall()
        if now - call.first_seen > self.max_watch_seconds:
            self._finish(call, expire(call, now, "not terminal within max_watch_seconds"), now)
            return
        provider = self.account.provider
        started = time.perf_counter()
        self.metrics.requests.inc()
        try:
            try:
                request = provider.build_request(call.params)
                response = await self.transport.send(request)
                status = provider.parse_response(call.params, response)
            finally:
                self.metrics.request_duration.observe(time.perf_counter() - started)
        except PollError as exc:
            self._on_error(call, exc)
            return
        except Exception as exc:  # a plugin bug must not stop the account: count it and back off
            log.warning("account %s: plugin %s failed to handle a response: %s",
                        self.name, self.provider_name, type(exc).__name__)
            self._on_error(call, PollError(ErrorReason.INVALID_RESPONSE, type(exc).__name__))
            return
        now = self.wall()
        self._succeeded(now)
        if call.watching:
            self._apply(call, status, now, polls=1)

    def _apply(self, call: WatchedCall, status: CallStatus, now: float, polls: int) -> None:
        """What the provider said about a watched call (a poll, a listing or a webhook)."""
        status = self.account.privacy.apply(self.account.provider, status)  # before anything keeps it
        if status.state is State.UNKNOWN:
            _warn_unknown(self.provider_name, status.provider_status)
        previous = call.state
        outcome = apply_status(call, status, now, self.account.secrets, self.account.secret_fields)
        if outcome.time_to_answer is not None:
            self.metrics.time_to_answer.observe(outcome.time_to_answer)
        if outcome.finished:
            self._finish(call, outcome, now, polls=polls)
            return
        self._move(previous, call.state)
        call.errors = 0
        self.store.queue(Update(call.seq, outcome.fields, polls=polls, history=outcome.history))
        self._schedule(call, self.account.cadence[call.state])

    # -- requests besides status polls: listings, batch progress, confirmations -----------------

    async def fetch(self, request: httpx.Request, parse: Callable[[httpx.Response], T]) -> T:
        """Send `request` within the account's limits and books (concurrency, rate, metrics,
        health, 401/429 pauses) and parse the answer; `PollError` on failure, already counted."""
        loop = asyncio.get_running_loop()
        while self.paused_until > loop.time():
            await asyncio.sleep(self.paused_until - loop.time())
        async with self._slots:
            await self._limiter.wait()
            started = time.perf_counter()
            self.metrics.requests.inc()
            try:
                try:
                    result = parse(await self.transport.send(request))
                finally:
                    self.metrics.request_duration.observe(time.perf_counter() - started)
            except PollError as exc:
                self._account_error(exc)
                raise
            except Exception as exc:  # a plugin bug: counted like an unparseable answer
                error = PollError(ErrorReason.INVALID_RESPONSE, type(exc).__name__)
                self._account_error(error)
                raise error from None
        self._succeeded(self.wall())
        return result

    def refreshed(self, listed: ListedCall, hold: float) -> bool:
        """A listing's news about a call we watch; its own poll is pushed back by `hold`."""
        call = self.calls.get(listed.params.get("call_id", ""))
        if call is None:
            return False
        self._apply(call, listed.status, self.wall(), polls=0)
        if call.watching and hold:
            self._schedule(call, hold + self.account.cadence[call.state])
        return True

    def pushed(self, listed: ListedCall) -> bool:
        """A result webhook about a call we watch: applied at once, then confirmed by one
        status request (the record stays the source of truth; a conflicting terminal answer
        is kept in the history). False when we do not watch the call."""
        call = self.calls.get(listed.params.get("call_id", ""))
        if call is None:
            return False
        self._apply(call, listed.status, self.wall(), polls=0)
        task = asyncio.create_task(self._confirm(call))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return True

    async def _confirm(self, call: WatchedCall) -> None:
        provider = self.account.provider
        try:
            status = await self.fetch(provider.build_request(call.params),
                                      lambda r: provider.parse_response(call.params, r))
        except PollError:
            self.store.queue(Update(call.seq, {}, polls=1, poll_errors=1))
            return  # counted; a call still watched keeps being polled anyway
        now = self.wall()
        if call.watching:
            self._apply(call, status, now, polls=1)
            return
        conflict = status.state.terminal and (status.state, status.provider_status) != (
            call.state, call.provider_status)
        at = status.state_since or status.ended_at
        self.store.queue(Update(call.seq, {"last_polled_at": now}, polls=1, history=[
            (status.state.value, status.provider_status, at.timestamp() if at else now)] if conflict else []))

    def _account_error(self, exc: PollError) -> float:
        """Count a failed request and act for the whole account: health, and the pause a 401/403
        or 429 calls for. Returns the pause in seconds (0 for none).

        A pause grows with consecutive episodes, not with answers: the answers of requests that
        were already in flight when the account paused belong to the same episode.
        """
        reason = exc.reason
        self.metrics.errors[reason].inc()
        self.events.failure(reason, str(exc))
        if reason not in _CALL_LEVEL:
            self._failed(self.wall())
        if reason not in (ErrorReason.UNAUTHORIZED, ErrorReason.RATE_LIMITED):
            return 0.0
        loop_now = asyncio.get_running_loop().time()
        if loop_now < self.paused_until:  # same episode: the pause already covers it
            return self.paused_until - loop_now
        if reason is ErrorReason.UNAUTHORIZED:
            self._auth_failures += 1
            pause = backoff(self._auth_failures, AUTH_BACKOFF_BASE_SECONDS)
            log.warning("account %s: credentials refused (%s); pausing all requests for %.0fs",
                        self.name, exc, pause)
        elif exc.retry_after is not None:
            pause = exc.retry_after
        else:
            self._throttled += 1
            pause = backoff(self._throttled, min(self.account.cadence.values()))
        self.paused_until = loop_now + pause
        return pause

    def _on_error(self, call: WatchedCall, exc: PollError) -> None:
        reason = exc.reason
        pause = self._account_error(exc)
        now = self.wall()
        log.debug("account %s call %s: %s", self.name, call.call_id, exc)
        if not call.watching:
            return
        self.store.queue(Update(call.seq, {"last_polled_at": now}, polls=1, poll_errors=1))
        cadence = self.account.cadence[call.state]
        if reason is ErrorReason.NOT_FOUND:
            grace = self.account.config.not_found_grace_seconds
            if call.seen or now - call.first_seen >= grace:
                why = "provider no longer knows the call (404 after its retention window)" if call.seen \
                    else f"provider did not know the call within not_found_grace_seconds ({grace:g})"
                self._finish(call, expire(call, now, why), now)
            else:
                self._schedule(call, cadence)
            return
        if pause:  # 401/403 or 429: the whole account waits; this call right after
            self._schedule(call, pause + random.uniform(0, cadence))
            return
        call.errors += 1
        delay = backoff(call.errors, cadence)
        if exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        self._schedule(call, delay)

    def _move(self, old: State, new: State) -> None:
        if old is not new:
            self.counts[old] -= 1
            self.counts[new] = self.counts.get(new, 0) + 1

    def _finish(self, call: WatchedCall, outcome: Outcome, now: float, polls: int = 0) -> None:
        """A terminal state: count it once, persist it, forget the call."""
        self.counts[outcome.previous] -= 1
        del self.calls[call.call_id]
        call.watching = False
        state = outcome.finished
        assert state is not None
        self.metrics.finished[state].inc()
        self.history.add(now, state)
        if state is State.EXPIRED:
            self.events.expired(outcome.fields.get("reason", ""))
        if outcome.time_to_terminal is not None and state in self.metrics.time_to_terminal:
            self.metrics.time_to_terminal[state].observe(outcome.time_to_terminal)
        if outcome.talk_time is not None:
            self.metrics.talk_time.observe(outcome.talk_time)
        failure = outcome.failure_reason or STATE_FAILURE_REASON.get(state)
        if failure is not None and state not in (State.COMPLETED, State.EXPIRED):
            self.metrics.failures[failure].inc()
        if outcome.sip_status_code is not None and state is not State.COMPLETED:
            self.metrics.sip_failures(sip_code_label(outcome.sip_status_code)).inc()
        self.store.queue(Update(call.seq, outcome.fields, polls=polls, history=outcome.history))


_unknown_seen: set[tuple[str, str]] = set()


def _warn_unknown(provider: str, raw: str) -> None:
    """Log each unknown raw status once per provider (the value is bounded by what providers send)."""
    key = (provider, raw[:64])
    if key not in _unknown_seen and len(_unknown_seen) < 1000:
        _unknown_seen.add(key)
        log.warning("provider %s returned unknown status %r; the call stays in state unknown and is polled",
                    provider, raw[:64])
