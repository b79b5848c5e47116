"""The normalized vocabulary shared by the host and every plugin.

These types are part of the public plugin API: a plugin turns a provider's response into a
`CallStatus`, and everything downstream (state machine, store, metrics) only sees this.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping


class State(str, enum.Enum):
    """Normalized call state (docs/design.md, "Normalized call state")."""

    QUEUED = "queued"
    DIALING = "dialing"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    UNKNOWN = "unknown"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {State.COMPLETED, State.FAILED, State.BUSY, State.NO_ANSWER, State.CANCELLED, State.EXPIRED}
)
ACTIVE_STATES: tuple[State, ...] = tuple(s for s in State if not s.terminal)
FINAL_STATES: tuple[State, ...] = tuple(s for s in State if s.terminal)


class ErrorReason(str, enum.Enum):
    """Why a status request failed: the bounded `reason` label of the error counter."""

    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    UNAUTHORIZED = "unauthorized"
    CLIENT_ERROR = "client_error"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    INVALID_RESPONSE = "invalid_response"


class FailureReason(str, enum.Enum):
    """Why a call did not complete: the bounded `reason` label of the failures counter.

    Providers say this in very different ways (a SIP code, a state, free text); plugins map
    what they get onto this enum (`classify_failure` handles free text).
    """

    BUSY = "busy"
    NO_ANSWER = "no_answer"
    QUEUE_TIMEOUT = "queue_timeout"
    UNREACHABLE = "unreachable"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Event:
    """One status change reported by the provider itself, on the provider's clock."""

    state: State
    provider_status: str
    at: datetime | None


@dataclass(frozen=True, slots=True)
class CallStatus:
    """What one status response says about a call, normalized.

    `state_since` is the provider's time for entering `state` when it gives one (e.g. Telzino's
    `ended_at` for a terminal state); `events` is the provider's own history when it keeps one.
    Timestamps are timezone-aware UTC. `failure_reason` and `sip_status_code` refine a
    non-completed terminal state when the provider says more than its status does. `extras`
    holds provider fields worth keeping; the host removes secrets from it before storing.
    """

    state: State
    provider_status: str
    reason: str | None = None
    created_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration_seconds: float | None = None
    state_since: datetime | None = None
    events: tuple[Event, ...] = ()
    failure_reason: FailureReason | None = None
    sip_status_code: int | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ListedCall:
    """One call from a list endpoint or a webhook: its identity (`call_id` plus the path params
    of the plugin's `Params`) and what the provider says about it."""

    params: Mapping[str, Any]
    status: CallStatus


@dataclass(frozen=True, slots=True)
class CallPage:
    """One page of a provider's list endpoint.

    `next_cursor` is for APIs that page by cursor (an opaque key, or the last item's creation
    time): the host passes it back to `build_list_request` as `cursor` for the next page.
    """

    calls: tuple[ListedCall, ...]
    has_next: bool
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """A batch's job counters as the provider reports them, and whether the batch is done."""

    counts: Mapping[str, int]
    complete: bool
