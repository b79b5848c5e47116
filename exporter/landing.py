"""The landing page at `/`: links, as Prometheus exporters have, plus a live overview.

Plain server-rendered HTML with inline SVG (no build step, no JavaScript, no charting
dependency) for people without Grafana at hand: per account whether it is up, its answer rate
and technical failure share (docs/design.md, "What counts as failure"), finished calls per minute
over the last hour (from each account's in-memory `FinishedHistory`), watched calls by state
(the `outbound_calls` gauge), finished calls by state (`outbound_calls_finished_total`), and
the most recent finished calls linked to their records. Every time is UTC, ISO 8601.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any, Iterable, Sequence
from urllib.parse import quote

from ._version import __version__
from .history import Minute
from .model import ACTIVE_STATES, FINAL_STATES, State
from .service import Service
from .store import CallQuery, CallRecord

RECENT = 20

#: outcome groups of docs/design.md, in stacking order (bottom first), with their CSS class
GROUPS: tuple[tuple[str, str, tuple[State, ...]], ...] = (
    ("answered", "g-answered", (State.COMPLETED,)),
    ("not reached", "g-not-reached", (State.BUSY, State.NO_ANSWER)),
    ("technical failure", "g-failure", (State.FAILED, State.EXPIRED)),
    ("cancelled", "g-cancelled", (State.CANCELLED,)),
)

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:80em}
table{border-collapse:collapse;margin:0 0 1.5em}
th,td{border:1px solid #ccc;padding:.3em .7em;text-align:left;vertical-align:middle}
td.num{text-align:right;font-variant-numeric:tabular-nums}
thead th{background:#f3f3f3}
.state-completed{color:#1a7f37}.state-failed,.state-expired{color:#b42318}.state-busy,.state-no_answer{color:#9a6700}
.up-yes{color:#1a7f37;font-weight:600}.up-no{color:#b42318;font-weight:600}
.muted{color:#777}.chart{display:block}.chart .bg{fill:#f6f8fa}.tick{font-size:10px;fill:#777}
.g-answered{fill:#2da44e}.g-not-reached{fill:#d4a72c}.g-failure{fill:#cf222e}.g-cancelled{fill:#8c959f}
.legend svg{margin-left:1em}
a{color:#0969da}
"""


class Html(str):
    """Markup a table cell holds as is (everything else is escaped)."""


async def render(service: Service) -> str:
    now = time.time()
    recent = await recent_finished(service)
    pollers = sorted(service.pollers.values(), key=lambda p: p.name)
    hour = [_merge([p.history.series(now) for p in pollers])] if pollers else []
    return "".join(
        [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            "<meta http-equiv='refresh' content='10'>",
            f"<title>outbound-call-exporter</title><style>{STYLE}</style></head><body>",
            f"<h1>outbound-call-exporter <span class='muted'>{escape(__version__)}</span></h1>",
            "<p><a href='/metrics'>Metrics</a> · <a href='/api/v1/calls'>Calls API</a> · ",
            "<a href='/api/v1/openapi.json'>OpenAPI</a> · <a href='/-/healthy'>Health</a> · ",
            "<a href='/-/ready'>Ready</a></p>",
            f"<p class='muted'>As of {_time(now)} (UTC); refreshes every 10 s.</p>",
            "<h2>Finished calls per minute, last hour</h2>",
            chart(hour[0], 720, 120, "all accounts", axis=True) if hour else "<p class='muted'>No accounts.</p>",
            _legend(),
            "<h2>Accounts</h2>",
            _table(
                "accounts",
                ["account", "provider", "up", "last successful poll", "answer rate", "technical failures", "last hour"],
                (_account_row(service, p, now) for p in pollers),
            ),
            "<p class='muted'>Answer rate: completed ÷ finished; technical failures: (failed + expired) ÷ "
            "finished; finished excludes cancelled, counted since the exporter started.</p>",
            "<h2>Watched calls</h2>",
            _table(
                "watched",
                ["account", "provider"] + [s.value for s in ACTIVE_STATES],
                ([p.name, p.provider_name] + [p.counts.get(s, 0) for s in ACTIVE_STATES] for p in pollers),
            ),
            "<h2>Finished since start</h2>",
            _table(
                "finished",
                ["account", "provider"] + [s.value for s in FINAL_STATES],
                (
                    [p.name, p.provider_name] + [_finished(service, p.provider_name, p.name, s) for s in FINAL_STATES]
                    for p in pollers
                ),
            ),
            "<h2>Recently finished</h2>",
            _table(
                "recent",
                ["ended", "account", "call id", "state", "provider status", "reason"],
                (
                    [
                        Html(_time(r.ended_at or r.last_polled_at or r.first_seen_at)),
                        r.account,
                        _call_link(r),
                        r.state,
                        r.provider_status or "",
                        r.reason or "",
                    ]
                    for r in recent
                ),
            )
            if recent
            else "<p class='muted'>No finished calls yet.</p>",
            "</body></html>",
        ]
    )


