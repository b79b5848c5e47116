"""The landing page's recent history: a fixed ring of per-minute counts, and its chart."""

from __future__ import annotations

from outbound_call_exporter.history import FinishedHistory
from outbound_call_exporter.landing import chart, outcome_ratios
from outbound_call_exporter.model import FINAL_STATES, State

T0 = 1_800_000_000.0  # a minute boundary


def test_counts_per_minute_oldest_first_and_bounded_to_the_hour():
    history = FinishedHistory()
    history.add(T0 + 5, State.COMPLETED)
    history.add(T0 + 59, State.BUSY)
    history.add(T0 + 60, State.FAILED)
    series = history.series(T0 + 61)
    assert len(series) == 60 and series[-1].start == T0 + 60
    assert series[-2].counts[State.COMPLETED] == 1 and series[-2].counts[State.BUSY] == 1
    assert series[-1].counts[State.FAILED] == 1 and series[-1].total == 1
    assert sum(m.total for m in series[:-2]) == 0
    later = history.series(T0 + 60 * 60 + 1)  # an hour on: the first minute has left the window
    assert sum(m.total for m in later) == 1
    history.add(T0 + 60 * 60 + 2, State.EXPIRED)  # reuses the first minute's slot, cleared
    assert [m.total for m in history.series(T0 + 60 * 60 + 3)][-1] == 1
    assert sum(m.total for m in history.series(T0 + 60 * 60 + 3)) == 2
    assert sum(m.total for m in history.series(T0 + 10 * 3600)) == 0


def test_chart_bars_and_totals():
    history = FinishedHistory()
    for state in (State.COMPLETED, State.COMPLETED, State.NO_ANSWER, State.EXPIRED, State.CANCELLED):
        history.add(T0, state)
    svg = chart(history.series(T0 + 1), 180, 28, "acct")
    assert "data-total='5'" in svg and svg.count("<g>") == 1
    assert "2 answered, 1 not reached, 1 technical failure, 1 cancelled" in svg
    assert "data-total='0'" in chart(FinishedHistory().series(T0), 180, 28, "empty")


def test_outcome_ratios_leave_cancelled_out():
    counts = dict.fromkeys(FINAL_STATES, 0)
    assert outcome_ratios(counts) == ("—", "—")
    counts.update({State.COMPLETED: 4, State.NO_ANSWER: 3, State.BUSY: 1, State.FAILED: 1, State.EXPIRED: 1,
                   State.CANCELLED: 10})
    assert outcome_ratios(counts) == ("40.0%", "20.0%")
