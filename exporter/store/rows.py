"""The rows the host and a store trade, and the store's errors (see `store/__init__.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping, NamedTuple

from ..errors import ExporterError


class StoreError(ExporterError):
    """The store cannot be opened, read or written (path, permissions, disk full, lock, network)."""


class StoreFenced(StoreError):
    """A write refused because this process lost the lease of the calls' partition (`seqs`).

    Raised only by backends that fence writes; the calls belong to another process now."""

    def __init__(self, message: str, seqs: Collection[int] = ()) -> None:
        super().__init__(message)
        self.seqs = frozenset(seqs)


@dataclass(frozen=True, slots=True)
class NewCall:
    """A call to start watching."""

    account: str
    call_id: str
    provider: str
    params: Mapping[str, Any]
    first_seen_at: float


@dataclass
class Update:
    """A poll's result for one call: changed columns, counter increments, new history rows."""

    seq: int
    fields: dict[str, Any] = field(default_factory=dict)
    polls: int = 0
    poll_errors: int = 0
    history: list[tuple[str, str | None, float]] = field(default_factory=list)
    #: (partition, epoch) of the lease the call was polled under: what a fenced backend checks
    fence: tuple[int, int] | None = None
    #: runs once the update is written (a fenced backend: only if the fence let it through)
    after: Callable[[], None] | None = None


#: the columns an `Update` may set
UPDATABLE = frozenset(
    {
        "events_seen",
        "state",
        "provider_status",
        "reason",
        "watching",
        "seen",
        "created_at",
        "answered_at",
        "ended_at",
        "duration_seconds",
        "last_polled_at",
        "extras",
    }
)


@dataclass(frozen=True, slots=True)
class Registered:
    """What `register` did with one call."""

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


class HistoryRow(NamedTuple):
    """One state change of a call."""

    state: str
    provider_status: str | None
    at: float


class CallRecord(NamedTuple):
    """A stored call with its history, oldest first (times are Unix seconds). A named tuple, not a
    frozen dataclass: an API page builds up to 1,000 of them, and a tuple is built ~5x faster."""

    seq: int
    account: str
    provider: str
    call_id: str
    params: Mapping[str, Any]
    state: str
    provider_status: str | None
    reason: str | None
    watching: bool
    created_at: float | None
    answered_at: float | None
    ended_at: float | None
    duration_seconds: float | None
    first_seen_at: float
    last_polled_at: float | None
    polls: int
    poll_errors: int
    extras: Mapping[str, Any]
    history: tuple[HistoryRow, ...]


@dataclass(frozen=True, slots=True)
class CallQuery:
    """A page of `list`: newest first, optional filters, `before` a `seq` from the previous page."""

    account: str | None = None
    state: str | None = None
    since: float | None = None
    limit: int = 100
    before: int | None = None


@dataclass(frozen=True, slots=True)
class ScopeRow:
    """A stored watch scope; `origin` is "api" or "config"."""

    id: str
    account: str
    scope: Mapping[str, str]
    created_at: float
    origin: str
    complete: bool = False
    discovered: int = 0
