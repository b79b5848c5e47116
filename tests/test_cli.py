"""`watch` (single, CSV, JSON Lines) against a running service, and `demo` end to end."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import httpx

from outbound_call_exporter.testing import Step
from outbound_call_exporter_plugins.telzino.fake import TelzinoFake

from conftest import account, make_config, running_service, wait_until


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "outbound_call_exporter.cli", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_watch_single_and_files(tmp_path, registry):
    fake = TelzinoFake(speed=1.0)
    with fake.running():
        config = make_config(tmp_path, [account("tz", "telzino", fake.url, {"token": fake.credentials["token"]})],
                             api_token="cli-token")
        with running_service(config, registry) as svc:
            one = fake.add_call(steps=[Step("queued", 0)])
            result = cli("watch", "--url", svc.url, "--account", "tz", "--call-id", one.call_id,
                         "--param", f"agent_id={fake.agent_id}", env={"OCE_API_TOKEN": "cli-token"})
            assert result.returncode == 0, result.stderr
            assert "now watching: tz/" in result.stdout
            assert svc.call("tz", one.call_id)["params"] == {"agent_id": fake.agent_id}

            denied = cli("watch", "--url", svc.url, "--account", "tz", "--call-id", one.call_id,
                         "--param", f"agent_id={fake.agent_id}", "--token", "wrong")
            assert denied.returncode == 1 and "401" in denied.stderr

            calls = [fake.add_call(steps=[Step("queued", 0)]) for _ in range(7)]
            csv_file = tmp_path / "calls.csv"
            lines = ["account,call_id,agent_id"] + [f"tz,{c.call_id},{fake.agent_id}" for c in calls[:5]]
            lines += ["tz,not-a-uuid," + fake.agent_id, f"nope,{calls[5].call_id},{fake.agent_id}",
                      f"tz,{one.call_id},{fake.agent_id}"]
            csv_file.write_text("\n".join(lines) + "\n")
            result = cli("watch", "--url", svc.url, "--token", "cli-token", "--file", str(csv_file),
                         "--batch-size", "3")
            assert result.returncode == 1
            assert "5 accepted, 1 already known, 2 refused" in result.stdout
            assert f"{csv_file}:7: refused: call_id" in result.stderr
            assert f"{csv_file}:8: refused: account" in result.stderr

            jsonl = tmp_path / "calls.jsonl"
            jsonl.write_text(json.dumps({"account": "tz", "call_id": calls[6].call_id,
                                         "params": {"agent_id": fake.agent_id}}) + "\n{broken\n")
            result = cli("watch", "--url", svc.url, "--token", "cli-token", "--file", str(jsonl))
            assert "1 accepted, 0 already known, 1 refused" in result.stdout
            assert f"{jsonl}:2: refused: not valid JSON" in result.stderr
            listed = svc.client.get("/api/v1/calls", params={"limit": 100}).json()["calls"]
            assert len(listed) == 7  # one + five + one; nothing from refused rows


def test_watch_without_a_service_is_a_clear_error():
    result = cli("watch", "--url", "http://127.0.0.1:9", "--account", "a", "--call-id", "b")
    assert result.returncode == 2 and "cannot reach the service" in result.stderr


def test_demo_serves_live_metrics_and_stops_by_itself(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "outbound_call_exporter.cli", "demo", "--listen",
                             f"127.0.0.1:{port}", "--store", str(tmp_path / "demo.db"), "--duration", "8",
                             "--calls-per-second", "20"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def registered() -> float:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
            except httpx.HTTPError:
                return 0
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("outbound_calls_registered_total{"))

        wait_until(lambda: registered() >= 10, timeout=30, message="demo traffic")
        assert proc.wait(30) == 0
        output = proc.stdout.read()
        assert f"http://127.0.0.1:{port}/metrics" in output
    finally:
        proc.kill()
    assert (tmp_path / "demo.db").exists()
