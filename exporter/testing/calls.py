"""A fake provider's calls: scripted raw-status steps on a speed-scaled clock."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..model import State

#: the outcomes a demo or test lifecycle can end in: a normal outbound campaign, where most calls
#: are not answered (docs/design.md, "What counts as failure"): 40 % answered, 45 % no answer,
#: 10 % busy, 5 % failed (cancelled calls, someone's choice, count nowhere)
DEFAULT_MIX: Mapping[State, float] = {
    State.COMPLETED: 0.39,
    State.NO_ANSWER: 0.44,
    State.BUSY: 0.10,
    State.FAILED: 0.05,
    State.CANCELLED: 0.02,
}
#: about 35 % technical failures: the critical OutboundCallTechnicalFailuresHigh alert fires in the demo
SPIKE_MIX: Mapping[State, float] = {
    State.COMPLETED: 0.26,
    State.NO_ANSWER: 0.30,
    State.BUSY: 0.07,
    State.FAILED: 0.35,
    State.CANCELLED: 0.02,
}
#: the answer rate collapses (caller id flagged as spam, a blocked trunk); calls keep finishing
ANSWER_DROP_MIX: Mapping[State, float] = {
    State.COMPLETED: 0.04,
    State.NO_ANSWER: 0.77,
    State.BUSY: 0.12,
    State.FAILED: 0.05,
    State.CANCELLED: 0.02,
}


def reportable_mix(mix: Mapping[State, float], raw_status: Mapping[State, str]) -> dict[State, float]:
    """`mix` restricted to the outcomes a provider can report, its failure share kept.

    An API that only says success or failure (PolyAI agents, platform) cannot show a busy or
    unanswered call: the demo counts those shares as answered rather than inflating `failed`.
    """
    out = {s: w for s, w in mix.items() if s in raw_status}
    if State.COMPLETED in out:
        out[State.COMPLETED] += sum(w for s, w in mix.items() if s not in raw_status)
    return out


@dataclass
class Step:
    """The call shows raw status `status` from `after` seconds (fake time) past creation."""

    status: str
    after: float


@dataclass
class FakeCall:
    """One call the fake knows: its identity, its script and what its record carries."""

    call_id: str
    params: dict[str, str]
    steps: list[Step]
    fields: dict[str, Any] = field(default_factory=dict)  # extra record fields (error, sip code, ...)
    created: float = field(default_factory=time.time)
    outcome: State | None = None
    callback_url: str | None = None  # the fake POSTs its result webhook here once it ends
    callback_headers: dict[str, str] = field(default_factory=dict)
    webhook_sent: bool = False

    def elapsed(self, now: float, speed: float) -> float:
        return (now - self.created) * speed

    def step_index(self, now: float, speed: float) -> int:
        t = self.elapsed(now, speed)
        index = 0
        for i, step in enumerate(self.steps):
            if step.after <= t:
                index = i
        return index

    def ended_at(self, speed: float) -> float:
        """Wall time at which the last step (the terminal one) began."""
        return self.created + self.steps[-1].after / speed


def pagination(page: int, limit: int, total: int) -> dict[str, Any]:
    """The `pagination` object both Telzino's and Trillet's list endpoints return."""
    pages = max(1, -(-total // limit))
    return {
        "page": page,
        "limit": limit,
        "total": total,
        "totalPages": pages,
        "hasNext": page < pages,
        "hasPrev": page > 1,
    }
