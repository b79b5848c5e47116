"""Watch scopes: discover an agent's or a batch's calls and refresh them in bulk.

One `ScopeWatcher` per scope runs a cycle every refresh interval (the account's `queued`
cadence), every request going through the account (same rate limit, concurrency, metrics and
health as status requests):

1. discovery — list the scope's calls newest first (unfiltered) down to what the last cycle
   already saw (the scope's start for an agent; everything for a batch on its first cycle) and
   start watching each new one (`source="scope"`);
2. bulk refresh — list each non-terminal raw status the scope's watched calls are in, and
   apply what the list says to them. A refreshed call's own status poll is pushed back, so a
   call the list keeps covering is never polled on its own; one that drops out of every
   non-terminal listing (it ended) gets its per-call poll, which confirms the end;
3. progress — for batches, read the provider's job counters (a gauge while the batch is
   watched) and finish the scope once the provider says the batch is complete.

The module knows the accounts only through `ScopeAccount` and new calls only through the
`Register` callable it is given: it does not know the service, the poller's internals or the
store's registration path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Protocol, TypeVar

import httpx

from .config import validate_scope
from .errors import PollError, RequestError
from .metrics import BatchJobs
from .model import ListedCall, State
from .provider import Provider
from .records import scope_record
from .store import CallStore, ScopeRow

log = logging.getLogger(__name__)
T = TypeVar("T")

#: pages per listing per cycle: a bound, so one huge scope cannot starve the account's budget
MAX_PAGES = 50
#: discovery re-reads this far behind the newest call it has seen (clock skew, late writes)
OVERLAP_SECONDS = 60.0


class ScopeAccount(Protocol):
    """What a scope needs from its account (an `AccountPoller` is one)."""

    name: str
    provider_name: str

    @property
    def cadence(self) -> Mapping[State, float]: ...

    @property
    def provider(self) -> Provider[Any, Any]: ...

    async def fetch(self, request: httpx.Request, parse: Callable[[httpx.Response], T]) -> T: ...

    def refreshed(self, listed: ListedCall, hold: float) -> bool: ...

    def provider_statuses(self, scope: Mapping[str, str]) -> set[str | None]: ...


#: start watching a call a listing of the account revealed; True if it is watched now
Register = Callable[[str, ListedCall], Awaitable[bool]]


class ScopeWatcher:
    """Runs one scope's discovery / refresh / progress cycle until stopped or complete."""

    def __init__(
        self, row: ScopeRow, account: ScopeAccount, register: Register, on_change: Callable[[ScopeRow], Awaitable[None]]
    ) -> None:
        self.row = row
        self.account = account
        self.provider = account.provider
        self.progress: dict[str, int] = {}
        self._register = register
        self._on_change = on_change
        self._high_water: float | None = None  # newest provider creation time discovery has seen
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        return self.account.cadence[State.QUEUED]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"scope-{self.row.id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while not self.row.complete:
            started = time.monotonic()
            try:
                await self.cycle()
            except PollError as exc:  # counted by the account; try again next cycle
                log.debug("scope %s: %s", self.row.id, exc)
            except Exception:
                log.exception("scope %s: cycle failed", self.row.id)
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def cycle(self) -> None:
        await self.discover()
        await self.refresh()
        if self.provider.supports("progress"):
            await self.check_progress()

    # -- the three steps -------------------------------------------------------------------

    async def discover(self) -> None:
        start = None if self.provider.scope_includes_past else self.row.created_at
        floor = start if self._high_water is None else max(self._high_water - OVERLAP_SECONDS, start or 0.0)
        newest, found = self._high_water, 0
        async for listed in self._listing(None, stop_below=floor):
            created = listed.status.created_at.timestamp() if listed.status.created_at else None
            if created is not None and (newest is None or created > newest):
                newest = created
            if floor is not None and created is not None and created < floor:
                continue
            if self.account.refreshed(listed, hold=2 * self.interval):
                continue
            if await self._register(self.account.name, listed):
                found += 1
        self._high_water = newest if newest is not None else time.time()
        self.row = replace(self.row, discovered=self.row.discovered + found)
        await self._on_change(self.row)

    async def refresh(self) -> None:
        """List each non-terminal raw status our watched calls of this scope show."""
        statuses = self.account.provider_statuses(self.row.scope)
        for status in self.provider.list_status_filters:
            if status in statuses:
                async for listed in self._listing(status):
                    self.account.refreshed(listed, hold=2 * self.interval)

    async def check_progress(self) -> None:
        scope = self.row.scope
        progress = await self.account.fetch(
            self.provider.build_progress_request(scope), lambda r: self.provider.parse_progress_response(scope, r)
        )
        self.progress = dict(progress.counts)
        if progress.complete:
            async for listed in self._listing(None):  # the final outcome of every job, once
                self.account.refreshed(listed, hold=0.0)
            self.row = replace(self.row, complete=True)
            self.progress = {}
            log.info("scope %s: batch complete", self.row.id)
        await self._on_change(self.row)

    async def _listing(self, status: str | None, stop_below: float | None = None) -> AsyncIterator[ListedCall]:
        """Every call of the scope (optionally one raw status), page by page, newest first.

        With `stop_below`, paging stops after a page whose oldest call was created before it.
        """
        scope = self.row.scope
        extra: dict[str, Any] = {}
        if self.provider.list_filters_created_after and stop_below is not None:
            extra["created_after"] = datetime.fromtimestamp(stop_below, tz=timezone.utc)
        for page in range(1, MAX_PAGES + 1):
            result = await self.account.fetch(
                self.provider.build_list_request(scope, page, status, **extra),
                lambda r: self.provider.parse_list_response(scope, r),
            )
            extra.pop("cursor", None)
            if result.next_cursor is not None:  # cursor paging: only plugins that return one get it
                extra["cursor"] = result.next_cursor
            for listed in result.calls:
                yield listed
            oldest = [c.status.created_at.timestamp() for c in result.calls if c.status.created_at]
            if not result.has_next or (stop_below is not None and oldest and min(oldest) < stop_below):
                return