def _account_row(service: Service, poller: Any, now: float) -> list[Any]:
    finished = {s: _finished(service, poller.provider_name, poller.name, s) for s in FINAL_STATES}
    up = poller.up(now)
    series = poller.history.series(now)
    return [
        poller.name,
        poller.provider_name,
        Html(f"<span class='up-{'yes' if up else 'no'}'>{'up' if up else 'down'}</span>"),
        Html(_time(poller.last_success) if poller.last_success else "<span class='muted'>never</span>"),
        *outcome_ratios(finished),
        Html(chart(series, 180, 28, poller.name)),
    ]


def outcome_ratios(finished: dict[State, int]) -> tuple[str, str]:
    """Answer rate and technical failure share as shown, over all finished calls but cancelled."""
    total = sum(n for s, n in finished.items() if s is not State.CANCELLED)
    if not total:
        return "—", "—"
    failures = finished[State.FAILED] + finished[State.EXPIRED]
    return f"{finished[State.COMPLETED] / total:.1%}", f"{failures / total:.1%}"


def chart(minutes: Sequence[Minute], width: int, height: int, label: str, axis: bool = False) -> str:
    """Stacked bars, one per minute, by outcome group; each bar's tooltip gives its numbers.
    `axis` adds times under every 15th minute and the peak's value."""
    peak = max((m.total for m in minutes), default=0) or 1
    step = width / max(len(minutes), 1)
    bars = []
    for i, minute in enumerate(minutes):
        if not minute.total:
            continue
        y, rects, parts = float(height), [], []
        for name, css, states in GROUPS:
            n = sum(minute.counts[s] for s in states)
            if n:
                h = n / peak * (height - 2)
                y -= h
                rects.append(
                    f"<rect x='{i * step:.1f}' y='{y:.1f}' width='{max(step - 1, 1):.1f}' "
                    f"height='{h:.1f}' class='{css}'/>"
                )
                parts.append(f"{n} {name}")
        tip = f"{_hhmm(minute.start)}: {minute.total} finished ({', '.join(parts)})"
        bars.append(f"<g><title>{escape(tip)}</title>{''.join(rects)}</g>")
    total = sum(m.total for m in minutes)
    full = height + (16 if axis else 0)
    ticks = "".join(
        f"<text x='{i * step:.1f}' y='{full - 3}' class='tick'>{_hhmm(m.start)}</text>"
        for i, m in enumerate(minutes)
        if axis and (len(minutes) - 1 - i) % 15 == 0 and i < len(minutes) - 5
    )
    if axis:
        ticks += f"<text x='{width - 2}' y='{full - 3}' class='tick' text-anchor='end'>now</text>"
    if axis and total:
        ticks += f"<text x='3' y='12' class='tick'>{peak}/min</text>"
    return (
        f"<svg class='chart' width='{width}' height='{full}' viewBox='0 0 {width} {full}' role='img' "
        f"data-total='{total}' aria-label='{escape(label)}: {total} calls finished in the last hour, "
        f"at most {peak if total else 0} per minute'><rect class='bg' width='{width}' height='{height}'/>"
        f"{''.join(bars)}{ticks}</svg>"
    )


def _merge(series: list[list[Minute]]) -> list[Minute]:
    return [
        Minute(minutes[0].start, {s: sum(m.counts[s] for m in minutes) for s in FINAL_STATES})
        for minutes in zip(*series)
    ]


def _legend() -> str:
    return (
        "<p class='legend muted'>"
        + " ".join(
            f"<svg width='10' height='10'><rect class='{css}' width='10' height='10'/></svg> {escape(name)}"
            for name, css, _ in GROUPS
        )
        + "</p>"
    )


def _hhmm(ts: float) -> str:
    return time.strftime("%H:%MZ", time.gmtime(ts))


def _time(ts: float) -> str:
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    return f"<time datetime='{iso}'>{iso}</time>"


def _call_link(record: CallRecord) -> Html:
    href = f"/api/v1/calls/{quote(record.account, safe='')}/{quote(record.call_id, safe='')}"
    return Html(f"<a href='{escape(href)}'>{escape(record.call_id)}</a>")


def _finished(service: Service, provider: str, account: str, state: State) -> int:
    value = service.metrics.registry.get_sample_value(
        "outbound_calls_finished_total", {"provider": provider, "account": account, "state": state.value}
    )
    return int(value or 0)


def _table(name: str, header: list[str], rows: Iterable[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for column, value in zip(header, row):
            cls = f"state-{escape(str(value))}" if column == "state" else ("num" if isinstance(value, int) else "")
            text = value if isinstance(value, Html) else escape(str(value))
            cells.append(f"<td class='{cls}' data-column='{escape(column)}'>{text}</td>")
        body.append(f"<tr data-account='{escape(str(row[1] if name == 'recent' else row[0]))}'>{''.join(cells)}</tr>")
    return f"<table id='{name}'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


async def recent_finished(service: Service) -> list[CallRecord]:
    """The latest finished calls: the newest few of each terminal state, merged by end time."""
    records: list[CallRecord] = []
    for state in FINAL_STATES:
        page, _ = await service.store.list_calls(CallQuery(state=state.value, limit=RECENT))
        records += page
    records.sort(key=lambda r: r.ended_at or r.last_polled_at or 0.0, reverse=True)
    return records[:RECENT]
