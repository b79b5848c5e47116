"""Watch scopes: discover an agent's or a batch's calls and refresh them in bulk.

One `ScopeWatcher` per scope runs a cycle every refresh interval (the account's `queued`
cadence), every request going through the account's poller (same rate limit, concurrency,
metrics and health as status requests):

1. discovery — list the scope's calls newest first (unfiltered) down to what the last cycle
   already saw (the scope's start for an agent; everything for a batch on its first cycle) and
   start watching each new one (`source="scope"`);
2. bulk refresh — list each non-terminal raw status the scope's watched calls are in, and
   apply what the list says to them. A refreshed call's own status poll is pushed back, so a
   call the list keeps covering is never polled on its own; one that drops out of every
   non-terminal listing (it ended) gets its per-call poll, which confirms the end;
3. progress — for batches, read the provider's job counters (a gauge while the batch is
   watched) and finish the scope once the provider says the batch is complete.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .errors import PollError

from .model import ListedCall

if TYPE_CHECKING:
    from .scheduler import AccountPoller
    from .service import Service

log = logging.getLogger(__name__)

#: pages per listing per cycle: a bound, so one huge scope cannot starve the account's budget
MAX_PAGES = 50
#: discovery re-reads this far behind the newest call it has seen (clock skew, late writes)
OVERLAP_SECONDS = 60.0


@dataclass
class Scope:
    """A stored watch scope (docs/design.md, "Scopes and webhooks")."""

    id: str
    account: str
    scope: dict[str, str]
    created_at: float
    origin: str = "api"  # "api" or "config"
    complete: bool = False
    discovered: int = 0
    progress: dict[str, int] = field(default_factory=dict)

    def key(self) -> str:
        return json.dumps(self.scope, sort_keys=True)

    def record(self) -> dict[str, Any]:
        from .store import iso

        return {"id": self.id, "account": self.account, "scope": self.scope, "created_at": iso(self.created_at),
                "discovered": self.discovered, "complete": self.complete}


class ScopeWatcher:
    """Runs one scope's discovery / refresh / progress cycle until stopped or complete."""

    def __init__(self, scope: Scope, poller: "AccountPoller", register: Any, on_change: Any) -> None:
        self.scope = scope
        self.poller = poller
        self.provider = poller.account.provider
        self._register = register  # async callable(poller, listed) -> bool: start watching a new call
        self._on_change = on_change  # async callable(scope): persist counters / completion
        self._high_water: float | None = None  # newest provider creation time discovery has seen
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        from .model import State

        return self.poller.account.cadence[State.QUEUED]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"scope-{self.scope.id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while not self.scope.complete:
            started = time.monotonic()
            try:
                await self.cycle()
            except PollError as exc:  # counted by the poller; try again next cycle
                log.debug("scope %s: %s", self.scope.id, exc)
            except Exception:
                log.exception("scope %s: cycle failed", self.scope.id)
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def cycle(self) -> None:
        await self.discover()
        await self.refresh()
        if self.provider.supports("progress"):
            await self.check_progress()

    # -- the three steps -------------------------------------------------------------------

    async def discover(self) -> None:
        start = None if self.provider.scope_includes_past else self.scope.created_at
        floor = start if self._high_water is None else max(self._high_water - OVERLAP_SECONDS, start or 0.0)
        newest = self._high_water
        async for listed in self._listing(None, stop_below=floor):
            created = listed.status.created_at.timestamp() if listed.status.created_at else None
            if created is not None and (newest is None or created > newest):
                newest = created
            if floor is not None and created is not None and created < floor:
                continue
            if self.poller.refreshed(listed, hold=2 * self.interval):
                continue
            if await self._register(self.poller, listed):
                self.scope.discovered += 1
        self._high_water = newest if newest is not None else time.time()
        await self._on_change(self.scope)

    async def refresh(self) -> None:
        """List each non-terminal raw status our watched calls of this scope show."""
        statuses = {c.provider_status for c in self._watched()}
        for status in self.provider.list_status_filters:
            if status in statuses:
                async for listed in self._listing(status):
                    self.poller.refreshed(listed, hold=2 * self.interval)

    async def check_progress(self) -> None:
        scope = self.scope.scope
        progress = await self.poller.fetch(self.provider.build_progress_request(scope),
                                           lambda r: self.provider.parse_progress_response(scope, r))
        self.scope.progress = dict(progress.counts)
        if progress.complete:
            async for listed in self._listing(None):  # the final outcome of every job, once
                self.poller.refreshed(listed, hold=0.0)
            self.scope.complete = True
            self.scope.progress = {}
            log.info("scope %s: batch complete", self.scope.id)
        await self._on_change(self.scope)

    # -- helpers ---------------------------------------------------------------------------------

    def _watched(self) -> list[Any]:
        items = self.scope.scope.items()
        return [c for c in self.poller.calls.values()
                if all(getattr(c.params, k, None) == v for k, v in items)]

    async def _listing(self, status: str | None, stop_below: float | None = None):  # type: ignore[no-untyped-def]
        """Every call of the scope (optionally one raw status), page by page, newest first.

        With `stop_below`, paging stops after a page whose oldest call was created before it.
        """
        scope = self.scope.scope
        extra: dict[str, Any] = {}
        if self.provider.list_filters_created_after and stop_below is not None:
            extra["created_after"] = datetime.fromtimestamp(stop_below, tz=timezone.utc)
        for page in range(1, MAX_PAGES + 1):
            result = await self.poller.fetch(self.provider.build_list_request(scope, page, status, **extra),
                                             lambda r: self.provider.parse_list_response(scope, r))
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

    def __init__(self, service: "Service") -> None:
        self.service = service
        self.watchers: dict[str, ScopeWatcher] = {}

    async def load(self) -> None:
        """Store config scopes on their first start (keeping that start time), drop config scopes
        no longer configured, then watch every stored scope of a configured account."""
        configured = set()
        for account in self.service.accounts:
            for scope in account.config.watch:
                key = json.dumps(scope, sort_keys=True)
                configured.add((account.name, key))
                await self.service.store.add_scope(uuid.uuid4().hex[:16], account.name, key, time.time(), "config")
        for id, account, key, created, origin, complete, discovered in await self.service.store.scopes():
            if origin == "config" and (account, key) not in configured:
                await self.service.store.delete_scope(id)
            elif account in self.service.pollers:
                self._watch(Scope(id, account, json.loads(key), created, origin, complete, discovered))

    def _watch(self, scope: Scope) -> None:
        poller = self.service.pollers[scope.account]
        watcher = ScopeWatcher(scope, poller, self._register, self._changed)
        self.watchers[scope.id] = poller.scopes[scope.id] = watcher
        if not scope.complete:
            watcher.start()

    async def add(self, account: str, value: Any) -> Scope:
        from .config import validate_scope
        from .errors import RequestError

        poller = self.service.pollers.get(account)
        if poller is None:
            raise RequestError(f"account: unknown account {account[:64]!r}", 404)
        try:
            scope = validate_scope(type(poller.account.provider), value)
        except ValueError as exc:
            raise RequestError(f"scope: {exc}") from None
        batches = sum(1 for w in self.watchers.values() if "batch_id" in w.scope.scope and not w.scope.complete)
        if "batch_id" in scope and batches >= self.service.config.max_watched_batches:
            raise RequestError(f"max_watched_batches ({self.service.config.max_watched_batches}) reached", 503)
        key = json.dumps(scope, sort_keys=True)
        id = await self.service.store.add_scope(uuid.uuid4().hex[:16], account, key, time.time(), "api")
        if id not in self.watchers:
            [row] = [r for r in await self.service.store.scopes() if r[0] == id]
            self._watch(Scope(id, account, scope, row[3], row[4], row[5], row[6]))
        return self.watchers[id].scope

    async def delete(self, id: str) -> bool:
        watcher = self.watchers.pop(id, None)
        if watcher is not None:
            watcher.poller.scopes.pop(id, None)
            await watcher.stop()
        return await self.service.store.delete_scope(id)

    def records(self) -> list[dict[str, Any]]:
        return [w.scope.record() for w in sorted(self.watchers.values(), key=lambda w: w.scope.created_at)]

    async def stop(self) -> None:
        for watcher in self.watchers.values():
            await watcher.stop()

    async def _changed(self, scope: Scope) -> None:
        await self.service.store.update_scope(scope.id, scope.complete, scope.discovered)

    async def _register(self, poller: "AccountPoller", listed: ListedCall) -> bool:
        """Start watching a call a listing revealed (stored exactly like a registered one)."""
        return await self.service.watch_discovered(poller, listed)
