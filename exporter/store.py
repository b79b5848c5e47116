"""Durable call store: SQLite in WAL mode.

All SQLite work runs on one dedicated thread, so the event loop never blocks on disk and the
connection is never shared. Registrations are committed before the caller is answered. Poll
results are write-behind: queued, then applied in one transaction per flush (every
`flush_interval` or sooner when many are queued) — and every read first applies what is
queued, so the API always reads its own writes. A SIGKILL can lose at most the last flush
interval of poll results; those calls are still non-terminal in the store and are simply
polled again after restart, so no outcome is lost or recorded twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, TypeVar

from .errors import ExporterError
from .model import TERMINAL_STATES

T = TypeVar("T")
log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    call_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    provider_status TEXT,
    reason TEXT,
    watching INTEGER NOT NULL,
    seen INTEGER NOT NULL DEFAULT 0,
    events_seen INTEGER NOT NULL DEFAULT 0,
    created_at REAL, answered_at REAL, ended_at REAL, duration_seconds REAL,
    first_seen_at REAL NOT NULL,
    last_polled_at REAL,
    polls INTEGER NOT NULL DEFAULT 0,
    poll_errors INTEGER NOT NULL DEFAULT 0,
    extras TEXT NOT NULL DEFAULT '{}',
    UNIQUE (account, call_id)
);
CREATE INDEX IF NOT EXISTS calls_watching ON calls (seq) WHERE watching = 1;
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_seq INTEGER NOT NULL REFERENCES calls (seq),
    state TEXT NOT NULL,
    provider_status TEXT,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS history_call ON history (call_seq);
CREATE TABLE IF NOT EXISTS scopes (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    scope TEXT NOT NULL,
    created_at REAL NOT NULL,
    origin TEXT NOT NULL,
    complete INTEGER NOT NULL DEFAULT 0,
    discovered INTEGER NOT NULL DEFAULT 0,
    UNIQUE (account, scope)
);
"""

UPDATABLE = frozenset({
    "events_seen",
    "state", "provider_status", "reason", "watching", "seen", "created_at", "answered_at",
    "ended_at", "duration_seconds", "last_polled_at", "extras",
})


class StoreError(ExporterError):
    """The store cannot be opened or written (path, permissions, disk full)."""


@dataclass
class NewCall:
    account: str
    call_id: str
    provider: str
    params: dict[str, Any]
    first_seen_at: float


