"""The call store's interface: what the host needs from a durable store, and the rows it trades.

`SQLiteStore` (`store/sqlite.py`, the embedded default) implements `CallStore`; a scaled-out
backend (PostgreSQL) implements the same Protocol. The contract every backend keeps:

- registrations (`register`, `unwatch`, scope writes) are durable before they return;
- poll results are written behind: `queue` never blocks or raises, a later flush writes them
  (a failed flush keeps them and retries; `write_errors` counts failed flushes), and every read
  first applies what is queued, so the API reads its own writes;
- every failure is a `StoreError` (never a driver's exception): the API answers it with 503;
- a backend whose writes are fenced (partition leases) refuses a write for calls whose lease
  this process lost with `StoreFenced`, naming them (`seqs`): a `StoreError`, so the API
  answers it with 503 too. SQLite never raises it. Dropping a lost partition's calls from the
  pollers is the scaled-out backend's to add (`AccountPoller.remove`); the finished-call
  metrics are counted in one call (`AccountMetrics.count_finished`, right after the store write
  is queued in `AccountPoller._finish`), the place to move behind a fenced write's success.
"""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator, Protocol, Sequence

from pydantic import SecretStr

from .rows import (
    UPDATABLE,
    CallQuery,
    CallRecord,
    HistoryRow,
    NewCall,
    Registered,
    ScopeRow,
    StoredCall,
    StoreError,
    StoreFenced,
    Update,
)
from .sqlite import SQLiteStore


class CallStore(Protocol):
    """A durable call store (see the module docstring for the contract)."""

    @property
    def write_errors(self) -> int:
        """Failed write-behind flushes so far."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None:
        """Write what is queued, then release the store."""
        ...

    def queue(self, update: Update) -> None: ...

    async def flush(self) -> None: ...

    async def register(self, calls: Sequence[NewCall], initial_state: str) -> list[Registered]:
        """Insert `calls` in one transaction (a known one unwatched before its end is watched again)."""
        ...

    async def unwatch(self, account: str, call_id: str) -> CallRecord | None: ...

    def iter_active(self, chunk: int = 5000) -> AsyncIterator[list[StoredCall]]:
        """Every watched non-terminal call, `chunk` at a time."""
        ...

    async def get(self, account: str, call_id: str) -> CallRecord | None: ...

    async def get_many(self, seqs: Sequence[int]) -> list[CallRecord]: ...

    async def list_calls(self, query: CallQuery) -> tuple[list[CallRecord], int | None]:
        """A page of records and the `before` of the next page (None: the last page)."""
        ...

    async def scopes(self) -> list[ScopeRow]: ...

    async def add_scope(self, row: ScopeRow) -> ScopeRow:
        """Store `row` unless the account has the same scope; the stored row either way."""
        ...

    async def update_scope(self, id: str, complete: bool, discovered: int) -> None: ...

    async def delete_scope(self, id: str) -> bool: ...

    async def prune(self, before: float) -> tuple[int, bool]:
        """Delete the records not watched and last active before `before` (retention), with
        their history; (records deleted, whether the backend could also clear the deleted
        data's leftovers now: SQLite's WAL, PostgreSQL's dead rows)."""
        ...


def store_for(store_url: SecretStr | None, store_path: Path) -> CallStore:
    """The store a config names: PostgreSQL at `store_url` (the secret as `load_config`
    resolved it from store_url, store_url_file or OCE_STORE_URL), else the SQLite file. The
    service and `prune` build it here, so both always open the same store."""
    if store_url is not None:
        from .postgres import PostgresStore  # asyncpg only when it is used

        return PostgresStore(store_url.get_secret_value())
    return SQLiteStore(store_path)


__all__ = [
    "CallQuery",
    "CallRecord",
    "CallStore",
    "HistoryRow",
    "NewCall",
    "Registered",
    "SQLiteStore",
    "ScopeRow",
    "StoreError",
    "StoreFenced",
    "StoredCall",
    "UPDATABLE",
    "Update",
    "store_for",
]
