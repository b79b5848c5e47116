"""How calls come to be watched: the one registration path, and the resume at start-up.

Every source — the REST API (and through it the CLI and file imports), a scope's listing —
ends in `Registrar.watch`: the `max_watched_calls` limit, the durable store write, the
account's poller, and the `registered` / `discovered{source}` counters, in that order. A
result webhook never registers (a call we do not watch is not stored). Calls resumed from the
store at start-up are watched again without being counted again.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Mapping, Sequence

from pydantic import ValidationError

from .errors import RequestError
from .lifecycle import WatchedCall
from .model import ListedCall, State
from .poller import AccountPoller
from .provider import CallParams
from .store import CallStore, NewCall, Registered, StoredCall

log = logging.getLogger(__name__)


class Registrar:
    """Starts watching calls: stored first, then handed to their account's poller."""

    def __init__(
        self,
        store: CallStore,
        pollers: Mapping[str, AccountPoller],
        max_watched_calls: int,
        owns: Callable[[str, str], bool] = lambda account, call_id: True,
    ) -> None:
        self.store = store
        self.pollers = pollers
        self.max_watched_calls = max_watched_calls
        #: whether this process polls the call (with N replicas: its partition is leased here;
        #: else the store's inbox hands it to the partition's owner)
        self.owns = owns

    def watched(self) -> int:
        return sum(len(p.calls) for p in self.pollers.values())

    async def watch(
        self, calls: Sequence[tuple[AccountPoller, CallParams]], source: str
    ) -> list[tuple[Registered, bool]]:
        """Store `calls` in one transaction and watch the new ones; for each, what the store did
        and whether watching started now. `RequestError(503)` over `max_watched_calls`."""
        watched = self.watched()
        if watched + len(calls) > self.max_watched_calls:
            raise RequestError(
                f"max_watched_calls ({self.max_watched_calls}) reached: {watched} calls are watched;"
                " retry when some finish or raise the limit",
                503,
            )
        now = time.time()
        results = await self.store.register(
            [
                NewCall(p.name, params.call_id, p.provider_name, params.model_dump(exclude={"call_id"}), now)
                for p, params in calls
            ],
            State.QUEUED.value,
        )
        out = []
        for (poller, params), res in zip(calls, results):
            if res.started:  # the store decides, once for all replicas
                # (the owner's inbox may have handed it over already while the store answered)
                if self.owns(poller.name, params.call_id) and params.call_id not in poller.calls:
                    poller.add(WatchedCall(res.seq, params, now, State(res.state)))
                poller.metrics.registered.inc()
                poller.metrics.discovered[source].inc()
            out.append((res, res.started))
        return out

    async def watch_listed(self, account: str, listed: ListedCall) -> bool:
        """A call a scope listing revealed: watched like a registered one, then what the listing
        said about it applied. False when it is invalid, known, or over the limit."""
        poller = self.pollers[account]
        try:
            params = poller.account.provider.Params.model_validate({**poller.account.defaults, **listed.params})
        except ValidationError:
            log.debug("account %s: a listed call does not validate; skipped", account)
            return False
        try:
            [(_, started)] = await self.watch([(poller, params)], "scope")
        except RequestError:
            log.warning("max_watched_calls reached: a discovered call of account %s is not watched", account)
            return False
        if started:  # a call polled elsewhere: its owner learns the news at its first poll
            poller.refreshed(listed, hold=poller.account.cadence[State.QUEUED])
        return started

    async def resume(self) -> int:
        """Watch every stored, watched, non-terminal call again (not counted as registered)."""
        count = 0
        async for chunk in self.store.iter_active():  # chunks: the rows never all sit in memory
            count += self.adopt(chunk)
        return count

    def adopt(self, rows: Iterable[StoredCall]) -> int:
        """Watch stored calls again (a resume, a partition taken over), without counting them
        as registered; their first polls are jittered over a cadence interval. How many."""
        count, orphans = 0, 0
        for row in rows:
            poller = self.pollers.get(row.account)
            if poller is None:
                orphans += 1
                continue
            if row.call_id in poller.calls or row.call_id in poller.finishing:
                continue
            try:
                params = poller.account.provider.Params.model_validate({**row.params, "call_id": row.call_id})
            except ValidationError:
                log.warning("account %s: stored call %s no longer validates; not resumed", row.account, row.seq)
                continue
            poller.add(
                WatchedCall(
                    row.seq,
                    params,
                    row.first_seen_at,
                    State(row.state),
                    row.provider_status,
                    row.seen,
                    row.created_at,
                    row.answered_at,
                    row.events_seen,
                )
            )
            count += 1
        if orphans:
            log.warning(
                "%d watched calls belong to accounts not in the config; they resume when the "
                "account is configured again",
                orphans,
            )
        return count
