"""Recent history of one account: calls finished per minute and terminal state, last hour.

A fixed ring of per-minute slots (memory O(minutes × states), whatever the traffic), filled
where calls finish, read by the landing page's chart. Counters and Prometheus stay the real
record; this only lets `/` show a trend without a time-series database.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import FINAL_STATES, State

MINUTES = 60
_INDEX = {state: i for i, state in enumerate(FINAL_STATES)}


@dataclass(frozen=True)
class Minute:
    start: float  # Unix time the minute began
    counts: dict[State, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class FinishedHistory:
    """Finished calls per minute for the last `minutes` minutes."""

    def __init__(self, minutes: int = MINUTES) -> None:
        self.minutes = minutes
        self._slot_minute = [-1] * minutes  # which absolute minute each slot holds
        self._counts = [[0] * len(FINAL_STATES) for _ in range(minutes)]

    def add(self, now: float, state: State) -> None:
        minute = int(now // 60)
        slot = minute % self.minutes
        if self._slot_minute[slot] != minute:  # a stale slot from an hour ago: reuse it
            self._slot_minute[slot] = minute
            self._counts[slot] = [0] * len(FINAL_STATES)
        self._counts[slot][_INDEX[state]] += 1

    def series(self, now: float) -> list[Minute]:
        """The last `minutes` minutes, oldest first, the current (partial) minute last."""
        current = int(now // 60)
        out = []
        for minute in range(current - self.minutes + 1, current + 1):
            slot = minute % self.minutes
            counts = self._counts[slot] if self._slot_minute[slot] == minute else None
            out.append(Minute(minute * 60.0, {s: counts[i] if counts else 0 for s, i in _INDEX.items()}))
        return out
