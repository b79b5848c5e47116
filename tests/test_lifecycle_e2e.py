"""Registered calls walk scripted lifecycles at the fake and end up counted exactly once."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from outbound_call_exporter import State
from outbound_call_exporter.testing import Step
from outbound_call_exporter_plugins.telzino.fake import TelzinoFake

from conftest import account, make_config, running_service, wait_until

pytestmark = pytest.mark.both_stores

OUTCOMES = [State.COMPLETED] * 5 + [State.BUSY] * 3 + [State.NO_ANSWER] * 2 + [State.FAILED] * 2


def test_scripted_lifecycles_give_exact_counts_histograms_and_records(tmp_path, registry):
    fake = TelzinoFake(speed=20.0, seed=1)
    with fake.running():
        config = make_config(tmp_path, [account("tz", "telzino", fake.url, fake.demo_settings())])
        with running_service(config, registry) as svc:
            calls = [fake.add_call(outcome=o) for o in OUTCOMES]
            body = [{"account": "tz", "call_id": c.call_id} for c in calls]
            response = svc.client.post("/api/v1/calls", json=body)
            assert response.status_code == 201, response.text
            assert response.json()["created"] == len(calls)

            def all_done():  # the gauges at 0, and (PostgreSQL: after the fenced write) counted
                if sum(svc.metric("outbound_calls_finished_total", provider="telzino", account="tz", state=s)
                       for s in ("completed", "failed", "busy", "no_answer", "cancelled", "expired")) < len(calls):
                    return False
                return svc.metric("outbound_calls", provider="telzino", account="tz", state="queued") == 0 and \
                    sum(svc.metric("outbound_calls", provider="telzino", account="tz", state=s.value)
                        for s in (State.QUEUED, State.DIALING, State.IN_PROGRESS, State.UNKNOWN)) == 0

            wait_until(all_done, timeout=60, message="every call terminal")
            expected = Counter(o.value for o in OUTCOMES)
            for state in ("completed", "failed", "busy", "no_answer", "cancelled", "expired"):
                assert svc.metric("outbound_calls_finished_total", provider="telzino", account="tz",
                                  state=state) == expected.get(state, 0), state
                if state != "expired":
                    assert svc.metric("outbound_call_time_to_terminal_seconds_count", provider="telzino",
                                      account="tz", state=state) == expected.get(state, 0), state
            assert svc.metric("outbound_calls_registered_total", provider="telzino", account="tz") == len(calls)
            assert svc.metric("outbound_call_time_to_answer_seconds_count", provider="telzino",
                              account="tz") == expected["completed"]
            assert svc.metric("outbound_call_sip_failures_total", provider="telzino", account="tz",
                              sip_code="486") == expected["busy"]
            assert svc.metric("outbound_call_failures_total", provider="telzino", account="tz",
                              reason="no_answer") == expected["no_answer"]

            for call in calls:
                rec = svc.call("tz", call.call_id)
                assert rec["state"] == call.outcome.value
                assert rec["provider_status"] == call.steps[-1].status
                assert rec["watching"] is False
                assert rec["history"][0]["state"] == "queued"
                assert rec["history"][-1]["state"] == call.outcome.value
                assert rec["created_at"] and rec["ended_at"]
                assert "token" not in str(rec)
                if call.outcome is State.COMPLETED:
                    assert rec["answered_at"] and rec["duration_seconds"] is not None
                if call.outcome is State.BUSY:
                    assert rec["extras"]["sip_status_code"] == 486


def test_no_poll_after_terminal(tmp_path, registry):
    fake = TelzinoFake(speed=1.0)
    with fake.running():
        config = make_config(tmp_path, [account("tz", "telzino", fake.url, fake.demo_settings())])
        with running_service(config, registry) as svc:
            call = fake.add_call(steps=[Step("queued", 0), Step("completed", 0.3)])
            svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": call.call_id})
            wait_until(lambda: svc.call("tz", call.call_id)["state"] == "completed", message="completed")
            seen = fake.requests[f"status:{call.call_id}"]
            wait_until(lambda: svc.metric("outbound_calls_finished_total", provider="telzino", account="tz",
                                          state="completed") == 1)
            # several cadence intervals (0.2 s) later, not one more request for that call
            deadline_polls = svc.metric("outbound_call_status_requests_total", provider="telzino", account="tz")
            time.sleep(1.0)
            assert fake.requests[f"status:{call.call_id}"] == seen
            assert svc.metric("outbound_call_status_requests_total", provider="telzino", account="tz") == deadline_polls
