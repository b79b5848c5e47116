"""The PostgreSQL store's statements and row conversions (kept apart from the store's logic).

Batches travel as arrays (`unnest`), so a registration of 1,000 calls or a flush of 2,000 poll
results is one round trip per statement. Every write of a call's state joins `oce_leases` on
(partition, owner, epoch): the fence. Rows it refuses are simply not returned.
"""

from __future__ import annotations

import json
from typing import Any, Mapping
from urllib.parse import urlsplit

import asyncpg

from .rows import CallRecord, HistoryRow, ScopeRow, StoredCall

#: the columns an update may set, with the array type each travels as
COLUMN_TYPES: Mapping[str, str] = {
    "events_seen": "int",
    "state": "text",
    "provider_status": "text",
    "reason": "text",
    "watching": "bool",
    "seen": "bool",
    "created_at": "float8",
    "answered_at": "float8",
    "ended_at": "float8",
    "duration_seconds": "float8",
    "last_polled_at": "float8",
    "extras": "jsonb",
}

COLUMNS = (
    "seq, account, provider, call_id, params, state, provider_status, reason, watching, created_at, "
    "answered_at, ended_at, duration_seconds, first_seen_at, last_polled_at, polls, poll_errors, extras"
)
ACTIVE_COLUMNS = (
    "seq, account, call_id, provider, params, state, provider_status, seen, created_at, answered_at, "
    "first_seen_at, events_seen"
)

