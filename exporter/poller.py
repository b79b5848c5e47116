"""Polling one account's watched calls and applying what the provider says about them.

A poll is: build the request (plugin), send it (transport), parse it (plugin), apply it (the
state machine in `lifecycle`), then record it (store, metrics) and schedule the next one from
the provider's cadence — or back off. Listings and webhooks about a watched call are applied
the same way (`refreshed`, `pushed`). Every request, of any kind, is sent and counted by the
account's `AccountExchange`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from functools import partial
from typing import Any, Callable, Mapping, TypeVar

import httpx

from .config import Account
from .dispatch import Dispatcher
from .errors import PollError
from .exchange import AccountExchange
from .health import PAUSING, AccountHealth, backoff
from .history import FinishedHistory
from .lifecycle import Outcome, WatchedCall, apply_status, expire
from .logs import AccountLog
from .metrics import AccountMetrics
from .model import CallStatus, ErrorReason, ListedCall, State
from .provider import Provider
from .store import CallStore, Update
from .transport import Transport

log = logging.getLogger(__name__)
T = TypeVar("T")


class AccountPoller:
    """Polls every watched call of one account (own dispatcher, health and transport), so an
    account that is down or rate-limited never delays another."""

    def __init__(
        self,
        account: Account,
        metrics: AccountMetrics,
        transport: Transport,
        store: CallStore,
        max_watch_seconds: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.account = account
        self.name = account.name
        self.provider_name = account.provider.name
        self.metrics = metrics
        self.transport = transport
        self.store = store
        self.max_watch_seconds = max_watch_seconds
        self.wall = wall_clock
        self.calls: dict[str, WatchedCall] = {}
        #: calls finished here whose fenced terminal write is not in yet (a row read meanwhile is
        #: stale), with the fence that write carries
        self.finishing: dict[str, tuple[int, int]] = {}
        self.counts: dict[State, int] = {}
        self.health = AccountHealth(account.name, min(account.cadence.values()))
        self.dispatcher = Dispatcher(
            account.name,
            account.config.max_concurrency,
            account.config.max_requests_per_second or 1.0,
            self.health,
            self._poll,
        )
        self.events = AccountLog(self.name, self.provider_name, account.provider.base_url, self.up, wall_clock)
        self.exchange = AccountExchange(
            self.name, self.provider_name, metrics, transport, self.health, self.events, wall_clock
        )
        #: (partition, epoch) a write of this call's state is fenced on; None: no fence (SQLite)
        self.fence: Callable[[str, str], tuple[int, int] | None] = lambda account, call_id: None
        self.history = FinishedHistory()  # finished calls per minute, for the landing page

    @property
    def provider(self) -> Provider[Any, Any]:
        return self.account.provider

    @property
    def cadence(self) -> Mapping[State, float]:
        return self.account.cadence

    # -- read by the collector and the landing page ----------------------------------------------

    def up(self, now: float) -> bool:
        return self.health.up(now)

    @property
    def last_success(self) -> float:
        return self.health.last_success

    # -- membership ----------------------------------------------------------------------------

    def add(self, call: WatchedCall) -> None:
        """Start watching; the first poll is jittered over one interval."""
        call.fence = self.fence(self.name, call.call_id)
        self.calls[call.call_id] = call
        self.counts[call.state] = self.counts.get(call.state, 0) + 1
        self.dispatcher.schedule(call, random.uniform(0, self.account.cadence[call.state]))

    def remove(self, call_id: str) -> WatchedCall | None:
        call = self.calls.pop(call_id, None)
        if call is not None:
            call.watching = False
            self.counts[call.state] -= 1
        return call

    def provider_statuses(self, scope: Mapping[str, str]) -> set[str | None]:
        """The raw statuses the watched calls of `scope` (their params match it) show now."""
        items = scope.items()
        return {
            c.provider_status for c in self.calls.values() if all(getattr(c.params, k, None) == v for k, v in items)
        }

    def share_rate(self, share: float) -> None:
        """Poll at `share` of the account's rate limit: the replicas' shares sum to at most 1
        (they are their fractions of the leased partitions), so the provider never sees more."""
        rate = self.account.config.max_requests_per_second or 1.0
        self.dispatcher.set_rate(rate * max(share, 1 / 256))

    def start(self) -> None:
        self.dispatcher.start()
        self.events.start()

    async def stop(self, grace: float) -> None:
        """Stop polling (in-flight requests get `grace` seconds), then close the transport."""
        await self.dispatcher.stop(grace)
        await self.transport.aclose()
        await self.events.stop()

    # -- requests besides status polls ---------------------------------------------------------

    async def fetch(self, request: httpx.Request, parse: Callable[[httpx.Response], T]) -> T:
        """A request besides status polls (a listing, batch progress), within the account's limits
        and books; `PollError` on failure, already counted."""
        async with self.dispatcher.admitted():
            return await self.exchange.send(lambda: request, parse)

    # -- status polls ---------------------------------------------------------------------------

    async def _poll(self, call: WatchedCall) -> None:
        if not call.watching:  # unwatched while it waited for a slot
            return
        now = self.wall()
        if now - call.first_seen > self.max_watch_seconds:
            self._finish(call, expire(call, now, "not terminal within max_watch_seconds"), now)
            return
        provider, params = self.account.provider, call.params
        try:
            status = await self.exchange.send(
                partial(provider.build_request, params), partial(provider.parse_response, params)
            )
        except PollError as exc:
            self._on_error(call, exc)
            return
        if call.watching:
            self._apply(call, status, self.wall(), polls=1)

    def _on_error(self, call: WatchedCall, exc: PollError) -> None:
        """A failed status poll: expire a call the provider forgot, else retry it later."""
        log.debug("account %s call %s: %s", self.name, call.call_id, exc)
        if not call.watching:
            return
        now = self.wall()
        self._write(call, Update(call.seq, {"last_polled_at": now}, polls=1, poll_errors=1))
        cadence = self.account.cadence[call.state]
        if exc.reason is ErrorReason.NOT_FOUND:
            grace = self.account.config.not_found_grace_seconds
            if call.seen or now - call.first_seen >= grace:
                why = (
                    "provider no longer knows the call (404 after its retention window)"
                    if call.seen
                    else f"provider did not know the call within not_found_grace_seconds ({grace:g})"
                )
                self._finish(call, expire(call, now, why), now)
            else:
                self.dispatcher.schedule(call, cadence)
            return
        pause = self.health.pause_left(asyncio.get_running_loop().time()) if exc.reason in PAUSING else 0.0
        if pause:  # 401/403 or 429: the whole account waits; this call right after
            self.dispatcher.schedule(call, pause + random.uniform(0, cadence))
            return
        call.errors += 1
        delay = backoff(call.errors, cadence)
        if exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        self.dispatcher.schedule(call, delay)

    # -- applying what the provider said (a poll, a listing or a webhook) --------------------------

    def _apply(self, call: WatchedCall, status: CallStatus, now: float, polls: int) -> None:
        status = self.account.privacy.apply(self.account.provider, status)  # before anything keeps it
        if status.state is State.UNKNOWN:
            _warn_unknown(self.provider_name, status.provider_status)
        previous = call.state
        outcome = apply_status(call, status, now, self.account.secrets, self.account.secret_fields)
        if outcome.finished:
            self._finish(call, outcome, now, polls=polls)
            return
        if previous is not call.state:
            self.counts[previous] -= 1
            self.counts[call.state] = self.counts.get(call.state, 0) + 1
        call.errors = 0
        answered = outcome.time_to_answer
        self._write(
            call,
            Update(call.seq, outcome.fields, polls=polls, history=outcome.history),
            None if answered is None else partial(self.metrics.time_to_answer.observe, answered),
        )
        self.dispatcher.schedule(call, self.account.cadence[call.state])

    def _finish(self, call: WatchedCall, outcome: Outcome, now: float, polls: int = 0) -> None:
        """A terminal state: count it once, persist it, forget the call."""
        self.counts[outcome.previous] -= 1
        del self.calls[call.call_id]
        call.watching = False
        count = partial(self._count_finished, outcome, now)
        if call.fence is not None:  # until its write is in, a stale stored row must not revive it
            self.finishing[call.call_id] = call.fence
            count = partial(self._settled, call.call_id, count)
        self._write(call, Update(call.seq, outcome.fields, polls=polls, history=outcome.history), count)

    def _settled(self, call_id: str, count: Callable[[], None]) -> None:
        self.finishing.pop(call_id, None)
        count()

    def _count_finished(self, outcome: Outcome, now: float) -> None:
        if outcome.time_to_answer is not None:
            self.metrics.time_to_answer.observe(outcome.time_to_answer)
        self.metrics.count_finished(outcome)
        assert outcome.finished is not None
        self.history.add(now, outcome.finished)
        if outcome.finished is State.EXPIRED:
            self.events.expired(str(outcome.fields.get("reason", "")))

    def _write(self, call: WatchedCall, update: Update, count: Callable[[], None] | None = None) -> None:
        """Queue a state write; its metrics count at once, or, where writes are fenced, only
        once the fence let the write through (so replicas' summed counters are exact)."""
        update.fence = call.fence  # the epoch it was loaded under: a stale copy can never write
        if update.fence is None:
            if count is not None:
                count()
        else:
            update.after = count
        self.store.queue(update)

    def refreshed(self, listed: ListedCall, hold: float) -> bool:
        """A listing's news about a call we watch; its own poll is pushed back by `hold`."""
        call = self.calls.get(listed.params.get("call_id", ""))
        if call is None:
            return False
        self._apply(call, listed.status, self.wall(), polls=0)
        if call.watching and hold:
            self.dispatcher.schedule(call, hold + self.account.cadence[call.state])
        return True

    def pushed(self, listed: ListedCall) -> bool:
        """A result webhook about a call we watch: applied at once, then confirmed by one
        status request (the record stays the source of truth; a conflicting terminal answer
        is kept in the history). False when we do not watch the call."""
        call = self.calls.get(listed.params.get("call_id", ""))
        if call is None:
            return False
        self._apply(call, listed.status, self.wall(), polls=0)
        self.dispatcher.spawn(self._confirm(call))
        return True

    async def _confirm(self, call: WatchedCall) -> None:
        provider = self.account.provider
        try:
            status = await self.fetch(
                provider.build_request(call.params), partial(provider.parse_response, call.params)
            )
        except PollError:
            self._write(call, Update(call.seq, {}, polls=1, poll_errors=1))
            return  # counted; a call still watched keeps being polled anyway
        now = self.wall()
        if call.watching:
            self._apply(call, status, now, polls=1)
            return
        conflict = status.state.terminal and (status.state, status.provider_status) != (
            call.state,
            call.provider_status,
        )
        at = status.state_since or status.ended_at
        self._write(
            call,
            Update(
                call.seq,
                {"last_polled_at": now},
                polls=1,
                history=[(status.state.value, status.provider_status, at.timestamp() if at else now)]
                if conflict
                else [],
            ),
        )


_unknown_seen: set[tuple[str, str]] = set()


def _warn_unknown(provider: str, raw: str) -> None:
    """Log each unknown raw status once per provider (the value is bounded by what providers send)."""
    key = (provider, raw[:64])
    if key not in _unknown_seen and len(_unknown_seen) < 1000:
        _unknown_seen.add(key)
        log.warning(
            "provider %s returned unknown status %r; the call stays in state unknown and is polled", provider, raw[:64]
        )
