"""A fake provider's calls: scripted raw-status steps on a speed-scaled clock."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..model import State

#: the outcomes a demo or test lifecycle can end in, with a realistic default mix
DEFAULT_MIX: Mapping[State, float] = {
    State.COMPLETED: 0.70,
    State.NO_ANSWER: 0.12,
    State.BUSY: 0.08,
    State.FAILED: 0.07,
    State.CANCELLED: 0.03,
}
#: ~90 % failures: enough for the critical failure-ratio alert (> 80 %) to fire in the demo
SPIKE_MIX: Mapping[State, float] = {
    State.COMPLETED: 0.10,
    State.NO_ANSWER: 0.20,
    State.BUSY: 0.15,
    State.FAILED: 0.55,
}


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
