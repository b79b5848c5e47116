"""The landing page at `/`: links, as Prometheus exporters have, plus a live overview.

Plain server-rendered HTML (no build step, no JavaScript) for people without Grafana at hand:
watched calls by account and state (the same numbers as the `outbound_calls` gauge), calls
finished per terminal state, and the most recent finished calls with outcome and reason.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any, Iterable

from ._version import __version__
from .model import ACTIVE_STATES, FINAL_STATES
from .records import iso
from .service import Service
from .store import CallQuery, CallRecord

RECENT = 20

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:0 0 1.5em}
th,td{border:1px solid #ccc;padding:.3em .7em;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
thead th{background:#f3f3f3}
.state-completed{color:#1a7f37}.state-failed,.state-busy,.state-no_answer,.state-expired{color:#b42318}
.muted{color:#777}
"""


async def render(service: Service) -> str:
    recent = await recent_finished(service)
    pollers = sorted(service.pollers.values(), key=lambda p: p.name)
    return "".join([
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='refresh' content='10'>",
        f"<title>outbound-call-exporter</title><style>{STYLE}</style></head><body>",
        f"<h1>outbound-call-exporter <span class='muted'>{escape(__version__)}</span></h1>",
        "<p><a href='/metrics'>Metrics</a> · <a href='/api/v1/calls'>Calls API</a> · ",
        "<a href='/api/v1/openapi.json'>OpenAPI</a> · <a href='/-/healthy'>Health</a> · ",
        "<a href='/-/ready'>Ready</a></p>",
        "<h2>Watched calls</h2>",
        _table("watched", ["account", "provider"] + [s.value for s in ACTIVE_STATES] + ["up"],
               ([p.name, p.provider_name] + [p.counts.get(s, 0) for s in ACTIVE_STATES]
                + ["yes" if p.up(time.time()) else "no"] for p in pollers)),
        "<h2>Finished since start</h2>",
        _table("finished", ["account", "provider"] + [s.value for s in FINAL_STATES],
               ([p.name, p.provider_name] + [_finished(service, p.provider_name, p.name, s.value)
                                             for s in FINAL_STATES] for p in pollers)),
        "<h2>Recently finished</h2>",
        _table("recent", ["ended", "account", "call id", "state", "provider status", "reason"],
               ([_short_time(iso(r.ended_at or r.last_polled_at)), r.account, r.call_id, r.state,
                 r.provider_status or "", r.reason or ""] for r in recent)) if recent
        else "<p class='muted'>No finished calls yet.</p>",
        "</body></html>",
    ])


def _short_time(iso: str | None) -> str:
    return (iso or "")[:19].replace("T", " ")


def _finished(service: Service, provider: str, account: str, state: str) -> int:
    value = service.metrics.registry.get_sample_value(
        "outbound_calls_finished_total", {"provider": provider, "account": account, "state": state})
    return int(value or 0)


def _table(name: str, header: list[str], rows: Iterable[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for column, value in zip(header, row):
            cls = f"state-{escape(str(value))}" if column == "state" else ("num" if isinstance(value, int) else "")
            cells.append(f"<td class='{cls}' data-column='{escape(column)}'>{escape(str(value))}</td>")
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
