"""Which calls this process polls: all of them (SQLite), or its leased share (PostgreSQL).

`Ownership` is what the pollers, the registrar and the scopes ask: does this process own a
call's or a scope's partition, under which fence (partition, epoch) does it write, what share
of an account's rate limit is its own. `SingleProcess` owns everything and fences nothing.

`LeasedShare` is the scale-out side (docs/design.md, "Scale-out on PostgreSQL"): it listens to
the partition leases, loads a gained partition's calls (first polls jittered over a cadence
interval, so a takeover is no burst), drops a lost one's at once, hands a released one back
after writing its pending results, and takes what other replicas left in the inbox (calls
registered or unwatched there, webhooks received there) every `INBOX_SECONDS` or sooner when a
NOTIFY wakes it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Callable, Collection, Coroutine, Mapping

from .leases import PARTITIONS, PartitionLeases, partition_of
from .store import StoreError

if TYPE_CHECKING:
    from .poller import AccountPoller
    from .store.postgres import PostgresStore

log = logging.getLogger(__name__)

INBOX_SECONDS = 1.0


class SingleProcess:
    """The embedded store: this process owns every partition and its writes need no fence."""

    healthy = True

    def owns(self, account: str, key: str) -> bool:
        return True

    def fence(self, account: str, call_id: str) -> tuple[int, int] | None:
        return None

    def share(self) -> float:
        return 1.0

    def partitions_owned(self) -> int:
        return PARTITIONS

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


#: `adopt(rows)` watches stored calls again without counting them as registered
Adopt = Callable[[Collection[Any]], int]


class LeasedShare:
    """This replica's leased partitions, and keeping its pollers to exactly those."""

    def __init__(
        self,
        store: PostgresStore,
        pollers: Mapping[str, AccountPoller],
        adopt: Adopt,
        push: Callable[[str, dict[str, Any]], bool],
        on_change: Callable[[], Coroutine[Any, Any, None]],
        ttl: float = 10.0,
        interval: float = 2.0,
    ) -> None:
        self.store, self.pollers, self._adopt, self._push, self._on_change = store, pollers, adopt, push, on_change
        self.leases = PartitionLeases(store.connect, self, ttl=ttl, interval=interval)
        store.owner = self.leases.replica_id
        store.on_fenced = self._refused
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: Any = None

    @property
    def healthy(self) -> bool:
        return self.leases.healthy

    def owns(self, account: str, key: str) -> bool:
        return partition_of(account, key) in self.leases.owned

    def fence(self, account: str, call_id: str) -> tuple[int, int] | None:
        p = partition_of(account, call_id)
        epoch = self.leases.owned.get(p)
        return (p, epoch) if epoch is not None else (p, -1)  # -1: refused by the fence, as it must be

    def share(self) -> float:
        return self.leases.share()

    def partitions_owned(self) -> int:
        return len(self.leases.owned)

    async def start(self) -> None:
        await self.leases.start()
        try:
            self._listener = await self.store.listen(self._wake.set)
        except Exception as exc:  # wake-ups are an optimisation only: the loop polls anyway
            log.info("no LISTEN connection for inbox wake-ups (polling every %gs): %s", INBOX_SECONDS, exc)
        self._task = asyncio.create_task(self._inbox_loop(), name="inbox")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._listener is not None:
            self._listener.terminate()
        await self.leases.stop()

    # -- the lease listener ------------------------------------------------------------------

    async def gained(self, leases: dict[int, int]) -> None:
        parts = set(leases)
        self._forget_doomed(parts)  # a new epoch: what was pending under the old one is refused
        await self.store.take_inbox(parts)  # what it says is in the calls loaded next
        loaded = 0
        async for chunk in self.store.iter_active(partitions=parts):
            loaded += self._adopt_owned(chunk)
        log.info(
            "took %d partition(s) with %d watched call(s); %d partitions owned",
            len(parts),
            loaded,
            len(self.leases.owned),
        )
        self._rates()
        await self._on_change()

    async def releasing(self, partitions: set[int]) -> None:
        self._drop(partitions)
        await self.store.flush()

    def lost(self, partitions: set[int]) -> None:
        self._drop(partitions)

    def _drop(self, partitions: set[int]) -> None:
        for poller in self.pollers.values():
            for call_id in [c for c in poller.calls if partition_of(poller.name, c) in partitions]:
                poller.remove(call_id)
        self._rates()
        asyncio.get_running_loop().create_task(self._on_change())

    def _adopt_owned(self, rows: Collection[Any]) -> int:
        """Adopt the rows whose partition is still ours: ownership may have changed while they
        were read (a copy adopted after its partition was dropped would poll a call twice)."""
        owned = self.leases.owned
        return self._adopt([r for r in rows if partition_of(r.account, r.call_id) in owned])

    def _refused(self, refused: dict[int, int]) -> None:
        """Fenced writes were refused: drop those partitions if they are still held under that
        epoch, and forget every copy of a call loaded under an epoch that is no longer ours."""
        self.leases.drop(refused)
        owned = self.leases.owned
        for poller in self.pollers.values():
            stale = [
                c.call_id
                for c in poller.calls.values()
                if c.fence is not None and c.fence[0] in refused and owned.get(c.fence[0]) != c.fence[1]
            ]
            for call_id in stale:
                poller.remove(call_id)
        self._forget_doomed(set(refused))

    def _forget_doomed(self, partitions: set[int]) -> None:
        """Terminal writes pending under an epoch of these partitions that is no longer ours will
        be refused: their calls must be polled again by whoever loads them, so they no longer
        count as finishing (under the epoch still held, they do: those writes will land)."""
        owned = self.leases.owned
        for poller in self.pollers.values():
            doomed = [c for c, (p, e) in poller.finishing.items() if p in partitions and owned.get(p) != e]
            for call_id in doomed:
                del poller.finishing[call_id]

    def _rates(self) -> None:
        for poller in self.pollers.values():
            poller.share_rate(self.leases.share())

    # -- the inbox ---------------------------------------------------------------------------

    async def _inbox_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), INBOX_SECONDS)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._take_inbox()
                await self._on_change()
            except StoreError as exc:
                log.debug("inbox: %s", exc)

    async def _take_inbox(self) -> None:
        owned = set(self.leases.owned)
        if not owned:
            return
        items = await self.store.take_inbox(owned)
        watch = [seq for _, seq, kind, _ in items if kind == "watch"]
        if watch:
            self._adopt_owned(await self.store.active(watch))
        for _, _, kind, body in items:
            if kind == "unwatch" and body and body.get("account") in self.pollers:
                self.pollers[body["account"]].remove(body["call_id"])
            elif kind == "push" and body:
                self._push(body["account"], body["listed"])
