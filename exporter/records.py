"""How the REST API renders what the store holds: call and scope records (their shape: api_models).

The one place the call record's JSON shape is built (the contract's field list); stores return
typed rows with Unix times, rendered here as ISO 8601 UTC.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .store import CallRecord, ScopeRow


def iso(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC with a `Z` (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def call_record(r: CallRecord) -> dict[str, Any]:
    """A call record as `GET /api/v1/calls/{account}/{call_id}` answers it."""
    return {
        "account": r.account,
        "provider": r.provider,
        "call_id": r.call_id,
        "params": r.params,
        "state": r.state,
        "provider_status": r.provider_status,
        "reason": r.reason,
        "watching": r.watching,
        "created_at": iso(r.created_at),
        "answered_at": iso(r.answered_at),
        "ended_at": iso(r.ended_at),
        "duration_seconds": r.duration_seconds,
        "first_seen_at": iso(r.first_seen_at),
        "last_polled_at": iso(r.last_polled_at),
        "polls": r.polls,
        "poll_errors": r.poll_errors,
        "extras": r.extras,
        "history": [{"state": h.state, "provider_status": h.provider_status, "at": iso(h.at)} for h in r.history],
    }


def scope_record(row: ScopeRow) -> dict[str, Any]:
    """A watch scope as `/api/v1/scopes` answers it."""
    return {
        "id": row.id,
        "account": row.account,
        "scope": row.scope,
        "created_at": iso(row.created_at),
        "discovered": row.discovered,
        "complete": row.complete,
    }
