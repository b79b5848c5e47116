"""/metrics: exact contract names and pre-created series, OpenMetrics, promtool check metrics."""

from __future__ import annotations

import subprocess

import pytest

from outbound_call_exporter.testing import Step
from outbound_call_exporter_plugins.telzino.fake import TelzinoFake

from conftest import account, make_config, require_tool, running_service, wait_until

NON_TERMINAL = ("queued", "dialing", "in_progress", "unknown")
TERMINAL = ("completed", "failed", "busy", "no_answer", "cancelled", "expired")
REASONS = ("not_found", "rate_limited", "unauthorized", "client_error", "server_error", "timeout",
           "connection_error", "invalid_response")


@pytest.fixture(scope="module")
def svc(tmp_path_factory, registry):
    fake = TelzinoFake(speed=10.0)
    with fake.running():
        config = make_config(tmp_path_factory.mktemp("m"), [
            account("a1", "telzino", fake.url, fake.demo_settings()),
            account("a2", "telzino", fake.url, fake.demo_settings()),
        ])
        with running_service(config, registry) as running:
            call = fake.add_call(steps=[Step("queued", 0), Step("dialing", 0.1)])
            running.client.post("/api/v1/calls", json={"account": "a1", "call_id": call.call_id})
            wait_until(lambda: running.metric("outbound_calls", provider="telzino", account="a1", state="dialing"))
            yield running


def test_every_contract_series_is_present_from_the_first_scrape(svc):
    for acc in ("a1", "a2"):
        lv = {"provider": "telzino", "account": acc}
        for state in NON_TERMINAL:
            assert svc.metric("outbound_calls", state=state, **lv) is not None
        for state in TERMINAL:
            assert svc.metric("outbound_calls_finished_total", state=state, **lv) == 0
        for reason in REASONS:
            assert svc.metric("outbound_call_status_request_errors_total", reason=reason, **lv) == 0
        assert svc.metric("outbound_calls_registered_total", **lv) is not None
        assert svc.metric("outbound_call_account_up", **lv) == 1
        assert svc.metric("outbound_call_last_successful_poll_timestamp_seconds", **lv) is not None
        assert svc.metric("outbound_call_status_request_duration_seconds_count", **lv) is not None
        assert svc.metric("outbound_call_time_to_terminal_seconds_count", state="completed", **lv) == 0
    assert svc.metric("outbound_call_last_successful_poll_timestamp_seconds", provider="telzino", account="a2") == 0
    assert svc.metric("outbound_calls", provider="telzino", account="a1", state="dialing") == 1
    build = [k for k in svc.samples() if k[0] == "outbound_call_exporter_build_info"]
    assert len(build) == 1 and dict(build[0][1]).keys() == {"version", "python_version"}


def test_types_and_no_created_series(svc):
    text = svc.metrics_text()
    for name, kind in [("outbound_calls", "gauge"), ("outbound_calls_registered_total", "counter"),
                       ("outbound_calls_finished_total", "counter"),
                       ("outbound_call_time_to_terminal_seconds", "histogram"),
                       ("outbound_call_status_requests_total", "counter"),
                       ("outbound_call_status_request_errors_total", "counter"),
                       ("outbound_call_status_request_duration_seconds", "histogram"),
                       ("outbound_call_last_successful_poll_timestamp_seconds", "gauge"),
                       ("outbound_call_account_up", "gauge"), ("outbound_call_exporter_build_info", "gauge")]:
        assert f"# TYPE {name} {kind}" in text, name
    assert "_created" not in text
    assert "call_id" not in text and "0fc6daf8" not in text


def test_openmetrics_is_negotiated(svc):
    response = svc.client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
    plain = svc.client.get("/metrics")
    assert plain.headers["Content-Type"].startswith("text/plain")


def test_promtool_check_metrics_reports_nothing(svc):
    promtool = require_tool("promtool")
    result = subprocess.run([promtool, "check", "metrics"], input=svc.metrics_text(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "" and result.stderr.strip() == "", \
        result.stdout + result.stderr
