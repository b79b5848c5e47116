"""Logs an operator can act on: formats, rate-limited per-account lines, and a wrong base_url
showing its cause in the log of a real `run` within seconds."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import uuid

import httpx
import pytest
import yaml

from outbound_call_exporter import logs
from outbound_call_exporter.model import ErrorReason

from conftest import wait_until

REFUSED = "/v1/agents/a/outbound-calls/c:1: cannot connect: Connection refused"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO, logger="outbound_call_exporter.logs")

    def messages() -> list[tuple[str, str, dict]]:
        return [(r.levelname, r.getMessage(), r.fields) for r in caplog.records if r.name.endswith(".logs")]

    return messages


def account_log(up=lambda now: True, base_url="https://user:hunter2@api.telzino.com/base"):
    clock = Clock()
    return logs.AccountLog("telzino-main", "telzino", base_url, up, clock), clock


def test_first_failure_at_once_then_one_summary_per_window(lines):
    events, clock = account_log()
    for i in range(40):
        if i < 37:
            events.failure(ErrorReason.CONNECTION_ERROR, REFUSED)
        else:
            events.success()
        events.tick()
    [(level, first, fields)] = lines()
    assert level == "WARNING"
    assert first.startswith("telzino-main: status request failed: connection_error "
                            "(api.telzino.com: cannot connect: Connection refused)")
    assert fields["event"] == "request_failed" and fields["host"] == "api.telzino.com"
    clock.now += 60
    events.tick()
    level, summary, fields = lines()[-1]
    assert (level, summary) == ("WARNING", "telzino-main: 37 of 40 status requests failed in the last 60 s: "
                                           "connection_error (api.telzino.com: cannot connect: Connection refused)")
    assert (fields["failed"], fields["requests"], fields["account"]) == (37, 40, "telzino-main")
    clock.now += 60
    events.tick()  # nothing happened in this window: nothing to say, and the episode is over
    assert len(lines()) == 2
    events.failure(ErrorReason.TIMEOUT, "/v1/x: no complete answer within 10s")
    assert lines()[-1][1].startswith("telzino-main: status request failed: timeout (api.telzino.com: no complete")
    assert not any("hunter2" in m or "user" in m or "/v1/" in m for _, m, _ in lines())


def test_several_reasons_are_counted_apart(lines):
    events, clock = account_log()
    for _ in range(3):
        events.failure(ErrorReason.SERVER_ERROR, "HTTP 503 from /v1/agents/a/outbound-calls/b: provider error")
    events.failure(ErrorReason.TIMEOUT, "/v1/x: no complete answer within 10s")
    clock.now += 61
    events.tick()
    assert lines()[-1][1] == ("telzino-main: 4 of 4 status requests failed in the last 61 s: "
                              "3 server_error (api.telzino.com: HTTP 503: provider error), "
                              "1 timeout (api.telzino.com: no complete answer within 10s)")


def test_call_level_failures_only_in_an_info_summary(lines):
    events, clock = account_log()
    events.failure(ErrorReason.NOT_FOUND, "HTTP 404 from /v1/x: call not found")
    events.success()
    assert lines() == []
    clock.now += 60
    events.tick()
    [(level, message, _)] = lines()
    assert level == "INFO" and message.startswith("telzino-main: 1 of 2 status requests failed")


def test_expiries_are_summarised_the_same_way(lines):
    events, clock = account_log()
    retention = "provider no longer knows the call (404 after its retention window)"
    for _ in range(40):
        events.expired(retention)
    for _ in range(4):
        events.expired("not terminal within max_watch_seconds")
    assert [m for _, m, _ in lines()] == [f"telzino-main: a call expired: {retention}; further expiries are "
                                          "summarised every 60 s"]
    clock.now += 60
    events.tick()
    assert lines()[-1][1] == (f"telzino-main: 44 call(s) expired in the last 60 s: 40 {retention}; "
                              "4 not terminal within max_watch_seconds")


def test_account_down_and_up_once_each(lines):
    state = {"up": True}
    events, clock = account_log(up=lambda now: state["up"])
    events.failure(ErrorReason.UNAUTHORIZED, "HTTP 401 from /v1/x: credentials refused")
    state["up"] = False
    events.tick()
    events.tick()
    clock.now += 125
    state["up"] = True
    events.tick()
    events.tick()
    messages = [m for _, m, f in lines() if f["event"] in ("account_down", "account_up")]
    assert messages == [
        "telzino-main: account down (outbound_call_account_up 0): status requests keep failing: "
        "unauthorized (api.telzino.com: HTTP 401: credentials refused)",
        "telzino-main: account up again after 2m05s: status requests succeed",
    ]


def test_logfmt_and_json_lines():
    stream = io.StringIO()
    logger = logging.getLogger("outbound_call_exporter.test")
    try:
        logs.setup("info", "logfmt", stream)
        logger.warning('say "%s"', "a=b c", extra={"fields": {"account": "x y", "n": 3}})
        logger.debug("not shown")
        logs.setup("warn", "json", stream)
        logger.info("not shown either")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.error("failed", exc_info=True, extra={"fields": {"account": "a"}})
    finally:
        logging.getLogger().handlers.clear()
    text, js = stream.getvalue().splitlines()[0], stream.getvalue().splitlines()[1:]
    assert text.startswith("ts=") and text.endswith(' level=warn logger=test msg="say \\"a=b c\\"" account="x y" n=3')
    record = json.loads("\n".join(js))
    assert record["level"] == "error" and record["logger"] == "test" and record["account"] == "a"
    assert record["ts"].endswith("Z") and "ValueError: boom" in record["exc"]


def test_a_wrong_base_url_shows_why_in_the_log_within_seconds(tmp_path):
    """A real `run` against a refused port, JSON logs: the cause (host and error) is logged at
    warning level by default, long before a minute, and no secret appears."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again: connecting is refused
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "secret-token-" + uuid.uuid4().hex
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({
        "listen_address": f"127.0.0.1:{port}", "store_path": str(tmp_path / "calls.db"),
        "accounts": [{"name": "telzino-main", "provider": "telzino", "base_url": f"http://127.0.0.1:{dead}",
                      "settings": {"token": token, "agent_id": str(uuid.uuid4())},
                      "poll_interval_seconds": {"queued": 0.5}}]}))
    stderr = tmp_path / "stderr.log"
    with stderr.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "outbound_call_exporter.cli", "run", "--config", str(config),
                                 "--log.format=json"], stdout=subprocess.DEVNULL, stderr=err, env=os.environ.copy())
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ready(url), timeout=30, message="the service to be ready")
        response = httpx.post(f"{url}/api/v1/calls", json={"account": "telzino-main", "call_id": str(uuid.uuid4())})
        assert response.status_code == 201

        def failure_logged():
            records = [json.loads(line) for line in stderr.read_text().splitlines() if line.startswith("{")]
            return [r for r in records if r.get("event") == "request_failed"]

        [record] = wait_until(failure_logged, timeout=30, message="the failure in the log")
        assert record["level"] == "warn" and record["account"] == "telzino-main"
        assert record["reason"] == "connection_error" and record["host"] == f"127.0.0.1:{dead}"
        assert f"127.0.0.1:{dead}: cannot connect: Connection refused" in record["msg"]
    finally:
        proc.terminate()
        proc.wait(30)
    assert token not in stderr.read_text()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
