"""Partition leases on a real PostgreSQL: balance, graceful hand-back, takeover, fencing, watchdog."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from outbound_call_exporter.leases import PARTITIONS, PartitionLeases, partition_of
from outbound_call_exporter.pgschema import SchemaError, migrate


class Recorder:
    """A lease listener that keeps what it was told."""

    def __init__(self) -> None:
        self.polling: dict[int, int] = {}
        self.released: set[int] = set()
        self.lost_count = 0

    async def gained(self, leases: dict[int, int]) -> None:
        self.polling.update(leases)

    async def releasing(self, partitions: set[int]) -> None:
        self.released |= partitions
        for p in partitions:
            self.polling.pop(p, None)

    def lost(self, partitions: set[int]) -> None:
        self.lost_count += len(partitions)
        for p in partitions:
            self.polling.pop(p, None)


def leases(url: str, ttl: float = 3.0, interval: float = 0.5, step: int = 32) -> tuple[PartitionLeases, Recorder]:
    rec = Recorder()
    return PartitionLeases(lambda: asyncpg.connect(url), rec, ttl=ttl, interval=interval, handover_step=step), rec


async def until(predicate, timeout: float = 20.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(0.05)


async def owners(url: str) -> dict:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT owner, count(*) AS n FROM oce_leases WHERE expires_at > now() GROUP BY owner")
        return {r["owner"]: r["n"] for r in rows}
    finally:
        await conn.close()


async def prepared(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        assert await migrate(conn) == await migrate(conn)  # idempotent
    finally:
        await conn.close()


def test_partition_of_is_stable_and_spread() -> None:
    assert partition_of("acc", "call-1") == partition_of("acc", "call-1")
    counts = [0] * PARTITIONS
    for i in range(25_600):
        counts[partition_of("acc", f"call-{i}")] += 1
    assert min(counts) > 50 and max(counts) < 160


def test_one_replica_owns_all_then_three_balance_then_stop_hands_back(pg_url: str) -> None:
    async def main() -> None:
        await prepared(pg_url)
        a, ra = leases(pg_url)
        await a.start()
        assert len(a.owned) == PARTITIONS and ra.polling == a.owned
        b, rb = leases(pg_url)
        c, rc = leases(pg_url)
        await b.start()
        await c.start()
        # about ceil(256 / 3) = 86 each: nobody above it, the last one takes what is left
        await until(lambda: sum(len(x.owned) for x in (a, b, c)) == PARTITIONS
                    and all(84 <= len(x.owned) <= 86 for x in (a, b, c)), message="balance over 3")
        assert set(a.owned).isdisjoint(b.owned) and set(b.owned).isdisjoint(c.owned)
        assert len(a.owned) + len(b.owned) + len(c.owned) == PARTITIONS
        assert abs(a.share() + b.share() + c.share() - 1.0) < 1e-9
        await c.stop()
        assert (await owners(pg_url)).get(c.replica_id) is None  # released at once
        await until(lambda: len(a.owned) + len(b.owned) == PARTITIONS, timeout=5, message="takeover of c's")
        await a.stop()
        await b.stop()
        assert await owners(pg_url) == {}

    asyncio.run(main())


def test_a_dead_replica_is_taken_over_and_its_fenced_writes_refused(pg_url: str) -> None:
    async def main() -> None:
        await prepared(pg_url)
        a, _ = leases(pg_url)
        await a.start()
        b, rb = leases(pg_url)
        await b.start()
        await until(lambda: len(a.owned) == 128, message="balance over 2")
        a._task.cancel()  # a dies: no renewal, no release
        part, old_epoch = next(iter(a.owned.items()))
        started = time.monotonic()
        await until(lambda: len(b.owned) == PARTITIONS, timeout=10, message="b takes all")
        assert time.monotonic() - started < 3.0 + 1.5  # ttl + a cycle or so
        assert b.owned[part] == old_epoch + 1
        conn = await asyncpg.connect(pg_url)
        try:
            fenced = ("SELECT count(*) FROM oce_leases WHERE partition = $1 AND owner = $2 AND epoch = $3")
            assert await conn.fetchval(fenced, part, a.replica_id, old_epoch) == 0
            assert await conn.fetchval(fenced, part, b.replica_id, old_epoch + 1) == 1
        finally:
            await conn.close()
        await b.stop()

    asyncio.run(main())


def test_watchdog_stops_polling_before_the_lease_expires_when_the_database_is_away(pg_cluster, pg_url: str) -> None:
    async def main() -> None:
        await prepared(pg_url)
        a, ra = leases(pg_url, ttl=3.0, interval=0.5)
        await a.start()
        assert a.healthy and len(ra.polling) == PARTITIONS
        pg_cluster.stop()
        try:
            stopped = time.monotonic()
            await until(lambda: not ra.polling, timeout=5, message="watchdog drops everything")
            assert time.monotonic() - stopped < 3.0  # before the database would expire them
            assert not a.healthy
        finally:
            pg_cluster.start()
        await until(lambda: len(ra.polling) == PARTITIONS, timeout=10, message="re-acquired after restart")
        await a.stop()

    asyncio.run(main())


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    async def main() -> None:
        conn = await asyncpg.connect(pg_url)
        try:
            await migrate(conn)
            await conn.execute("INSERT INTO oce_schema VALUES (99)")
            with pytest.raises(SchemaError, match="version 99"):
                await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(main())
