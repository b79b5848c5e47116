"""`SQLiteStore`: the embedded call store, one SQLite file in WAL mode.

All SQLite work runs on one dedicated thread, so the event loop never blocks on disk and the
connection is never shared. Registrations are committed before the caller is answered. Poll
results are written behind (`writebehind.py`), one transaction per flush (every
`flush_interval`, or sooner when many are queued), and every read first applies what is
queued. A SIGKILL can lose at most the last flush interval of poll results; those calls are
still non-terminal in the store and are simply polled again after restart, so no outcome is
lost or recorded twice. Every `sqlite3.Error` leaves as a `StoreError` naming the file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, Sequence, TypeVar

from ..model import TERMINAL_STATES
from . import schema
from .rows import CallQuery, CallRecord, HistoryRow, NewCall, Registered, ScopeRow, StoredCall, StoreError, Update
from .writebehind import WriteBehind

T = TypeVar("T")
log = logging.getLogger(__name__)

_TERMINAL_VALUES = frozenset(s.value for s in TERMINAL_STATES)


class SQLiteStore:
    """The SQLite file, driven from one worker thread through async methods."""

    def __init__(self, path: Path, flush_interval: float = 0.25, max_pending: int = 2000) -> None:
        self.path = Path(path)
        self.flush_interval = flush_interval
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._db: sqlite3.Connection | None = None
        self._behind = WriteBehind(max_pending)
        self._flusher: asyncio.Task[None] | None = None

    @property
    def write_errors(self) -> int:
        return self._behind.errors

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(self._open)
        self._flusher = asyncio.create_task(self._flush_loop(), name="store-flush")

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        self._db = schema.connect(self.path)

    async def close(self) -> None:
        if self._flusher:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._db is not None:
            self._write_pending()
            self._db.close()
            self._db = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the store thread; an `sqlite3.Error` becomes a `StoreError`."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._guarded, fn, args)

    def _guarded(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(*args)
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    # -- write-behind poll results ---------------------------------------------------------

    def queue(self, update: Update) -> None:
        self._behind.queue(update)

    async def flush(self) -> None:
        await self._run(self._write_pending)

    def _write_pending(self) -> None:
        try:
            self._behind.write(self.db)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write store {self.path}: {exc}") from None

    async def _flush_loop(self) -> None:
        wake = self._behind.wake
        while True:
            try:
                await asyncio.wait_for(wake.wait(), self.flush_interval)
            except TimeoutError:
                pass
            wake.clear()
            if self._behind:
                try:
                    await self.flush()
                except StoreError as exc:  # kept queued and retried next tick; visible meanwhile
                    errors = self._behind.errors
                    if errors == 1 or errors % 100 == 0:
                        log.error("%s (poll results are kept in memory and retried; %d failed flushes)", exc, errors)

    # -- registrations (durable before returning) ------------------------------------------

    async def register(self, calls: Sequence[NewCall], initial_state: str) -> list[Registered]:
        return await self._run(self._register, calls, initial_state)

    def _register(self, calls: Sequence[NewCall], initial_state: str) -> list[Registered]:
        self._write_pending()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            out = [self._register_one(db, c, initial_state) for c in calls]
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return out

    @staticmethod
    def _register_one(db: sqlite3.Connection, c: NewCall, initial_state: str) -> Registered:
        cur = db.execute(
            "INSERT INTO calls (account, call_id, provider, params, state, watching, first_seen_at)"
            " VALUES (?, ?, ?, ?, ?, 1, ?) ON CONFLICT (account, call_id) DO NOTHING",
            (c.account, c.call_id, c.provider, json.dumps(dict(c.params)), initial_state, c.first_seen_at),
        )
        if cur.rowcount and cur.lastrowid is not None:
            db.execute(
                "INSERT INTO history (call_seq, state, provider_status, at) VALUES (?, ?, NULL, ?)",
                (cur.lastrowid, initial_state, c.first_seen_at),
            )
            return Registered(cur.lastrowid, True, True, initial_state)
        seq, state, watching = db.execute(
            "SELECT seq, state, watching FROM calls WHERE account = ? AND call_id = ?", (c.account, c.call_id)
        ).fetchone()
        rewatch = not watching and state not in _TERMINAL_VALUES
        if rewatch:
            db.execute("UPDATE calls SET watching = 1 WHERE seq = ?", (seq,))
        return Registered(seq, False, rewatch, state)

    async def unwatch(self, account: str, call_id: str) -> CallRecord | None:
        return await self._run(self._unwatch, account, call_id)

    def _unwatch(self, account: str, call_id: str) -> CallRecord | None:
        self._write_pending()
        self.db.execute("UPDATE calls SET watching = 0 WHERE account = ? AND call_id = ?", (account, call_id))
        return self._get(account, call_id)

    async def prune(self, before: float) -> tuple[int, bool]:
        """Delete every call record not watched whose last activity (end, else last poll, else
        registration) is older than `before`, with its history. Returns (records deleted, whether
        the WAL could be emptied now). Freed pages are zeroed (`secure_delete`) and the WAL is
        truncated, so the deleted personal data is gone from the files, not just unlinked."""
        return await self._run(self._prune, before)

    def _prune(self, before: float) -> tuple[int, bool]:
        self._write_pending()
        old = "SELECT seq FROM calls WHERE watching = 0 AND COALESCE(ended_at, last_polled_at, first_seen_at) < ?"
        db = self.db
        db.execute("PRAGMA secure_delete = ON")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(f"DELETE FROM history WHERE call_seq IN ({old})", (before,))
            deleted = db.execute(f"DELETE FROM calls WHERE seq IN ({old})", (before,)).rowcount
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        return deleted, not busy

    # -- reads -----------------------------------------------------------------------------

    async def iter_active(self, chunk: int = 5000) -> AsyncIterator[list[StoredCall]]:
        """Every watched non-terminal call, `chunk` at a time, so start-up never holds all the
        rows and their objects at once (memory: what a resume leaves behind is what it keeps)."""
        cursor = await self._run(self.db.execute, schema.ACTIVE)
        params_cache: dict[str, dict[str, Any]] = {}
        try:
            while rows := await self._run(cursor.fetchmany, chunk):
                yield [schema.stored_call(r, params_cache) for r in rows if r[5] not in _TERMINAL_VALUES]
        finally:
            await self._run(cursor.close)

    async def get(self, account: str, call_id: str) -> CallRecord | None:
        return await self._run(self._get, account, call_id)

    def _get(self, account: str, call_id: str) -> CallRecord | None:
        self._write_pending()
        row = self.db.execute(
            f"SELECT {schema.COLUMNS} FROM calls WHERE account = ? AND call_id = ?", (account, call_id)
        ).fetchone()
        return self._records([row])[0] if row else None

    async def get_many(self, seqs: Sequence[int]) -> list[CallRecord]:
        return await self._run(self._get_many, seqs)

    def _get_many(self, seqs: Sequence[int]) -> list[CallRecord]:
        self._write_pending()
        rows = []
        for chunk in _chunks(list(seqs), 500):
            rows += self.db.execute(
                f"SELECT {schema.COLUMNS} FROM calls WHERE seq IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
        by_seq = {r[0]: r for r in rows}
        return self._records([by_seq[s] for s in seqs])

    async def list_calls(self, query: CallQuery) -> tuple[list[CallRecord], int | None]:
        return await self._run(self._list_calls, query)

    def _list_calls(self, q: CallQuery) -> tuple[list[CallRecord], int | None]:
        self._write_pending()
        where, args = [], []
        for clause, value in (
            ("account = ?", q.account),
            ("state = ?", q.state),
            ("first_seen_at >= ?", q.since),
            ("seq < ?", q.before),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = (
            f"SELECT {schema.COLUMNS} FROM calls {'WHERE ' + ' AND '.join(where) if where else ''}"
            f" ORDER BY seq DESC LIMIT ?"
        )
        rows = self.db.execute(sql, (*args, q.limit + 1)).fetchall()
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        return self._records(rows), (rows[-1][0] if more and rows else None)

    def _records(self, rows: list[tuple[Any, ...]]) -> list[CallRecord]:
        history: dict[int, list[HistoryRow]] = {r[0]: [] for r in rows}
        for chunk in _chunks(list(history), 500):
            for seq, state, status, at in self.db.execute(
                f"SELECT call_seq, state, provider_status, at FROM history WHERE call_seq IN"
                f" ({','.join('?' * len(chunk))}) ORDER BY id",
                chunk,
            ):
                history[seq].append(HistoryRow(state, status, at))
        return [schema.call_record(r, history[r[0]]) for r in rows]

    # -- watch scopes: a handful of rows, written rarely, committed at once -----------------

    async def scopes(self) -> list[ScopeRow]:
        return await self._run(
            lambda: [
                schema.scope_row(r)
                for r in self.db.execute(f"SELECT {schema.SCOPE_COLUMNS} FROM scopes ORDER BY created_at")
            ]
        )

    async def add_scope(self, row: ScopeRow) -> ScopeRow:
        def add() -> ScopeRow:
            key = schema.scope_key(row.scope)
            self.db.execute(
                "INSERT INTO scopes (id, account, scope, created_at, origin) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (account, scope) DO NOTHING",
                (row.id, row.account, key, row.created_at, row.origin),
            )
            return schema.scope_row(
                self.db.execute(
                    f"SELECT {schema.SCOPE_COLUMNS} FROM scopes WHERE account = ? AND scope = ?", (row.account, key)
                ).fetchone()
            )

        return await self._run(add)

    async def update_scope(self, id: str, complete: bool, discovered: int) -> None:
        await self._run(
            lambda: self.db.execute(
                "UPDATE scopes SET complete = ?, discovered = ? WHERE id = ?", (int(complete), discovered, id)
            )
        )

    async def delete_scope(self, id: str) -> bool:
        return await self._run(lambda: self.db.execute("DELETE FROM scopes WHERE id = ?", (id,)).rowcount > 0)


def _chunks(items: list[T], n: int) -> Iterator[list[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
