"""asyncpg vs psycopg 3 on the PostgreSQL store's two hot statements (issue: scale-out).

1. a registration batch: 1,000 calls in one transaction, `INSERT ... SELECT FROM unnest(...)
   ON CONFLICT DO NOTHING RETURNING`;
2. a write-behind flush: 2,000 poll results in one fenced `UPDATE ... FROM unnest(...)` that
   joins the partition leases (owner + epoch), as the store does.

Runs against a throwaway cluster (tests/pgcluster.py) and prints the median of several rounds.
Usage: python bench/pg_drivers.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pgcluster import Cluster, find_bindir  # noqa: E402

SCHEMA = """
DROP TABLE IF EXISTS calls, leases;
CREATE TABLE leases (partition SMALLINT PRIMARY KEY, owner UUID, epoch BIGINT NOT NULL);
CREATE TABLE calls (seq BIGSERIAL PRIMARY KEY, partition SMALLINT NOT NULL, account TEXT NOT NULL,
  call_id TEXT NOT NULL, params JSONB NOT NULL, state TEXT NOT NULL, provider_status TEXT,
  polls INT NOT NULL DEFAULT 0, last_polled_at DOUBLE PRECISION, UNIQUE (account, call_id));
"""
INSERT = """INSERT INTO calls (partition, account, call_id, params, state)
SELECT p, 'acc', c, '{}'::jsonb, 'queued' FROM unnest($1::smallint[], $2::text[]) AS t(p, c)
ON CONFLICT (account, call_id) DO NOTHING RETURNING seq"""
UPDATE = """UPDATE calls SET state = u.s, provider_status = u.s, polls = calls.polls + 1, last_polled_at = u.t
FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS u(seq, s, t), leases l
WHERE calls.seq = u.seq AND l.partition = calls.partition AND l.owner = $4 AND l.epoch = $5"""


def _ids(round_: int, n: int) -> tuple[list[int], list[str]]:
    return [i % 256 for i in range(n)], [f"r{round_}-{i}" for i in range(n)]


async def bench_asyncpg(url: str, rounds: int) -> tuple[float, float]:
    import asyncpg

    conn = await asyncpg.connect(url)
    await conn.execute(SCHEMA)
    owner = uuid.uuid4()
    await conn.executemany("INSERT INTO leases VALUES ($1, $2, 1)", [(p, owner) for p in range(256)])
    reg, upd = [], []
    for r in range(rounds):
        parts, ids = _ids(r, 1000)
        t = time.perf_counter()
        async with conn.transaction():
            seqs = [row[0] for row in await conn.fetch(INSERT, parts, ids)]
        reg.append(time.perf_counter() - t)
        seqs2 = [row[0] for row in await conn.fetch("SELECT seq FROM calls ORDER BY random() LIMIT 2000")]
        t = time.perf_counter()
        await conn.execute(UPDATE, seqs2, ["dialing"] * len(seqs2), [time.time()] * len(seqs2), owner, 1)
        upd.append(time.perf_counter() - t)
        assert seqs
    await conn.close()
    return statistics.median(reg), statistics.median(upd)


async def bench_psycopg(url: str, rounds: int) -> tuple[float, float]:
    import psycopg

    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await conn.execute(SCHEMA.replace("$1", "%s"))
    owner = uuid.uuid4()
    async with conn.cursor() as cur:
        await cur.executemany("INSERT INTO leases VALUES (%s, %s, 1)", [(p, owner) for p in range(256)])
    ins = INSERT.replace("$1", "%s").replace("$2", "%s")
    up = UPDATE
    for i in range(5, 0, -1):
        up = up.replace(f"${i}", "%s")
    reg, upd = [], []
    for r in range(rounds):
        parts, ids = _ids(r, 1000)
        t = time.perf_counter()
        async with conn.transaction():
            cur = await conn.execute(ins, (parts, ids))
            seqs = [row[0] for row in await cur.fetchall()]
        reg.append(time.perf_counter() - t)
        cur = await conn.execute("SELECT seq FROM calls ORDER BY random() LIMIT 2000")
        seqs2 = [row[0] for row in await cur.fetchall()]
        t = time.perf_counter()
        await conn.execute(up, (seqs2, ["dialing"] * len(seqs2), [time.time()] * len(seqs2), owner, 1))
        upd.append(time.perf_counter() - t)
        assert seqs
    await conn.close()
    return statistics.median(reg), statistics.median(upd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    bindir = find_bindir()
    if bindir is None:
        sys.exit("PostgreSQL's initdb/pg_ctl not found (install Debian's postgresql)")
    cluster = Cluster(bindir).init()
    cluster.start()
    try:
        url = cluster.create_database("bench")
        print(f"{'driver':10} {'register 1000 (ms)':>20} {'calls/s':>10} {'fenced update 2000 (ms)':>24}")
        for name, fn in (("asyncpg", bench_asyncpg), ("psycopg", bench_psycopg)):
            reg, upd = asyncio.run(fn(url, args.rounds))
            print(f"{name:10} {reg * 1000:20.1f} {1000 / reg:10.0f} {upd * 1000:24.1f}")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
