"""Write-behind of poll results: queued on the event loop, written by the store thread.

Poll results are the store's hot path (one per status request). They are queued without I/O and
written in one transaction per flush; a batch is coalesced per call (last value of each column,
summed counters, every history row in order) and written with one statement per distinct set of
columns. A failed write keeps the batch queued, in order, for the next flush: nothing is dropped
on a transient disk error.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from typing import Any

from .rows import UPDATABLE, Update


class WriteBehind:
    """The queue of poll results not yet written (shared by the loop and the store thread)."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self.errors = 0  # failed writes so far
        self.wake = asyncio.Event()  # set when the queue is long enough to flush early
        self._pending: list[Update] = []
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._pending)

    def queue(self, update: Update) -> None:
        with self._lock:
            self._pending.append(update)
            if len(self._pending) >= self.max_pending:
                self.wake.set()

    def write(self, db: sqlite3.Connection) -> None:
        """Write every queued result in one transaction (on the store thread); on failure the
        results are queued again, ahead of newer ones, and the `sqlite3.Error` is raised."""
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                write_batch(db, batch)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error:
            with self._lock:
                self._pending[:0] = batch
            self.errors += 1
            raise


def write_batch(db: sqlite3.Connection, batch: list[Update]) -> None:
    """Coalesce `batch` per call, then write it with one statement per distinct set of columns."""
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
            values[cols.index("extras")] = EXTRAS_JSON(fields["extras"])
        shapes.setdefault(cols, []).append((*values, polls, errors, seq))
    for cols, rows in shapes.items():
        if not _write_as_one_statement(db, _update_sql(cols), rows):
            sets = [f"{k} = ?" for k in cols] + ["polls = polls + ?", "poll_errors = poll_errors + ?"]
            db.executemany(f"UPDATE calls SET {', '.join(sets)} WHERE seq = ?", rows)
    if history and not _write_as_one_statement(db, _HISTORY_SQL, history):
        db.executemany("INSERT INTO history (call_seq, state, provider_status, at) VALUES (?, ?, ?, ?)", history)


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
        sets += [
            f"polls = polls + json_extract(v.value, '$[{n}]')",
            f"poll_errors = poll_errors + json_extract(v.value, '$[{n + 1}]')",
        ]
        sql = _UPDATE_SQL[cols] = (
            f"UPDATE calls SET {', '.join(sets)} FROM json_each(?1) AS v"
            f" WHERE calls.seq = json_extract(v.value, '$[{n + 2}]')"
        )
    return sql


_UPDATE_SQL: dict[tuple[str, ...], str] = {}
_HISTORY_SQL = (
    "INSERT INTO history (call_seq, state, provider_status, at) SELECT json_extract(value, '$[0]'),"
    " json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]')"
    " FROM json_each(?1) ORDER BY key"
)


def _supports_one_statement() -> bool:
    """UPDATE ... FROM (SQLite 3.33) and the JSON functions (built in since 3.38, usually before)."""
    try:
        db = sqlite3.connect(":memory:")
        try:
            db.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b)")
            db.execute("INSERT INTO t VALUES (1, 0)")
            db.execute(
                "UPDATE t SET b = json_extract(v.value, '$[1]') FROM json_each('[[1, 2]]') AS v"
                " WHERE t.a = json_extract(v.value, '$[0]')"
            )
            return bool(db.execute("SELECT b FROM t").fetchone() == (2,))
        finally:
            db.close()
    except sqlite3.Error:
        return False


_ONE_STATEMENT = _supports_one_statement()
_ROWS_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode

#: `json.dumps(x, default=str)` without building a new encoder per call (it does, given `default`)
EXTRAS_JSON = json.JSONEncoder(default=str).encode
