"""`PostgresStore`: the call store N replicas share (`store_url`), with fenced writes.

Everything the SQLite store promises holds here too (registrations durable before the answer,
poll results written behind and read back by the API, every failure a `StoreError`), plus:

- every write of a call's state carries the (partition, epoch) of the lease it was polled
  under and is joined with `oce_leases` in the same statement; rows the fence refuses are
  dropped — their partition belongs to another replica now, which polls them again — and
  reported through `on_fenced`, and their `after` callbacks (the metrics) never run
  (`pgwrites.py`);
- calls registered, unwatched or pushed (webhooks) on any replica reach the partition's
  owner through `oce_inbox`: rows taken (deleted) by the owner, so none is missed or applied
  twice; a NOTIFY wakes the owner early, but correctness never depends on it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, AsyncIterator, Callable, Collection, Sequence
from urllib.parse import urlsplit

import asyncpg

from ..leases import PARTITIONS, partition_of
from ..model import TERMINAL_STATES
from ..pgschema import migrate
from . import pgsql
from .pgwrites import FencedWrites
from .rows import CallQuery, CallRecord, NewCall, Registered, ScopeRow, StoredCall, StoreError, Update
from .schema import scope_key

log = logging.getLogger(__name__)

_TERMINAL = sorted(s.value for s in TERMINAL_STATES)
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError)
InboxItem = tuple[int, int, str, Any]  # partition, call seq, kind ("watch", "unwatch", "push"), body


class PostgresStore:
    """The shared PostgreSQL database, through a small asyncpg pool."""

    def __init__(self, url: str, flush_interval: float = 0.25, max_pending: int = 2000, pool_size: int = 8) -> None:
        self._url = url
        self.where = pgsql.redacted(url)
        self.flush_interval, self.max_pending, self.pool_size = flush_interval, max_pending, pool_size
        self.owner: uuid.UUID | None = None  # the lease owner whose fence every write carries
        self.on_fenced: Callable[[dict[int, int]], None] = lambda refused: None
        self._pool: asyncpg.Pool | None = None
        self._writes = FencedWrites(self)
        self._flusher: asyncio.Task[None] | None = None

    @property
    def write_errors(self) -> int:
        return self._writes.errors

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=self.pool_size,
                init=pgsql.init_connection,
                command_timeout=30,
                server_settings=pgsql.SESSION_SETTINGS,
            )
            async with self._pool.acquire() as conn:
                await migrate(conn)
        except _DB_ERRORS as exc:
            raise StoreError(f"cannot open the PostgreSQL store {self.where}: {self._scrub(exc)}") from None
        self._flusher = asyncio.create_task(self._writes.run(), name="store-flush")

    async def connect(self) -> asyncpg.Connection:
        """A connection of its own, outside the pool (the lease cycle must never wait on it)."""
        return await asyncpg.connect(self._url, timeout=5)

    async def close(self) -> None:
        if self._flusher:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._pool is not None:
            try:
                await self.flush()
            except StoreError as exc:
                log.error(
                    "%s: %d poll results not written (their calls are polled again)", exc, len(self._writes.pending)
                )
            await self._pool.close()
            self._pool = None

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        password = urlsplit(self._url).password
        return text.replace(password, "***") if password else text

    async def transaction(self, what: str, fn: Callable[[asyncpg.Connection], Any]) -> Any:
        """`fn(conn)` in a transaction on a pooled connection; a driver error is a `StoreError`."""
        if self._pool is None:
            raise StoreError("store is not open")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                return await fn(conn)
        except _DB_ERRORS as exc:
            raise StoreError(f"PostgreSQL store {self.where}: cannot {what}: {self._scrub(exc)}") from None

    # -- write-behind poll results, fenced (pgwrites.py) --------------------------------------

    def queue(self, update: Update) -> None:
        self._writes.queue(update)

    async def flush(self) -> None:
        await self._writes.flush()

    # -- registrations, unwatching and the inbox (durable before returning) -----------------

    async def register(self, calls: Sequence[NewCall], initial_state: str) -> list[Registered]:
        parts = [partition_of(c.account, c.call_id) for c in calls]

        async def run(conn: asyncpg.Connection) -> list[Registered]:
            rows = await conn.fetch(
                pgsql.REGISTER,
                parts,
                [c.account for c in calls],
                [c.call_id for c in calls],
                [c.provider for c in calls],
                [dict(c.params) for c in calls],
                [c.first_seen_at for c in calls],
                initial_state,
                _TERMINAL,
            )
            out = []
            for call, row in zip(calls, rows):
                seq, state = row["seq"], row["state"]
                if seq is None:  # inserted by another replica while this statement ran
                    seq, state = await conn.fetchrow(pgsql.REGISTERED_LATE, call.account, call.call_id)
                out.append(Registered(seq, row["inserted"], row["started"], state))
            new = [(r.seq, c.first_seen_at) for r, c in zip(out, calls) if r.inserted]
            if new:
                await conn.execute(pgsql.REGISTER_HISTORY, [s for s, _ in new], initial_state, [t for _, t in new])
            await self._to_inbox(conn, [(p, r.seq, "watch", None) for p, r in zip(parts, out) if r.started])
            return out

        return await self.transaction("register calls", run)

    async def unwatch(self, account: str, call_id: str) -> CallRecord | None:
        if not pgsql.storable(account, call_id):
            return None

        async def run(conn: asyncpg.Connection) -> None:
            row = await conn.fetchrow(pgsql.UNWATCH, account, call_id)
            if row is not None:
                await self._to_inbox(
                    conn, [(row["partition"], row["seq"], "unwatch", {"account": account, "call_id": call_id})]
                )

        await self.flush()
        await self.transaction("unwatch a call", run)
        return await self.get(account, call_id)

    async def push(self, account: str, call_id: str, listed: dict[str, Any]) -> bool:
        """A webhook about a watched call whose partition another replica owns (`listed`: what
        it said, parsed and held to the privacy policy): that owner applies it. False when no
        such call is watched."""
        if not pgsql.storable(account, call_id):
            return False

        async def run(conn: asyncpg.Connection) -> bool:
            seq = await conn.fetchval(
                "SELECT seq FROM oce_calls WHERE account = $1 AND call_id = $2 AND watching", account, call_id
            )
            if seq is not None:
                body = {"account": account, "listed": listed}
                await self._to_inbox(conn, [(partition_of(account, call_id), seq, "push", body)])
            return seq is not None

        return bool(await self.transaction("hand a webhook to its partition's owner", run))

    @staticmethod
    async def _to_inbox(conn: asyncpg.Connection, items: list[InboxItem]) -> None:
        if items:
            await conn.execute(pgsql.INBOX, *map(list, zip(*items)))
            await conn.execute(pgsql.NOTIFY, ",".join(sorted({str(p) for p, *_ in items})))

    async def take_inbox(self, partitions: Collection[int]) -> list[InboxItem]:
        """Take (delete) what other replicas left for these partitions (those this replica's
        leases hold in the database), oldest first."""
        rows = await self.transaction(
            "read the inbox", lambda conn: conn.fetch(pgsql.TAKE_INBOX, sorted(partitions), self.owner)
        )
        return [(r["partition"], r["call_seq"], r["kind"], r["body"]) for r in sorted(rows, key=lambda r: r["id"])]

    async def listen(self, wake: Callable[[], None]) -> asyncpg.Connection:
        """A connection that calls `wake()` on every inbox NOTIFY (an early wake-up only)."""
        conn = await self.connect()
        await conn.add_listener("oce_inbox", lambda *_: wake())
        return conn

    async def prune(self, before: float) -> tuple[int, bool]:
        """Delete every call record not watched whose last activity (end, else last poll, else
        registration) is older than `before`, with its history (and any inbox item naming it).
        Returns (records deleted, whether the tables could be vacuumed now): VACUUM removes the
        dead rows from the tables' pages; it waits at most a few seconds for a lock (another
        VACUUM), else autovacuum does it later. PostgreSQL's WAL and backups are the database's."""
        await self.flush()

        async def run(conn: asyncpg.Connection) -> int:
            seqs = [r["seq"] for r in await conn.fetch(pgsql.PRUNE_CALLS, before)]
            for sql in pgsql.PRUNE_ROWS:
                await conn.execute(sql, seqs)
            return len(seqs)

        deleted = await self.transaction("prune call records", run)
        try:
            async with self._pool.acquire() as conn:  # type: ignore[union-attr]  # open: _do checked it
                await conn.execute("SET lock_timeout = '5s'")  # the pool's reset undoes it
                await conn.execute("VACUUM oce_history, oce_inbox, oce_calls")
        except asyncpg.LockNotAvailableError:
            return deleted, False
        except _DB_ERRORS as exc:
            raise StoreError(f"PostgreSQL store {self.where}: cannot vacuum: {self._scrub(exc)}") from None
        return deleted, True

    # -- reads -----------------------------------------------------------------------------

    async def iter_active(
        self, chunk: int = 5000, partitions: Collection[int] | None = None
    ) -> AsyncIterator[list[StoredCall]]:
        """The watched non-terminal calls of `partitions` (default: all), `chunk` at a time."""
        wanted = sorted(range(PARTITIONS) if partitions is None else partitions)
        if self._pool is None:
            raise StoreError("store is not open")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                cursor = await conn.cursor(pgsql.ACTIVE, wanted, _TERMINAL)
                while rows := await cursor.fetch(chunk):
                    yield [pgsql.stored_call(r) for r in rows]
        except _DB_ERRORS as exc:
            raise StoreError(f"PostgreSQL store {self.where}: cannot load watched calls: {self._scrub(exc)}") from None

    async def active(self, seqs: Collection[int]) -> list[StoredCall]:
        """These calls if they are still watched and not terminal (what an inbox item names).
        What is queued is written first: a call this replica finished a moment ago (a scope's
        listing found it terminal) must not come back from its own "watch" item, polled and
        counted a second time."""
        await self._flush_quietly()
        rows = await self.transaction("load calls", lambda conn: conn.fetch(pgsql.ACTIVE_SEQS, sorted(seqs), _TERMINAL))
        return [pgsql.stored_call(r) for r in rows]

    async def get(self, account: str, call_id: str) -> CallRecord | None:
        if not pgsql.storable(account, call_id):
            return None
        await self._flush_quietly()
        records = await self.transaction("read a call", lambda c: pgsql.records(c, pgsql.GET, account, call_id))
        return records[0] if records else None

    async def get_many(self, seqs: Sequence[int]) -> list[CallRecord]:
        await self._flush_quietly()
        records = await self.transaction("read calls", lambda c: pgsql.records(c, pgsql.GET_MANY, list(seqs)))
        by_seq = {r.seq: r for r in records}
        return [by_seq[s] for s in seqs]

    async def list_calls(self, q: CallQuery) -> tuple[list[CallRecord], int | None]:
        await self._flush_quietly()
        where, args = [], []
        for clause, value in (
            ("account = $%d", q.account),
            ("state = $%d", q.state),
            ("first_seen_at >= $%d", q.since),
            ("seq < $%d", q.before),
        ):
            if value is not None:
                args.append(value)
                where.append(clause % len(args))
        sql = (
            f"SELECT {pgsql.COLUMNS} FROM oce_calls {'WHERE ' + ' AND '.join(where) if where else ''}"
            f" ORDER BY seq DESC LIMIT ${len(args) + 1}"
        )
        records = await self.transaction("list calls", lambda c: pgsql.records(c, sql, *args, q.limit + 1))
        more = len(records) > q.limit
        records = records[: q.limit]
        return records, (records[-1].seq if more and records else None)

    async def _flush_quietly(self) -> None:
        """Reads see this replica's own writes; a failing flush is retried by the loop."""
        try:
            await self.flush()
        except StoreError:
            pass

    # -- watch scopes ------------------------------------------------------------------------

    async def scopes(self) -> list[ScopeRow]:
        rows = await self.transaction("read scopes", lambda conn: conn.fetch(pgsql.SCOPES))
        return [pgsql.scope_row(r) for r in rows]

    async def add_scope(self, row: ScopeRow) -> ScopeRow:
        key = scope_key(row.scope)

        async def run(conn: asyncpg.Connection) -> ScopeRow:
            await conn.execute(
                pgsql.ADD_SCOPE, row.id, partition_of(row.account, row.id), row.account, key, row.created_at, row.origin
            )
            return pgsql.scope_row(await conn.fetchrow(pgsql.GET_SCOPE, row.account, key))

        return await self.transaction("add a scope", run)

    async def update_scope(self, id: str, complete: bool, discovered: int) -> None:
        await self.transaction(
            "update a scope", lambda conn: conn.execute(pgsql.UPDATE_SCOPE, id, complete, discovered)
        )

    async def delete_scope(self, id: str) -> bool:
        result = await self.transaction("delete a scope", lambda conn: conn.execute(pgsql.DELETE_SCOPE, id))
        return bool(result != "DELETE 0")