@dataclass
class Update:
    """A poll's result for one call: changed columns, counter increments, new history rows."""

    seq: int
    fields: dict[str, Any] = field(default_factory=dict)
    polls: int = 0
    poll_errors: int = 0
    history: list[tuple[str, str | None, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Registered:
    seq: int
    inserted: bool  # a new record
    started: bool  # watching started now (new, or an unwatched non-terminal call watched again)
    state: str


@dataclass(slots=True)
class StoredCall:
    """A non-terminal watched call as loaded at start-up."""

    seq: int
    account: str
    call_id: str
    provider: str
    params: dict[str, Any]
    state: str
    provider_status: str | None
    seen: bool
    created_at: float | None
    answered_at: float | None
    first_seen_at: float
    events_seen: int


class Store:
    """The SQLite file, driven from one worker thread through async methods."""

    def __init__(self, path: Path, flush_interval: float = 0.25, max_pending: int = 2000) -> None:
        self.path = Path(path)
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._db: sqlite3.Connection | None = None
        self._pending: list[Update] = []
        self._lock = threading.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.write_errors = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(self._open)
        self._flusher = asyncio.create_task(self._flush_loop(), name="store-flush")

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(SCHEMA)
            _migrate(db)
            # a real write: an existing store on a read-only mount otherwise opens "fine" and
            # only fails later, silently, when poll results are written behind
            db.execute("BEGIN IMMEDIATE")
            db.execute("PRAGMA user_version = 1")
            db.execute("COMMIT")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        self._db = db

    async def close(self) -> None:
        if self._flusher:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._db is not None:
            self._apply_pending()
            self._db.close()
            self._db = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    # -- write-behind poll results ---------------------------------------------------------

    def queue(self, update: Update) -> None:
        with self._lock:
            self._pending.append(update)
            if len(self._pending) >= self.max_pending:
                self._wake.set()

    async def flush(self) -> None:
        await self._run(self._apply_pending)

    async def _flush_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._pending:
                try:
                    await self.flush()
                except StoreError as exc:  # kept pending and retried next tick; visible meanwhile
                    if self.write_errors == 1 or self.write_errors % 100 == 0:
                        log.error("%s (poll results are kept in memory and retried; %d failed flushes)",
                                  exc, self.write_errors)

    def _apply_pending(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            with self._transaction() as db:
                self._apply_batch(db, batch)
        except sqlite3.Error as exc:
            with self._lock:  # keep them: nothing is dropped on a transient disk error
                self._pending[:0] = batch
            self.write_errors += 1
            raise StoreError(f"cannot write store {self.path}: {exc}") from None

    @staticmethod
    def _apply_batch(db: sqlite3.Connection, batch: list[Update]) -> None:
        """Coalesce a batch per call (last value of each column, summed counters, every history
        row in order), then write it with one `executemany` per distinct set of columns."""
        merged: dict[int, list[Any]] = {}
        history: list[tuple[int, str, str | None, float]] = []
        for up in batch:
            entry = merged.get(up.seq)
            if entry is None:
                merged[up.seq] = [up.fields, up.polls, up.poll_errors]
            else:
                if up.fields:
                    entry[0] = {**entry[0], **up.fields}
                entry[1] += up.polls
                entry[2] += up.poll_errors
            if up.history:
                seq = up.seq
                history += [(seq, *h) for h in up.history]
        shapes: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for seq, (fields, polls, errors) in merged.items():
            cols = tuple(k for k in fields if k in UPDATABLE)
            values = [fields[k] for k in cols]
            if "extras" in fields:
                values[cols.index("extras")] = _EXTRAS_JSON(fields["extras"])
            shapes.setdefault(cols, []).append((*values, polls, errors, seq))
        for cols, rows in shapes.items():
            if not _write_as_one_statement(db, _update_sql(cols), rows):
                sets = [f"{k} = ?" for k in cols] + ["polls = polls + ?", "poll_errors = poll_errors + ?"]
                db.executemany(f"UPDATE calls SET {', '.join(sets)} WHERE seq = ?", rows)
        if history and not _write_as_one_statement(db, _HISTORY_SQL, history):
            db.executemany("INSERT INTO history (call_seq, state, provider_status, at) VALUES (?, ?, ?, ?)", history)

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type: Any, *_: Any) -> None:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def _transaction(self) -> "Store._Tx":
        return Store._Tx(self.db)

    # -- registrations (durable before returning) ------------------------------------------

    async def register(self, calls: list[NewCall], initial_state: str) -> list[Registered]:
        """Insert calls in one transaction, committed before returning; one `Registered` each.

        A known call that was unwatched before reaching a terminal state is watched again.
        """
        return await self._run(self._register, calls, initial_state)

    def _register(self, calls: list[NewCall], initial_state: str) -> list[Registered]:
        self._apply_pending()
        out = []
        terminal = tuple(s.value for s in TERMINAL_STATES)
        try:
            with self._transaction() as db:
                for c in calls:
                    cur = db.execute(
                        "INSERT INTO calls (account, call_id, provider, params, state, watching, first_seen_at)"
                        " VALUES (?, ?, ?, ?, ?, 1, ?) ON CONFLICT (account, call_id) DO NOTHING",
                        (c.account, c.call_id, c.provider, json.dumps(c.params), initial_state, c.first_seen_at))
                    if cur.rowcount:
                        db.execute("INSERT INTO history (call_seq, state, provider_status, at) VALUES (?, ?, NULL, ?)",
                                   (cur.lastrowid, initial_state, c.first_seen_at))
                        out.append(Registered(cur.lastrowid, True, True, initial_state))
                        continue
                    seq, state, watching = db.execute(
                        "SELECT seq, state, watching FROM calls WHERE account = ? AND call_id = ?",
                        (c.account, c.call_id)).fetchone()
                    rewatch = not watching and state not in terminal
                    if rewatch:
                        db.execute("UPDATE calls SET watching = 1 WHERE seq = ?", (seq,))
                    out.append(Registered(seq, False, rewatch, state))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write store {self.path}: {exc}") from None
        return out

    async def unwatch(self, account: str, call_id: str) -> dict[str, Any] | None:
        return await self._run(self._unwatch, account, call_id)

    def _unwatch(self, account: str, call_id: str) -> dict[str, Any] | None:
        self._apply_pending()
        try:
            self.db.execute("UPDATE calls SET watching = 0 WHERE account = ? AND call_id = ?", (account, call_id))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write store {self.path}: {exc}") from None
        return self._get(account, call_id)

    async def prune(self, before: float) -> tuple[int, bool]:
        """Delete every call record not watched whose last activity (end, else last poll, else
        registration) is older than `before`, with its history. Returns (records deleted, whether
        the WAL could be emptied now). Freed pages are zeroed (`secure_delete`) and the WAL is
        truncated, so the deleted personal data is gone from the files, not just unlinked."""
        return await self._run(self._prune, before)

    def _prune(self, before: float) -> tuple[int, bool]:
        self._apply_pending()
        old = "SELECT seq FROM calls WHERE watching = 0 AND COALESCE(ended_at, last_polled_at, first_seen_at) < ?"
        try:
            self.db.execute("PRAGMA secure_delete = ON")
            with self._transaction() as db:
                db.execute(f"DELETE FROM history WHERE call_seq IN ({old})", (before,))
                deleted = db.execute(f"DELETE FROM calls WHERE seq IN ({old})", (before,)).rowcount
            busy = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write store {self.path}: {exc}") from None
        return deleted, not busy

    # -- reads -----------------------------------------------------------------------------

    async def load_active(self) -> list[StoredCall]:
        return [call async for chunk in self.iter_active() for call in chunk]

    async def iter_active(self, chunk: int = 5000) -> AsyncIterator[list[StoredCall]]:
        """Every watched non-terminal call, `chunk` at a time, so start-up never holds all the
        rows and their objects at once (memory: what a resume leaves behind is what it keeps)."""
        cursor = await self._run(self.db.execute, _ACTIVE)
        params_cache: dict[str, dict[str, Any]] = {}
        try:
            while rows := await self._run(cursor.fetchmany, chunk):
                yield [_stored(r, params_cache) for r in rows if r[5] not in _TERMINAL_VALUES]
        finally:
            await self._run(cursor.close)

    async def get(self, account: str, call_id: str) -> dict[str, Any] | None:
        return await self._run(self._get, account, call_id)

    def _get(self, account: str, call_id: str) -> dict[str, Any] | None:
        self._apply_pending()
        row = self.db.execute(f"SELECT {_COLUMNS} FROM calls WHERE account = ? AND call_id = ?",
                              (account, call_id)).fetchone()
        return self._records([row])[0] if row else None

    async def get_many(self, seqs: list[int]) -> list[dict[str, Any]]:
        return await self._run(self._get_many, seqs)

    def _get_many(self, seqs: list[int]) -> list[dict[str, Any]]:
        self._apply_pending()
        rows = []
        for chunk in _chunks(seqs, 500):
            rows += self.db.execute(f"SELECT {_COLUMNS} FROM calls WHERE seq IN ({','.join('?' * len(chunk))})",
                                    chunk).fetchall()
        by_seq = {r[0]: r for r in rows}
        return self._records([by_seq[s] for s in seqs])

    async def list(self, account: str | None, state: str | None, since: float | None,
                   limit: int, cursor: int | None) -> tuple[list[dict[str, Any]], int | None]:
        return await self._run(self._list, account, state, since, limit, cursor)

    def _list(self, account: str | None, state: str | None, since: float | None,
              limit: int, cursor: int | None) -> tuple[list[dict[str, Any]], int | None]:
        self._apply_pending()
        where, args = [], []
        for clause, value in (("account = ?", account), ("state = ?", state),
                              ("first_seen_at >= ?", since), ("seq < ?", cursor)):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = f"SELECT {_COLUMNS} FROM calls {'WHERE ' + ' AND '.join(where) if where else ''}" \
              f" ORDER BY seq DESC LIMIT ?"
        rows = self.db.execute(sql, (*args, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return self._records(rows), (rows[-1][0] if more and rows else None)

    def _records(self, rows: list[tuple]) -> list[dict[str, Any]]:
        history: dict[int, list[dict[str, Any]]] = {r[0]: [] for r in rows}
        for chunk in _chunks(list(history), 500):
            for seq, state, status, at in self.db.execute(
                    f"SELECT call_seq, state, provider_status, at FROM history WHERE call_seq IN"
                    f" ({','.join('?' * len(chunk))}) ORDER BY id", chunk):
                history[seq].append({"state": state, "provider_status": status, "at": iso(at)})
        return [_record(r, history[r[0]]) for r in rows]

    # -- watch scopes -------------------------------------------------------------------------
    #
    # A handful of rows, written rarely: plain statements, committed at once.

    async def scopes(self) -> list[tuple[str, str, str, float, str, bool, int]]:
        """Every stored scope: (id, account, scope JSON, created_at, origin, complete, discovered)."""
        return await self._run(lambda: [(*r[:5], bool(r[5]), r[6]) for r in self.db.execute(
            "SELECT id, account, scope, created_at, origin, complete, discovered FROM scopes ORDER BY created_at")])

    async def add_scope(self, id: str, account: str, scope: str, created_at: float, origin: str) -> str:
        """Insert unless the same (account, scope) exists; returns the id of the stored one."""
        def add() -> str:
            try:
                self.db.execute("INSERT INTO scopes (id, account, scope, created_at, origin) VALUES (?, ?, ?, ?, ?)"
                                " ON CONFLICT (account, scope) DO NOTHING", (id, account, scope, created_at, origin))
                return self.db.execute("SELECT id FROM scopes WHERE account = ? AND scope = ?",
                                       (account, scope)).fetchone()[0]
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write store {self.path}: {exc}") from None
        return await self._run(add)

    async def update_scope(self, id: str, complete: bool, discovered: int) -> None:
        await self._run(lambda: self.db.execute("UPDATE scopes SET complete = ?, discovered = ? WHERE id = ?",
                                                (int(complete), discovered, id)))

    async def delete_scope(self, id: str) -> bool:
        return await self._run(lambda: self.db.execute("DELETE FROM scopes WHERE id = ?", (id,)).rowcount > 0)

    def integrity_check(self) -> str:
        """`PRAGMA integrity_check` result ("ok" when healthy); for tests and operators."""
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]


def _write_as_one_statement(db: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> bool:
    """Run `sql` once with every row as one JSON array parameter (read with `json_each`).

    `executemany` releases the GIL around each row's step and must win it back from the busy
    event loop thread every time (up to the 5 ms switch interval): at a few thousand polls/s
    the store thread fell behind and the write-behind queue grew without bound. One statement
    is one step: SQLite does all the rows without the GIL. False (the caller uses
    `executemany`) when SQLite is older than 3.33 (UPDATE ... FROM) or a value has no JSON
    form (NaN, infinities).
    """
    if not _ONE_STATEMENT:
        return False
    try:
        payload = _ROWS_JSON(rows)
    except ValueError:
        return False
    db.execute(sql, (payload,))
    return True


def _update_sql(cols: tuple[str, ...]) -> str:
    sql = _UPDATE_SQL.get(cols)
    if sql is None:
        n = len(cols)
        sets = [f"{k} = json_extract(v.value, '$[{i}]')" for i, k in enumerate(cols)]
        sets += [f"polls = polls + json_extract(v.value, '$[{n}]')",
                 f"poll_errors = poll_errors + json_extract(v.value, '$[{n + 1}]')"]
        sql = _UPDATE_SQL[cols] = (f"UPDATE calls SET {', '.join(sets)} FROM json_each(?1) AS v"
                                   f" WHERE calls.seq = json_extract(v.value, '$[{n + 2}]')")
    return sql


_UPDATE_SQL: dict[tuple[str, ...], str] = {}
_HISTORY_SQL = ("INSERT INTO history (call_seq, state, provider_status, at) SELECT json_extract(value, '$[0]'),"
                " json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]')"
                " FROM json_each(?1) ORDER BY key")


def _supports_one_statement() -> bool:
    """UPDATE ... FROM (SQLite 3.33) and the JSON functions (built in since 3.38, usually before)."""
    try:
        db = sqlite3.connect(":memory:")
        try:
            db.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b)")
            db.execute("INSERT INTO t VALUES (1, 0)")
            db.execute("UPDATE t SET b = json_extract(v.value, '$[1]') FROM json_each('[[1, 2]]') AS v"
                       " WHERE t.a = json_extract(v.value, '$[0]')")
            return db.execute("SELECT b FROM t").fetchone() == (2,)
        finally:
            db.close()
    except sqlite3.Error:
        return False


_ONE_STATEMENT = _supports_one_statement()
_ROWS_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode

#: `json.dumps(x, default=str)` without building a new encoder per call (it does, given `default`)
_EXTRAS_JSON = json.JSONEncoder(default=str).encode

_ACTIVE = ("SELECT seq, account, call_id, provider, params, state, provider_status, seen, created_at,"
           " answered_at, first_seen_at, events_seen FROM calls WHERE watching = 1")
_TERMINAL_VALUES = frozenset(s.value for s in TERMINAL_STATES)


def _stored(r: tuple, params_cache: dict[str, dict[str, Any]]) -> StoredCall:
    """A row as a `StoredCall`; calls with the same params text share one parsed dict (and so
    one copy of each value: most calls of an account have the same agent or batch)."""
    params = params_cache.get(r[4])
    if params is None:
        params = json.loads(r[4])
        if len(params_cache) < 10_000:
            params_cache[r[4]] = params
    return StoredCall(r[0], r[1], r[2], r[3], params, r[5], r[6], bool(r[7]), r[8], r[9], r[10], r[11])


_COLUMNS = ("seq, account, provider, call_id, params, state, provider_status, reason, watching, created_at,"
            " answered_at, ended_at, duration_seconds, first_seen_at, last_polled_at, polls, poll_errors, extras")


def _record(r: tuple, history: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "account": r[1], "provider": r[2], "call_id": r[3], "params": json.loads(r[4]),
        "state": r[5], "provider_status": r[6], "reason": r[7],
        "watching": bool(r[8]),
        "created_at": iso(r[9]), "answered_at": iso(r[10]), "ended_at": iso(r[11]),
        "duration_seconds": r[12], "first_seen_at": iso(r[13]), "last_polled_at": iso(r[14]),
        "polls": r[15], "poll_errors": r[16], "extras": json.loads(r[17]), "history": history,
    }


def _migrate(db: sqlite3.Connection) -> None:
    """Columns added after a store was first created (CREATE TABLE IF NOT EXISTS keeps old tables)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(calls)")}
    if "events_seen" not in columns:
        db.execute("ALTER TABLE calls ADD COLUMN events_seen INTEGER NOT NULL DEFAULT 0")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _chunks(items: list[T], n: int) -> Iterator[list[T]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]

