"""The SQLite schema, its migrations, and how its rows become the store's dataclasses."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Mapping

from .rows import CallRecord, HistoryRow, ScopeRow, StoredCall, StoreError

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


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating or migrating) the store at `path`, refusing one that cannot be written."""
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
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
        raise StoreError(f"cannot open store {path}: {exc}") from None
    return db


def _migrate(db: sqlite3.Connection) -> None:
    """Columns added after a store was first created (CREATE TABLE IF NOT EXISTS keeps old tables)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(calls)")}
    if "events_seen" not in columns:
        db.execute("ALTER TABLE calls ADD COLUMN events_seen INTEGER NOT NULL DEFAULT 0")


ACTIVE = (
    "SELECT seq, account, call_id, provider, params, state, provider_status, seen, created_at,"
    " answered_at, first_seen_at, events_seen FROM calls WHERE watching = 1"
)


def stored_call(r: tuple[Any, ...], params_cache: dict[str, dict[str, Any]]) -> StoredCall:
    """A row of `ACTIVE`; calls with the same params text share one parsed dict (and so one copy
    of each value: most calls of an account have the same agent or batch)."""
    params = params_cache.get(r[4])
    if params is None:
        params = json.loads(r[4])
        if len(params_cache) < 10_000:
            params_cache[r[4]] = params
    return StoredCall(r[0], r[1], r[2], r[3], params, r[5], r[6], bool(r[7]), r[8], r[9], r[10], r[11])


COLUMNS = (
    "seq, account, provider, call_id, params, state, provider_status, reason, watching, created_at,"
    " answered_at, ended_at, duration_seconds, first_seen_at, last_polled_at, polls, poll_errors, extras"
)


def call_record(r: tuple[Any, ...], history: list[HistoryRow]) -> CallRecord:
    """A row of `COLUMNS` and its history."""
    return CallRecord._make(
        (*r[:4], json.loads(r[4]), *r[5:8], bool(r[8]), *r[9:17], json.loads(r[17]), tuple(history))
    )


SCOPE_COLUMNS = "id, account, scope, created_at, origin, complete, discovered"


def scope_key(scope: Mapping[str, str]) -> str:
    """A scope as stored: canonical JSON, so the same scope is one row per account."""
    return json.dumps(dict(scope), sort_keys=True)


def scope_row(r: tuple[Any, ...]) -> ScopeRow:
    """A row of `SCOPE_COLUMNS`."""
    return ScopeRow(
        id=r[0],
        account=r[1],
        scope=json.loads(r[2]),
        created_at=r[3],
        origin=r[4],
        complete=bool(r[5]),
        discovered=r[6],
    )