class Scopes:
    """The stored scopes and their watchers: loaded at start, added and deleted through the API."""

    def __init__(
        self,
        store: CallStore,
        accounts: Mapping[str, ScopeAccount],
        register: Register,
        max_watched_batches: int,
        owns: Callable[[str, str], bool] = lambda account, scope_id: True,
    ) -> None:
        self.store = store
        #: whether this process watches a scope (with N replicas: its partition is leased here)
        self.owns = owns
        self.accounts = accounts
        self.max_watched_batches = max_watched_batches
        self.watchers: dict[str, ScopeWatcher] = {}
        self._register = register

    async def load(self, configured: Iterable[tuple[str, Mapping[str, str]]]) -> None:
        """Store config scopes (`(account, scope)`) on their first start, keeping that start time;
        drop config scopes no longer configured; then watch every stored scope of an account."""
        keep = set()
        for account, scope in configured:
            keep.add((account, _key(scope)))
            await self.store.add_scope(ScopeRow(_new_id(), account, scope, time.time(), "config"))
        for row in await self.store.scopes():
            if row.origin == "config" and (row.account, _key(row.scope)) not in keep:
                await self.store.delete_scope(row.id)
            elif row.account in self.accounts and self.owns(row.account, row.id):
                self._watch(row)

    async def reconcile(self) -> None:
        """Watch exactly the stored scopes this process owns (added, deleted or handed over on
        another replica since): each scope is refreshed by exactly one replica."""
        rows = {row.id: row for row in await self.store.scopes()}
        for id in [i for i, w in self.watchers.items() if i not in rows or not self.owns(w.row.account, i)]:
            await self.watchers.pop(id).stop()
        for id, row in rows.items():
            if id not in self.watchers and row.account in self.accounts and self.owns(row.account, id):
                self._watch(row)

    def _watch(self, row: ScopeRow) -> None:
        watcher = ScopeWatcher(row, self.accounts[row.account], self._register, self._changed)
        self.watchers[row.id] = watcher
        if not row.complete:
            watcher.start()

    async def add(self, account: str, value: Any) -> ScopeRow:
        """A scope from the API: validated against the account's plugin, stored, watched."""
        acc = self.accounts.get(account)
        if acc is None:
            raise RequestError(f"account: unknown account {account[:64]!r}", 404)
        try:
            scope = validate_scope(type(acc.provider), value)
        except ValueError as exc:
            raise RequestError(f"scope: {exc}") from None
        if "batch_id" in scope and sum(1 for _ in self._open_batches()) >= self.max_watched_batches:
            raise RequestError(f"max_watched_batches ({self.max_watched_batches}) reached", 503)
        row = await self.store.add_scope(ScopeRow(_new_id(), account, scope, time.time(), "api"))
        if row.id not in self.watchers and self.owns(account, row.id):
            self._watch(row)
        return self.watchers[row.id].row if row.id in self.watchers else row

    async def delete(self, id: str) -> bool:
        watcher = self.watchers.pop(id, None)
        if watcher is not None:
            await watcher.stop()
        return await self.store.delete_scope(id)

    async def records(self) -> list[dict[str, Any]]:
        """Every stored scope (watched here or on another replica), with this process's live
        counters for the ones it watches."""
        rows = [self.watchers[r.id].row if r.id in self.watchers else r for r in await self.store.scopes()]
        return [scope_record(r) for r in sorted(rows, key=lambda r: r.created_at)]

    def batch_progress(self) -> Iterator[BatchJobs]:
        """The job counters of every watched, incomplete batch (the collector's gauge)."""
        for watcher in self._open_batches():
            if watcher.progress:
                acc = watcher.account
                yield acc.provider_name, acc.name, watcher.row.scope["batch_id"], watcher.progress

    def _open_batches(self) -> Iterator[ScopeWatcher]:
        return (w for w in list(self.watchers.values()) if "batch_id" in w.row.scope and not w.row.complete)

    async def stop(self) -> None:
        for watcher in self.watchers.values():
            await watcher.stop()

    async def _changed(self, row: ScopeRow) -> None:
        await self.store.update_scope(row.id, row.complete, row.discovered)


def _key(scope: Mapping[str, str]) -> str:
    return json.dumps(dict(scope), sort_keys=True)


def _new_id() -> str:
    return uuid.uuid4().hex[:16]
