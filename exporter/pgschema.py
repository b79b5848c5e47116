"""The PostgreSQL store's schema, created and migrated by the exporter itself.

Migrations are numbered and applied in order inside one transaction holding an advisory lock,
so replicas starting together neither race nor apply one twice; `oce_schema` records the
version reached. A database newer than this exporter knows is refused (a rollback of the
exporter must not write a schema it does not understand).
"""

from __future__ import annotations

import asyncpg

from .errors import ExporterError
from .leases import PARTITIONS

#: an arbitrary, fixed advisory-lock key for schema changes ("oce" + "schema")
_LOCK = 0x6F6365_736368

MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE oce_leases (
        partition SMALLINT PRIMARY KEY,
        owner UUID,
        epoch BIGINT NOT NULL DEFAULT 0,
        expires_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    INSERT INTO oce_leases (partition) SELECT generate_series(0, {PARTITIONS - 1});
    CREATE TABLE oce_replicas (
        id UUID PRIMARY KEY,
        started_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE oce_calls (
        seq BIGSERIAL PRIMARY KEY,
        partition SMALLINT NOT NULL,
        account TEXT NOT NULL,
        call_id TEXT NOT NULL,
        provider TEXT NOT NULL,
        params JSONB NOT NULL,
        state TEXT NOT NULL,
        provider_status TEXT,
        reason TEXT,
        watching BOOLEAN NOT NULL,
        seen BOOLEAN NOT NULL DEFAULT false,
        events_seen INTEGER NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION, answered_at DOUBLE PRECISION, ended_at DOUBLE PRECISION,
        duration_seconds DOUBLE PRECISION,
        first_seen_at DOUBLE PRECISION NOT NULL,
        last_polled_at DOUBLE PRECISION,
        polls INTEGER NOT NULL DEFAULT 0,
        poll_errors INTEGER NOT NULL DEFAULT 0,
        extras JSONB NOT NULL DEFAULT '{{}}',
        UNIQUE (account, call_id)
    );
    CREATE INDEX oce_calls_watching ON oce_calls (partition, seq) WHERE watching;
    CREATE TABLE oce_history (
        id BIGSERIAL PRIMARY KEY,
        call_seq BIGINT NOT NULL REFERENCES oce_calls (seq),
        state TEXT NOT NULL,
        provider_status TEXT,
        at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX oce_history_call ON oce_history (call_seq);
    CREATE TABLE oce_inbox (
        id BIGSERIAL PRIMARY KEY,
        partition SMALLINT NOT NULL,
        call_seq BIGINT NOT NULL,
        kind TEXT NOT NULL,
        body JSONB
    );
    CREATE INDEX oce_inbox_partition ON oce_inbox (partition);
    CREATE TABLE oce_scopes (
        id TEXT PRIMARY KEY,
        partition SMALLINT NOT NULL,
        account TEXT NOT NULL,
        scope TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        origin TEXT NOT NULL,
        complete BOOLEAN NOT NULL DEFAULT false,
        discovered INTEGER NOT NULL DEFAULT 0,
        UNIQUE (account, scope)
    );
    """,
)


class SchemaError(ExporterError):
    """The database's schema is newer than this exporter."""


async def migrate(conn: asyncpg.Connection) -> int:
    """Bring the schema to the latest version; returns it."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS oce_schema (version INTEGER NOT NULL)")
        version = await conn.fetchval("SELECT max(version) FROM oce_schema") or 0
        if version > len(MIGRATIONS):
            raise SchemaError(
                f"the database's schema is version {version}; this exporter knows up to "
                f"{len(MIGRATIONS)} (upgrade the exporter)"
            )
        for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
            await conn.execute(sql)
            await conn.execute("INSERT INTO oce_schema (version) VALUES ($1)", number)
    return len(MIGRATIONS)
