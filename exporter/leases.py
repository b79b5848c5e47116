"""Partition leases in PostgreSQL: which replica polls which calls when N replicas share a store.

Calls hash into `PARTITIONS` fixed partitions. A replica holds a partition through a row of
`oce_leases` (owner = a per-process id, never a pod name a restart reuses; `epoch` bumped on
every takeover; `expires_at` on the database's clock). Every write of a call's state is fenced
on (owner, epoch), so a replica that lost a partition — paused, partitioned, slow — cannot write
(the anchors: Temporal's `range_id`; river's and procrastinate's heartbeats on the database
clock).

One cycle every `interval` seconds, on a connection of its own so a busy pool cannot starve it:

1. heartbeat this replica in `oce_replicas` and count the live ones → target ⌈256 / live⌉;
2. renew what it holds and acquire free or expired partitions up to the target — one
   statement; orphaned partitions are taken at once (nobody polls them), while surplus is
   handed back only `handover_step` partitions per cycle so balancing is gradual;
3. a partition whose renewal the database refused is lost at once.

A watchdog drops every partition when no renewal succeeded within `ttl - interval` of the
last successful one's start: the replica stops polling before its leases can expire.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
import zlib
from typing import Awaitable, Callable, Protocol

import asyncpg

log = logging.getLogger(__name__)

PARTITIONS = 256

_RENEW_AND_ACQUIRE = """
WITH renewed AS (
    UPDATE oce_leases SET expires_at = now() + make_interval(secs => $2)
    WHERE owner = $1 AND expires_at > now()
    RETURNING partition, epoch
), free AS (
    SELECT partition FROM oce_leases
    WHERE owner IS NULL OR expires_at <= now()
    ORDER BY random() LIMIT $3
    FOR UPDATE SKIP LOCKED
), acquired AS (
    UPDATE oce_leases l SET owner = $1, epoch = l.epoch + 1, expires_at = now() + make_interval(secs => $2)
    FROM free WHERE l.partition = free.partition
    RETURNING l.partition, l.epoch
)
SELECT partition, epoch FROM renewed UNION ALL SELECT partition, epoch FROM acquired
"""
_HEARTBEAT = """
WITH beat AS (
    INSERT INTO oce_replicas (id, started_at, expires_at) VALUES ($1, now(), now() + make_interval(secs => $2))
    ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at
    RETURNING id
)
SELECT 1 + count(*) FROM oce_replicas WHERE expires_at > now() AND id <> $1
"""
_RELEASE = """
UPDATE oce_leases SET owner = NULL, expires_at = now()
WHERE owner = $1 AND partition = ANY($2::smallint[])
"""
_LEAVE = "DELETE FROM oce_replicas WHERE id = $1 OR expires_at < now() - interval '1 hour'"


def partition_of(account: str, key: str) -> int:
    """The partition of a call (key: its call id) or a scope (key: its id); stable everywhere."""
    return zlib.crc32(f"{account}\x00{key}".encode()) % PARTITIONS


class LeaseListener(Protocol):
    """What the service does when ownership changes (the leases never touch calls)."""

    async def gained(self, leases: dict[int, int]) -> None:
        """Start polling these partitions (partition -> epoch): load their calls, jittered."""

    async def releasing(self, partitions: set[int]) -> None:
        """Stop polling these and write their pending results: they are handed back next."""

    def lost(self, partitions: set[int]) -> None:
        """Stop polling these at once; their pending writes will be refused by the fence."""


class PartitionLeases:
    """This replica's share of the partitions, kept by a background cycle."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        listener: LeaseListener,
        ttl: float = 10.0,
        interval: float = 2.0,
        handover_step: int = 16,
    ) -> None:
        if interval * 2 >= ttl:
            raise ValueError("lease interval must be under half the ttl")
        self.replica_id = uuid.uuid4()
        self.owned: dict[int, int] = {}
        self.live_replicas = 1
        self._connect, self._listener = connect, listener
        self.ttl, self.interval, self.handover_step = ttl, interval, handover_step
        self._conn: asyncpg.Connection | None = None
        self._valid_until = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def healthy(self) -> bool:
        """Renewed recently enough that what we hold is still ours."""
        return time.monotonic() < self._valid_until

    def share(self) -> float:
        """The fraction of partitions held: an account's rate limit is split by it, so the
        replicas' rates sum to at most the account's limit (leases are exclusive)."""
        return len(self.owned) / PARTITIONS

    def epoch(self, partition: int) -> int | None:
        return self.owned.get(partition)

    async def start(self) -> None:
        """Run the first cycle now (a replica is ready with its share), then keep cycling."""
        await self._cycle()
        self._task = asyncio.create_task(self._run(), name="partition-leases")

    async def stop(self) -> None:
        """Hand every partition back at once (a graceful stop), after the service stopped polling."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        owned, self.owned = set(self.owned), {}
        try:
            conn = await self._connection()
            await conn.execute(_RELEASE, self.replica_id, sorted(owned))
            await conn.execute(_LEAVE, self.replica_id)
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
            log.warning("could not release %d partition leases (they expire in %gs): %s", len(owned), self.ttl, exc)
        if self._conn is not None:
            await self._conn.close(timeout=2)

    def drop(self, refused: dict[int, int]) -> None:
        """Fenced writes were refused (partition -> the epoch they carried): those partitions
        are someone else's now, unless we have since taken them back under a newer epoch."""
        gone = {p for p, e in refused.items() if self.owned.get(p) == e}
        if gone:
            for p in gone:
                del self.owned[p]
            log.warning("lost %d partition(s) to another replica (a fenced write was refused)", len(gone))
            self._listener.lost(gone)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval * random.uniform(0.8, 1.2))
            try:
                await self._cycle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: the watchdog decides
                self._close_quietly()
                log.warning("partition lease renewal failed: %s", exc)
            self._watchdog()

    def _watchdog(self) -> None:
        if self.owned and not self.healthy:
            gone, self.owned = set(self.owned), {}
            log.warning("no lease renewal for %gs: stopped polling %d partitions", self.ttl - self.interval, len(gone))
            self._listener.lost(gone)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncio.wait_for(self._connect(), self.interval)
        return self._conn

    def _close_quietly(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def _cycle(self) -> None:
        started = time.monotonic()
        conn = await self._connection()
        self.live_replicas = await conn.fetchval(_HEARTBEAT, self.replica_id, self.ttl, timeout=self.interval)
        target = math.ceil(PARTITIONS / max(1, self.live_replicas))
        rows = await conn.fetch(
            _RENEW_AND_ACQUIRE, self.replica_id, self.ttl, max(0, target - len(self.owned)), timeout=self.interval
        )
        self._valid_until = started + self.ttl - self.interval
        held = {row["partition"]: row["epoch"] for row in rows}
        lost = {p for p, e in self.owned.items() if held.get(p) != e}  # a new epoch: lost, then gained
        gained = {p: e for p, e in held.items() if self.owned.get(p) != e}
        self.owned = held
        if lost:
            log.warning("partition leases expired before renewal: %d partition(s) lost", len(lost))
            self._listener.lost(lost)
        if gained:
            try:
                await self._listener.gained(gained)
            except BaseException:  # calls not (all) loaded: gained again at the next renewal
                for p in gained:
                    self.owned.pop(p, None)
                raise
        await self._hand_back(len(held) - target, conn)

    async def _hand_back(self, surplus: int, conn: asyncpg.Connection) -> None:
        """Give a few partitions to replicas below their target (gradual: no burst anywhere)."""
        if surplus <= 0:
            return
        give = set(random.sample(sorted(self.owned), min(surplus, self.handover_step)))
        for p in give:  # no longer ours from now on (the rate share too), then handed back
            self.owned.pop(p, None)
        await self._listener.releasing(give)
        await conn.execute(_RELEASE, self.replica_id, sorted(give), timeout=self.interval)
