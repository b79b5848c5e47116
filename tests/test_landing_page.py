"""The landing page, rendered by headless Chromium against the running demo, matches /metrics:
watched and finished calls, each account's answer rate, technical failure share and last-hour
chart total; recent calls link to their records; times carry their zone.

Set OCE_UPDATE_SCREENSHOT=1 to refresh docs/img/landing-page.png (the README's screenshot) from
this short demo; a screenshot after ~15 minutes of `demo --failure-spike-at 600` shows more of
the chart (`chromium --headless --screenshot … http://127.0.0.1:9877/`).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import httpx

from conftest import require_tool, wait_until

REPO = Path(__file__).resolve().parents[1]
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


class Tables(HTMLParser):
    """{table id: {row account: {column: text}}} from the rendered DOM; a row's chart total is
    under "chart", its first link under "href"; `<title>` text inside charts is left out."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, dict[str, str]]] = {}
        self._table = self._row = self._column = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id")
            self.tables[self._table] = {}
        elif tag == "tr" and "data-account" in a:
            self._row = {}
            self.tables[self._table].setdefault(a["data-account"], self._row)
        elif tag == "td":
            self._column = a.get("data-column")
        elif tag == "svg" and self._row is not None:
            self._row["chart"] = a["data-total"]
            self._column = None
        elif tag == "a" and self._row is not None:
            self._row.setdefault("href", a["href"])

    def handle_data(self, data):
        if self._column and self._row is not None:
            self._row[self._column] = self._row.get(self._column, "") + data

    def handle_endtag(self, tag):
        if tag == "td":
            self._column = None
        elif tag == "tr":
            self._row = None


def gauges(url: str) -> dict[tuple[str, str, str], float]:
    out = {}
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        for name in ("outbound_calls{", "outbound_calls_finished_total{"):
            if line.startswith(name):
                labels = dict(p.split("=", 1) for p in line[line.index("{") + 1:line.index("}")].split(","))
                labels = {k: v.strip('"') for k, v in labels.items()}
                out[(name[:-1], labels["account"], labels["state"])] = float(line.rsplit(" ", 1)[1])
    return out


def test_landing_page_in_chromium_matches_metrics(tmp_path):
    browser = require_tool("chromium", package="chromium")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    demo = subprocess.Popen([sys.executable, "-m", "outbound_call_exporter.cli", "demo", "--listen", f"127.0.0.1:{port}",
                             "--store", str(tmp_path / "demo.db"), "--calls-per-second", "2", "--max-calls", "16", "--duration", "150"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def some_finished():
            try:
                return sum(v for k, v in gauges(url).items() if k[0] == "outbound_calls_finished_total") >= 3
            except httpx.HTTPError:
                return False

        wait_until(some_finished, timeout=90, message="demo calls finishing")
        profile = tmp_path / "chromium"

        def stable_render():
            before = gauges(url)
            dom = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                                 capture_output=True, text=True, timeout=60).stdout
            return (dom, before) if gauges(url) == before else None

        # the demo keeps moving: retry until nothing changed while the page rendered (at the latest
        # when its 16 calls have all finished)
        dom, metrics = wait_until(stable_render, timeout=120, interval=0.1, message="a stable render")
        parser = Tables()
        parser.feed(dom)
        watched, finished = parser.tables["watched"], parser.tables["finished"]
        assert watched and set(watched) == set(finished)
        for account, row in watched.items():
            for state in ("queued", "dialing", "in_progress", "unknown"):
                assert float(row[state]) == metrics[("outbound_calls", account, state)], (account, state)
        for account, row in finished.items():
            for state in ("completed", "failed", "busy", "no_answer", "cancelled", "expired"):
                assert float(row[state]) == metrics[("outbound_calls_finished_total", account, state)]
        accounts = parser.tables["accounts"]
        assert set(accounts) == set(watched)
        for account, row in accounts.items():
            n = {s: metrics[("outbound_calls_finished_total", account, s)]
                 for s in ("completed", "failed", "busy", "no_answer", "cancelled", "expired")}
            total = sum(n.values()) - n["cancelled"]
            expected = (f"{n['completed'] / total:.1%}", f"{(n['failed'] + n['expired']) / total:.1%}") if total \
                else ("—", "—")
            assert (row["answer rate"], row["technical failures"]) == expected, account
            assert float(row["chart"]) == sum(n.values()), "the demo is younger than the chart's hour"
            assert row["up"] == "up"
            assert ISO_UTC.fullmatch(row["last successful poll"]) or (
                row["last successful poll"] == "never" and not sum(n.values())), row
        recent = parser.tables["recent"]
        assert recent, "recently finished calls are listed"
        for account, r in recent.items():
            assert r["state"] in {"completed", "failed", "busy", "no_answer", "cancelled", "expired"}
            assert ISO_UTC.fullmatch(r["ended"]), r["ended"]
            record = httpx.get(url + r["href"], timeout=5).json()
            assert (record["account"], record["call_id"], record["state"]) == (account, r["call id"], r["state"])
        assert re.search(r"As of <time[^>]*>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ</time> \(UTC\)", dom)

        shot = tmp_path / "landing-page.png"
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,860",
                        f"--screenshot={shot}", url], capture_output=True, timeout=60, check=True)
        assert shot.stat().st_size > 10_000
        if os.environ.get("OCE_UPDATE_SCREENSHOT") == "1":
            shutil.copy(shot, REPO / "docs" / "img" / "landing-page.png")
    finally:
        demo.terminate()
        demo.wait(30)