#: each call as stored before the statement is looked up through the unique (account, call_id)
#: index (LATERAL with LIMIT 1, which the planner cannot flatten into a join; `seq = ANY(ARRAY(...))`
#: for the re-watch): joined as tables, the planner hashed all of oce_calls twice per batch, so a
#: batch's cost grew with the store's size (~40 ms of a ~65 ms batch of 1,000 at 70,000 calls)
REGISTER = """
WITH input AS (
    SELECT * FROM unnest($1::smallint[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::float8[])
        WITH ORDINALITY AS t(partition, account, call_id, provider, params, first_seen_at, n)
), stored AS (
    SELECT input.n, o.seq, o.state, o.watching FROM input LEFT JOIN LATERAL (
        SELECT seq, state, watching FROM oce_calls WHERE account = input.account AND call_id = input.call_id LIMIT 1
    ) o ON true
), inserted AS (
    INSERT INTO oce_calls (partition, account, call_id, provider, params, state, watching, first_seen_at)
    SELECT partition, account, call_id, provider, params, $7, true, first_seen_at FROM input ORDER BY n
    ON CONFLICT (account, call_id) DO NOTHING
    RETURNING seq, account, call_id
), rewatched AS (
    UPDATE oce_calls c SET watching = true
    WHERE c.seq = ANY(ARRAY(SELECT seq FROM stored WHERE NOT watching))
        AND NOT c.watching AND c.state <> ALL($8::text[])
    RETURNING c.seq
)
SELECT input.n, coalesce(i.seq, c.seq) AS seq, first AND i.seq IS NOT NULL AS inserted,
       first AND (i.seq IS NOT NULL OR r.seq IS NOT NULL) AS started, coalesce(c.state, $7) AS state,
       input.partition
FROM (SELECT *, row_number() OVER (PARTITION BY account, call_id ORDER BY n) = 1 AS first FROM input) input
LEFT JOIN inserted i ON i.account = input.account AND i.call_id = input.call_id
LEFT JOIN stored c ON c.n = input.n
LEFT JOIN rewatched r ON r.seq = c.seq
ORDER BY input.n
"""
#: a call another replica inserted while our statement ran (its snapshot could not see it)
REGISTERED_LATE = "SELECT seq, state FROM oce_calls WHERE account = $1 AND call_id = $2"
REGISTER_HISTORY = """
INSERT INTO oce_history (call_seq, state, provider_status, at)
SELECT seq, $2, NULL, at FROM unnest($1::bigint[], $3::float8[]) AS t(seq, at)
"""
INBOX = (
    "INSERT INTO oce_inbox (partition, call_seq, kind, body)"
    " SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::text[], $4::jsonb[])"
)
#: fenced like a write: a replica that does not know yet it lost a partition cannot take its items
TAKE_INBOX = """
DELETE FROM oce_inbox WHERE partition = ANY($1::smallint[]) AND partition IN (
    SELECT partition FROM oce_leases WHERE owner = $2 AND expires_at > now())
RETURNING id, partition, call_seq, kind, body
"""
UNWATCH = "UPDATE oce_calls SET watching = false WHERE account = $1 AND call_id = $2 RETURNING seq, partition"
ACTIVE = (
    f"SELECT {ACTIVE_COLUMNS} FROM oce_calls WHERE watching AND partition = ANY($1::smallint[])"
    " AND state <> ALL($2::text[]) ORDER BY seq"
)
ACTIVE_SEQS = (
    f"SELECT {ACTIVE_COLUMNS} FROM oce_calls WHERE seq = ANY($1::bigint[]) AND watching"
    " AND state <> ALL($2::text[]) ORDER BY seq"
)
GET = f"SELECT {COLUMNS} FROM oce_calls WHERE account = $1 AND call_id = $2"
GET_MANY = f"SELECT {COLUMNS} FROM oce_calls WHERE seq = ANY($1::bigint[])"
HISTORY = "SELECT call_seq, state, provider_status, at FROM oce_history WHERE call_seq = ANY($1::bigint[]) ORDER BY id"
HISTORY_FENCED = """
INSERT INTO oce_history (call_seq, state, provider_status, at)
SELECT h.seq, h.state, h.status, h.at
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::float8[]) WITH ORDINALITY AS h(seq, state, status, at, n)
WHERE h.seq = ANY($5::bigint[]) ORDER BY h.n
"""
SCOPE_COLUMNS = "id, account, scope, created_at, origin, complete, discovered"
SCOPES = f"SELECT {SCOPE_COLUMNS} FROM oce_scopes ORDER BY created_at"
ADD_SCOPE = """
INSERT INTO oce_scopes (id, partition, account, scope, created_at, origin) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (account, scope) DO NOTHING
"""
GET_SCOPE = f"SELECT {SCOPE_COLUMNS} FROM oce_scopes WHERE account = $1 AND scope = $2"
UPDATE_SCOPE = "UPDATE oce_scopes SET complete = $2, discovered = $3 WHERE id = $1"
DELETE_SCOPE = "DELETE FROM oce_scopes WHERE id = $1"
#: prune: the calls it deletes, locked so a registration cannot watch one again meanwhile
PRUNE_CALLS = (
    "SELECT seq FROM oce_calls WHERE NOT watching AND coalesce(ended_at, last_polled_at, first_seen_at) < $1 FOR UPDATE"
)
PRUNE_ROWS = (
    "DELETE FROM oce_history WHERE call_seq = ANY($1::bigint[])",
    "DELETE FROM oce_inbox WHERE call_seq = ANY($1::bigint[])",
    "DELETE FROM oce_calls WHERE seq = ANY($1::bigint[])",
)
NOTIFY = "SELECT pg_notify('oce_inbox', $1)"
LOCK_LEASES = "SELECT 1 FROM oce_leases WHERE partition = ANY($1::smallint[]) FOR KEY SHARE"
#: a replica paused inside a transaction (SIGSTOP, a frozen VM) must not hold its lease rows
SESSION_SETTINGS = {"idle_in_transaction_session_timeout": "5000"}

_UPDATES: dict[tuple[str, ...], str] = {}


def fenced_update(cols: tuple[str, ...]) -> str:
    """One statement for every poll result that sets exactly `cols`; returns the seqs written.

    Arrays: $1 seq, $2 partition, $3 epoch, $4 polls, $5 poll_errors, then one per column;
    the last parameter is this replica's id (the lease owner).
    """
    sql = _UPDATES.get(cols)
    if sql is None:
        n = len(cols)
        arrays = ", ".join(
            ["$1::bigint[]", "$2::smallint[]", "$3::bigint[]", "$4::int[]", "$5::int[]"]
            + [f"${i + 6}::{COLUMN_TYPES[c]}[]" for i, c in enumerate(cols)]
        )
        names = ", ".join(["seq", "part", "epoch", "polls", "errs", *cols])
        sets = ", ".join(
            [f"{c} = u.{c}" for c in cols] + ["polls = c.polls + u.polls", "poll_errors = c.poll_errors + u.errs"]
        )
        sql = _UPDATES[cols] = (
            f"UPDATE oce_calls c SET {sets} FROM unnest({arrays}) AS u({names})"
            f" JOIN oce_leases l ON l.partition = u.part AND l.epoch = u.epoch AND l.owner = ${n + 6}"
            " WHERE c.seq = u.seq AND c.partition = u.part RETURNING c.seq"
        )
    return sql


