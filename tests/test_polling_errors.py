"""Provider failures are counted under the right reason, backed off, and recovered from."""

from __future__ import annotations

import time

import pytest

from outbound_call_exporter.fakes import Fault, Step
from outbound_call_exporter_plugins.telzino.fake import TelzinoFake

from conftest import account, make_config, running_service, wait_until

LABELS = {"provider": "telzino", "account": "tz"}


def _errors(svc, reason):
    return svc.metric("outbound_call_status_request_errors_total", reason=reason, **LABELS)


@pytest.mark.parametrize("fault, reason", [
    (Fault("status", status=500), "server_error"),
    (Fault("status", status=503), "server_error"),
    (Fault("status", status=429, retry_after="1"), "rate_limited"),
    (Fault("timeout", delay=5), "timeout"),
    (Fault("malformed"), "invalid_response"),
    (Fault("wrong_shape"), "invalid_response"),
    (Fault("status", status=400), "client_error"),
    (Fault("reset"), "connection_error"),
    (Fault("huge", size=3 * 1024 * 1024), "invalid_response"),
])
def test_fault_is_counted_and_the_call_still_finishes(tmp_path, registry, fault, reason):
    fake = TelzinoFake(speed=1.0)
    with fake.running():
        config = make_config(tmp_path, [account("tz", "telzino", fake.url, fake.demo_settings())],
                             request_timeout_seconds=1.0)
        with running_service(config, registry) as svc:
            fake.inject(fault, times=3)
            call = fake.add_call(steps=[Step("queued", 0), Step("completed", 0.5)])
            assert svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": call.call_id}).status_code == 201
            wait_until(lambda: svc.call("tz", call.call_id)["state"] == "completed", timeout=60,
                       message="call completes after the fault clears")
            assert _errors(svc, reason) == 3
            record = svc.call("tz", call.call_id)
            assert record["poll_errors"] == 3
            others = [r for r in ("not_found", "rate_limited", "unauthorized", "client_error", "server_error",
                                  "timeout", "connection_error", "invalid_response") if r != reason]
            assert all(_errors(svc, r) == 0 for r in others)
            assert svc.metric("outbound_call_account_up", **LABELS) == 1


def test_unauthorized_sets_account_down_and_does_not_hammer(tmp_path, registry):
    fake = TelzinoFake(speed=1.0)
    with fake.running():
        settings = {**fake.demo_settings(), "token": "wrong-token"}
        config = make_config(tmp_path, [account("tz", "telzino", fake.url, settings)])
        with running_service(config, registry) as svc:
            calls = [fake.add_call(steps=[Step("queued", 0)]) for _ in range(50)]
            svc.client.post("/api/v1/calls", json=[{"account": "tz", "call_id": c.call_id} for c in calls])
            wait_until(lambda: svc.metric("outbound_call_account_up", **LABELS) == 0, message="account down")
            start = fake.requests["status"]
            time.sleep(3.0)  # 50 calls at a 0.2 s cadence would be ~750 requests in 3 s
            sent = fake.requests["status"] - start
            assert sent <= 5, f"{sent} requests while the account's credentials are refused"
            assert _errors(svc, "unauthorized") >= 1
            assert svc.metric("outbound_call_last_successful_poll_timestamp_seconds", **LABELS) == 0


def test_retry_after_http_date_pauses_the_account(tmp_path, registry):
    from email.utils import format_datetime
    from datetime import datetime, timedelta, timezone

    fake = TelzinoFake(speed=1.0)
    with fake.running():
        config = make_config(tmp_path, [account("tz", "telzino", fake.url, fake.demo_settings())])
        with running_service(config, registry) as svc:
            calls = [fake.add_call(steps=[Step("queued", 0)]) for _ in range(20)]
            when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=3), usegmt=True)
            fake.inject(Fault("status", status=429, retry_after=when), times=1)
            svc.client.post("/api/v1/calls", json=[{"account": "tz", "call_id": c.call_id} for c in calls])
            wait_until(lambda: _errors(svc, "rate_limited") == 1, message="one 429")
            after_429 = fake.requests["status"]
            time.sleep(1.0)
            # only requests already in flight when the 429 arrived may land during the pause
            assert fake.requests["status"] - after_429 <= 20
            paused = fake.requests["status"]
            time.sleep(1.0)
            assert fake.requests["status"] == paused, "requests during Retry-After"
            wait_until(lambda: fake.requests["status"] > paused + 20, timeout=10, message="polling resumes")


def test_backoff_grows_on_repeated_server_errors(tmp_path, registry):
    fake = TelzinoFake(speed=1.0)
    with fake.running():
        config = make_config(tmp_path, [account("tz", "telzino", fake.url, fake.demo_settings())])
        with running_service(config, registry) as svc:
            fake.inject(Fault("status", status=503), times=None)
            call = fake.add_call(steps=[Step("queued", 0)])
            svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": call.call_id})
            wait_until(lambda: fake.requests["status"] >= 1, message="first request")
            time.sleep(4.0)
            # cadence 0.2 s: without backoff ~20 requests in 4 s; with doubling jittered backoff far fewer
            assert fake.requests["status"] <= 10
            wait_until(lambda: svc.metric("outbound_call_account_up", **LABELS) == 1, timeout=1)
            fake.clear_faults()


def test_not_found_after_seen_expires_and_never_seen_gets_grace(tmp_path, registry):
    fake = TelzinoFake(speed=1.0, retention_seconds=0.5)
    with fake.running():
        config = make_config(tmp_path, [account("tz", "telzino", fake.url, fake.demo_settings(),
                                                not_found_grace_seconds=1.5)])
        with running_service(config, registry) as svc:
            seen = fake.add_call(steps=[Step("queued", 0), Step("in_progress", 0.1)])
            svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": seen.call_id})
            wait_until(lambda: svc.call("tz", seen.call_id)["provider_status"] == "in_progress")
            del fake.calls[fake.key(seen.call_id, seen.params)]  # the provider forgets it
            wait_until(lambda: svc.call("tz", seen.call_id)["state"] == "expired", message="expired after 404")

            ghost = "0fc6daf8-7251-4553-9488-867ba0b82d8e"
            registered = time.monotonic()
            svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": ghost,
                                                   "params": {"agent_id": fake.agent_id}})
            wait_until(lambda: svc.call("tz", ghost)["state"] == "expired", message="ghost expires after grace")
            assert time.monotonic() - registered >= 1.4
            assert svc.call("tz", ghost)["poll_errors"] >= 2
            assert svc.metric("outbound_calls_finished_total", state="expired", **LABELS) == 2
            assert svc.metric("outbound_call_time_to_terminal_seconds_count", state="completed", **LABELS) == 0


def test_max_watch_seconds_expires_a_call_that_never_ends(tmp_path, registry):
    fake = TelzinoFake(speed=1.0)
    with fake.running():
        config = make_config(tmp_path, [account("tz", "telzino", fake.url, fake.demo_settings())],
                             max_watch_seconds=1.0)
        with running_service(config, registry) as svc:
            call = fake.add_call(steps=[Step("queued", 0), Step("dialing", 0.1)])
            svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": call.call_id})
            wait_until(lambda: svc.call("tz", call.call_id)["state"] == "expired", message="expired")
            assert "max_watch_seconds" in svc.call("tz", call.call_id)["reason"]
            assert svc.metric("outbound_calls", state="dialing", **LABELS) == 0
