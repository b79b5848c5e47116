"""SIGKILL the real process mid-flight, restart on the same store: nothing lost, nothing twice."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from outbound_call_exporter import State
from outbound_call_exporter_plugins.telzino.fake import TelzinoFake

from conftest import wait_until

TERMINAL = ("completed", "failed", "busy", "no_answer", "cancelled", "expired")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "outbound_call_exporter.cli", "run", "--config", str(config)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def finished(url: str, state: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("outbound_calls_finished_total{") and f'state="{state}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no finished_total series for {state}")


def test_sigkill_and_restart_loses_nothing_and_counts_nothing_twice(tmp_path):
    fake = TelzinoFake(speed=4.0, seed=7)
    with fake.running():
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        store = tmp_path / "calls.db"
        config = tmp_path / "config.yml"
        config.write_text(yaml.safe_dump({
            "listen_address": f"127.0.0.1:{port}", "store_path": str(store),
            "accounts": [{"name": "tz", "provider": "telzino", "base_url": fake.url,
                          "settings": fake.demo_settings(),
                          "poll_interval_seconds": {"queued": 0.2, "dialing": 0.2, "in_progress": 0.2}}]}))
        outcomes = [State.COMPLETED, State.BUSY, State.NO_ANSWER, State.FAILED] * 10
        calls = [fake.add_call(outcome=o) for o in outcomes]
        log = tmp_path / "service.log"

        proc = start(config, log)
        try:
            wait_until(lambda: ready(url), message="service ready")
            response = httpx.post(f"{url}/api/v1/calls", timeout=10,
                                  json=[{"account": "tz", "call_id": c.call_id} for c in calls])
            assert response.status_code == 201
            wait_until(lambda: sum(finished(url, s) for s in TERMINAL) >= 5, message="some calls finished")
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

        with sqlite3.connect(store) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == len(calls)
            terminal_before = db.execute(
                f"SELECT count(*) FROM calls WHERE state IN ({','.join('?' * len(TERMINAL))})", TERMINAL).fetchone()[0]
        assert terminal_before < len(calls), "the kill came too late to test anything"

        proc = start(config, log)
        try:
            wait_until(lambda: ready(url), message="service ready again")
            wait_until(lambda: sum(finished(url, s) for s in TERMINAL) == len(calls) - terminal_before,
                       timeout=90, message="every resumed call finished")
            registered = [ln for ln in httpx.get(f"{url}/metrics").text.splitlines()
                          if ln.startswith("outbound_calls_registered_total{")]
            assert registered and registered[0].endswith(" 0.0")  # resumed calls are not registered again
            for call in calls:
                record = httpx.get(f"{url}/api/v1/calls/tz/{call.call_id}").json()
                assert record["state"] == call.outcome.value, record
                terminal_rows = [h for h in record["history"] if h["state"] in TERMINAL]
                assert len(terminal_rows) == 1, record["history"]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()[-2000:]
        with sqlite3.connect(store) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert db.execute("SELECT count(*) FROM calls WHERE watching = 1").fetchone()[0] == 0