async def init_connection(conn: asyncpg.Connection) -> None:
    """JSON columns as Python objects on every pooled connection."""
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=_JSON, decoder=json.loads, schema="pg_catalog")


_ENCODE = json.JSONEncoder(default=str, separators=(",", ":")).encode


def _JSON(value: Any) -> str:
    """JSON for a jsonb column; a NUL (which jsonb refuses, failing the whole batch) becomes U+FFFD."""
    text = _ENCODE(value)
    return _ENCODE(_no_nul(value)) if "\\u0000" in text else text


def _no_nul(value: Any) -> Any:
    if isinstance(value, str):
        return text_value(value)
    if isinstance(value, dict):
        return {_no_nul(k): _no_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nul(v) for v in value]
    return value


def text_value(value: str | None) -> str | None:
    """A provider's string for a text column: PostgreSQL's text holds no NUL (U+FFFD instead)."""
    return value.replace("\x00", "\ufffd") if value is not None and "\x00" in value else value


def call_record(r: asyncpg.Record, history: list[HistoryRow]) -> CallRecord:
    return CallRecord(
        seq=r["seq"],
        account=r["account"],
        provider=r["provider"],
        call_id=r["call_id"],
        params=r["params"],
        state=r["state"],
        provider_status=r["provider_status"],
        reason=r["reason"],
        watching=r["watching"],
        created_at=r["created_at"],
        answered_at=r["answered_at"],
        ended_at=r["ended_at"],
        duration_seconds=r["duration_seconds"],
        first_seen_at=r["first_seen_at"],
        last_polled_at=r["last_polled_at"],
        polls=r["polls"],
        poll_errors=r["poll_errors"],
        extras=r["extras"],
        history=tuple(history),
    )


def stored_call(r: asyncpg.Record) -> StoredCall:
    return StoredCall(
        r["seq"],
        r["account"],
        r["call_id"],
        r["provider"],
        r["params"],
        r["state"],
        r["provider_status"],
        r["seen"],
        r["created_at"],
        r["answered_at"],
        r["first_seen_at"],
        r["events_seen"],
    )


def scope_row(r: asyncpg.Record) -> ScopeRow:
    return ScopeRow(
        r["id"], r["account"], json.loads(r["scope"]), r["created_at"], r["origin"], r["complete"], r["discovered"]
    )


_CASTS: Mapping[str, Any] = {"bool": bool, "int": int, "float8": float, "text": text_value}


def column_values(cols: tuple[str, ...], fields: list[Mapping[str, Any]]) -> list[list[Any]]:
    """Per column, the values of every row (the arrays a fenced update binds), in the column's
    type: the host writes SQLite's 0/1 for flags, PostgreSQL's arrays want booleans (and text
    no NUL)."""
    out = []
    for c in cols:
        cast = _CASTS.get(COLUMN_TYPES[c])
        out.append([f[c] if cast is None or f[c] is None else cast(f[c]) for f in fields])
    return out


async def records(conn: asyncpg.Connection, sql: str, *args: Any) -> list[CallRecord]:
    """The calls `sql` selects (`COLUMNS`), each with its history."""
    rows = await conn.fetch(sql, *args)
    history: dict[int, list[HistoryRow]] = {r["seq"]: [] for r in rows}
    if history:
        for h in await conn.fetch(HISTORY, list(history)):
            history[h["call_seq"]].append(HistoryRow(h["state"], h["provider_status"], h["at"]))
    return [call_record(r, history[r["seq"]]) for r in rows]


def storable(*keys: str) -> bool:
    """PostgreSQL's text holds no NUL (it refuses the query): a key with one names no stored
    call, so the answer is "not found", as SQLite's, not a store error."""
    return not any("\x00" in k for k in keys)


def redacted(url: str) -> str:
    """host:port/database of a PostgreSQL URL, for messages (never the user's password)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"
