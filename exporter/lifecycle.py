"""A watched call in memory and the state machine that applies what the provider says.

Pure: no I/O, no clocks of its own. `apply_status` returns what changed (store columns,
history rows, and the observations the metrics need) and the poller acts on it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .model import CallStatus, FailureReason, State
from .provider import CallParams


class WatchedCall:
    """The little the poller keeps per watched call (memory is the scaling limit)."""

    __slots__ = (
        "seq",
        "params",
        "state",
        "provider_status",
        "seen",
        "first_seen",
        "created_at",
        "answered_at",
        "events_recorded",
        "errors",
        "watching",
        "gen",
        "fence",
    )

    def __init__(
        self,
        seq: int,
        params: CallParams,
        first_seen: float,
        state: State = State.QUEUED,
        provider_status: str | None = None,
        seen: bool = False,
        created_at: float | None = None,
        answered_at: float | None = None,
        events_recorded: int = 0,
    ) -> None:
        self.seq = seq
        self.params = compact(params)
        self.state = state
        self.provider_status = provider_status
        self.seen = seen  # the provider has answered with a status at least once
        self.first_seen = first_seen  # wall clock of registration
        self.created_at = created_at  # provider clock, when it says
        self.answered_at = answered_at
        self.events_recorded = events_recorded  # provider events already in the history (persisted)
        self.errors = 0  # consecutive failed polls, for backoff
        self.watching = True
        #: (partition, epoch) its state was loaded under; set by the poller that watches it
        self.fence: tuple[int, int] | None = None
        self.gen = 0  # bumps on every (re)schedule so stale heap entries are skipped

    @property
    def call_id(self) -> str:
        return self.params.call_id


_FIELDS_SETS: dict[frozenset[str], frozenset[str]] = {}


def compact(params: CallParams) -> CallParams:
    """The same params, sharing what 100,000 watched calls would otherwise each keep a copy of.

    Path params other than the call id repeat across calls (an account's agent or batch id):
    they are interned. Pydantic keeps a mutable set of the fields given per instance (~220
    bytes): frozen params never change it, so instances with the same fields share one
    frozenset. Equality, hashing, dumping and validation are unchanged.
    """
    try:
        values = params.__dict__
        for key, value in values.items():
            if type(value) is str and key != "call_id":
                values[key] = sys.intern(value)
        given = params.__pydantic_fields_set__
        if type(given) is not frozenset and params.model_config.get("frozen"):
            shared = _FIELDS_SETS.setdefault(frozenset(given), frozenset(given))
            object.__setattr__(params, "__pydantic_fields_set__", shared)
    except (AttributeError, TypeError):  # another pydantic layout: keep the params as they are
        pass
    return params


@dataclass
class Outcome:
    """What one status did to a call."""

    previous: State
    fields: dict[str, Any] = field(default_factory=dict)
    history: list[tuple[str, str | None, float]] = field(default_factory=list)
    finished: State | None = None
    time_to_terminal: float | None = None
    time_to_answer: float | None = None
    talk_time: float | None = None
    failure_reason: FailureReason | None = None
    sip_status_code: int | None = None


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def apply_status(
    call: WatchedCall,
    status: CallStatus,
    now: float,
    secrets: tuple[str, ...] = (),
    secret_fields: frozenset[str] = frozenset(),
) -> Outcome:
    """Move `call` to what `status` says and describe the change. Never leaves a terminal state."""
    out = Outcome(previous=call.state)
    if call.state.terminal:
        return out
    created = _ts(status.created_at) or call.created_at
    answered = _ts(status.answered_at) or call.answered_at
    if answered is not None and call.answered_at is None and created is not None:
        out.time_to_answer = max(0.0, answered - created)
    call.created_at, call.answered_at, call.seen = created, answered, True
    out.fields = {
        "state": status.state.value,
        "provider_status": status.provider_status,
        "reason": scrub_text(status.reason, secrets),
        "seen": 1,
        "created_at": created,
        "answered_at": answered,
        "ended_at": _ts(status.ended_at),
        "duration_seconds": status.duration_seconds,
        "last_polled_at": now,
        "extras": scrub(dict(status.extras), secrets, secret_fields),
    }
    if status.events:
        fresh = status.events[call.events_recorded :]
        call.events_recorded = out.fields["events_seen"] = len(status.events)
        out.history = [(e.state.value, e.provider_status, _ts(e.at) or now) for e in fresh]
    if (status.state, status.provider_status) != (call.state, call.provider_status) and not (
        out.history and out.history[-1][:2] == (status.state.value, status.provider_status)
    ):
        out.history.append((status.state.value, status.provider_status, _ts(status.state_since) or now))
    if call.provider_status != status.provider_status:  # kept per call: one shared copy of each value
        call.provider_status = (
            sys.intern(status.provider_status) if type(status.provider_status) is str else status.provider_status
        )
    call.state = status.state
    if status.state.terminal:
        out.fields["watching"] = 0
        out.finished = status.state
        end = _ts(status.ended_at) or _ts(status.state_since) or now
        out.time_to_terminal = max(0.0, end - (created or call.first_seen))
        if status.duration_seconds is not None:  # the provider's talk time, answered or not stated
            out.talk_time = status.duration_seconds
        out.failure_reason, out.sip_status_code = status.failure_reason, status.sip_status_code
    return out


def expire(call: WatchedCall, now: float, reason: str) -> Outcome:
    """The exporter gives up on a call: the provider forgot it, or it outlived max_watch_seconds."""
    out = Outcome(previous=call.state, finished=State.EXPIRED)
    out.fields = {"state": State.EXPIRED.value, "reason": reason, "watching": 0, "last_polled_at": now}
    out.history = [(State.EXPIRED.value, call.provider_status, now)]
    call.state = State.EXPIRED
    return out


def scrub_text(text: str | None, secrets: tuple[str, ...]) -> str | None:
    """Free text a provider sent (a failure reason) with any secret value blanked out."""
    if text:
        for secret in secrets:
            text = text.replace(secret, "[redacted]")
    return text


def scrub(extras: dict[str, Any], secrets: tuple[str, ...], secret_fields: frozenset[str]) -> dict[str, Any]:
    """Drop keys named like a secret setting and any value that contains a secret."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in secret_fields and not _leaks(v)}
        if isinstance(value, list):
            return [clean(v) for v in value if not _leaks(v)]
        return value

    def _leaks(value: Any) -> bool:
        return isinstance(value, str) and any(s in value for s in secrets)

    return clean(extras)
