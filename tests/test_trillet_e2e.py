"""Trillet end to end: the real service polls the Trillet fake over loopback HTTP."""

from __future__ import annotations

import json
import logging
from collections import Counter

import httpx
import pytest

from outbound_call_exporter import State
from outbound_call_exporter.testing import Step, faults
from outbound_call_exporter_plugins.trillet.fake import ERRORS, TrilletFake

from conftest import account, make_config, running_service, stored_text, wait_until

pytestmark = pytest.mark.both_stores

KEY = "tr-secret-key-9c1f7a"
LABELS = {"provider": "trillet", "account": "tr"}
#: (outcome the fake plays, normalized state we expect, failure reason we expect)
OUTCOMES = [(State.COMPLETED, "completed", None)] * 4 + [
    (State.BUSY, "failed", "busy"), (State.BUSY, "failed", "busy"),
    (State.NO_ANSWER, "failed", "no_answer"), (State.FAILED, "failed", "other"),
]


def trillet_fake(**kwargs) -> TrilletFake:
    return TrilletFake(credentials={"api_key": KEY, "workspace_id": "ws_e2e"}, **kwargs)


def active_total(svc) -> float:
    return sum(svc.metric("outbound_calls", state=s.value, **LABELS)
               for s in (State.QUEUED, State.DIALING, State.IN_PROGRESS, State.UNKNOWN))


def test_lifecycles_to_each_terminal_state(tmp_path, registry, caplog):
    caplog.set_level(logging.DEBUG)
    fake = trillet_fake(speed=10.0, seed=3)
    with fake.running():
        config = make_config(tmp_path, [account("tr", "trillet", fake.url, fake.demo_settings())])
        with running_service(config, registry) as svc:
            calls = [(fake.add_call(outcome=o), state, reason) for o, state, reason in OUTCOMES]
            body = [{"account": "tr", "call_id": c.call_id} for c, _, _ in calls]  # batch_id from settings
            response = svc.client.post("/api/v1/calls", json=body)
            assert response.status_code == 201, response.text

            wait_until(lambda: svc.metric("outbound_calls_finished_total", state="completed", **LABELS)
                       + svc.metric("outbound_calls_finished_total", state="failed", **LABELS) == len(calls)
                       and active_total(svc) == 0, timeout=30, message="every job terminal")

            states = Counter(state for _, state, _ in calls)
            for state in ("completed", "failed", "busy", "no_answer", "cancelled", "expired"):
                assert svc.metric("outbound_calls_finished_total", state=state, **LABELS) == states.get(state, 0)
            assert svc.metric("outbound_call_time_to_terminal_seconds_count", state="completed",
                              **LABELS) == states["completed"]
            assert svc.metric("outbound_call_talk_time_seconds_count", **LABELS) == states["completed"]
            # no creation time at Trillet: time to answer is not made up
            assert svc.metric("outbound_call_time_to_answer_seconds_count", **LABELS) == 0
            reasons = Counter(r for _, _, r in calls if r)
            for reason in ("busy", "no_answer", "other", "unreachable", "queue_timeout"):
                assert svc.metric("outbound_call_failures_total", reason=reason, **LABELS) == reasons.get(reason, 0)

            for call, state, reason in calls:
                rec = svc.call("tr", call.call_id)
                assert rec["state"] == state and rec["provider_status"] == call.steps[-1].status
                assert rec["watching"] is False and rec["params"] == {"batch_id": fake.batch_id}
                assert rec["ended_at"] is not None and rec["created_at"] is None
                history = [(h["state"], h["provider_status"]) for h in rec["history"]]
                assert history[-1] == (state, call.steps[-1].status)
                if state == "completed":
                    assert ("in_progress", "active") in history  # polls every 0.2 s; active >= 1 s at speed 10
                    active_at = next(h["at"] for h in rec["history"] if h["provider_status"] == "active")
                    started = call.created + call.steps[1].after / fake.speed
                    assert abs(_epoch(active_at) - started) < 0.01  # the provider's startTime, not our clock
                    assert rec["duration_seconds"] is not None and rec["answered_at"] is not None
                    assert rec["extras"]["result"] == {"callId": f"call_{call.call_id[-12:]}", "outcome": "successful"}
                else:
                    expected = {"busy": State.BUSY, "no_answer": State.NO_ANSWER, "other": State.FAILED}[reason]
                    assert rec["reason"] == rec["extras"]["error"] == ERRORS[expected]

            everything = svc.metrics_text() + svc.client.get("/api/v1/calls?account=tr&limit=100").text
            assert KEY not in everything and KEY not in caplog.text
    assert KEY not in stored_text(config)


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_not_found_after_retention_expires(tmp_path, registry):
    fake = trillet_fake(speed=1.0)
    with fake.running():
        config = make_config(tmp_path, [account("tr", "trillet", fake.url, fake.demo_settings(),
                                                not_found_grace_seconds=30)])
        with running_service(config, registry) as svc:
            seen = fake.add_call(steps=[Step("waiting", 0), Step("active", 0.1)])
            svc.client.post("/api/v1/calls", json={"account": "tr", "call_id": seen.call_id})
            wait_until(lambda: svc.call("tr", seen.call_id)["provider_status"] == "active")
            del fake.calls[fake.key(seen.call_id, seen.params)]  # retention passed: 404 + not_found body
            wait_until(lambda: svc.call("tr", seen.call_id)["state"] == "expired", message="expired after 404")

            # the same body with 200 is not-found too, never a status
            other = fake.add_call(steps=[Step("waiting", 0)])
            svc.client.post("/api/v1/calls", json={"account": "tr", "call_id": other.call_id})
            wait_until(lambda: svc.call("tr", other.call_id)["provider_status"] == "waiting")
            fake.inject(faults.status(200, body=b'{"status": "not_found", "error": "Call not found"}'), times=None)
            wait_until(lambda: svc.call("tr", other.call_id)["state"] == "expired", message="expired after 200")
            fake.clear_faults()

            for call in (seen, other):
                rec = svc.call("tr", call.call_id)
                assert "not_found" not in [h["provider_status"] for h in rec["history"]]
                assert rec["watching"] is False
            assert svc.metric("outbound_calls_finished_total", state="expired", **LABELS) == 2
            assert svc.metric("outbound_call_status_request_errors_total", reason="not_found", **LABELS) >= 2
            assert svc.metric("outbound_calls", state="unknown", **LABELS) == 0


def test_fake_forgets_finished_jobs_after_retention_with_the_documented_body():
    fake = trillet_fake(speed=1.0, retention_seconds=0.2)
    with fake.running():
        job = fake.add_call(steps=[Step("waiting", 0), Step("active", 0), Step("completed", 0)])
        url = f"{fake.url}/v1/api/batch-calls/{fake.batch_id}/calls/{job.call_id}"
        headers = {"x-api-key": KEY, "x-workspace-id": "ws_e2e"}
        with httpx.Client(trust_env=False) as client:
            first = client.get(url, headers=headers)
            assert first.status_code == 200 and first.json()["status"] == "completed"
            assert {"jobId", "status", "phone_number", "startTime", "endTime", "duration", "result"} <= set(first.json())
            assert client.get(url, headers={"x-api-key": KEY}).status_code == 401
            assert client.get(url, headers={"x-api-key": "nope", "x-workspace-id": "ws_e2e"}).status_code == 401
            gone = wait_until(lambda: (r := client.get(url, headers=headers)).status_code == 404 and r,
                              timeout=5, message="retention")
            assert gone.json() == {"status": "not_found", "error": "Call not found"}
            unknown = client.get(f"{fake.url}/v1/api/batch-calls/other_batch/calls/{job.call_id}", headers=headers)
            assert unknown.status_code == 404 and unknown.json()["status"] == "not_found"


@pytest.mark.parametrize("outcome", [State.COMPLETED, State.BUSY, State.NO_ANSWER, State.FAILED])
def test_fake_renders_the_documented_shapes(outcome):
    fake = trillet_fake(speed=1000.0, seed=1)
    call = fake.add_call(outcome=outcome)
    record = fake.render(call, len(call.steps) - 1, call.created + 1)
    assert record["status"] == ("completed" if outcome is State.COMPLETED else "failed")
    assert isinstance(record["startTime"], int) and record["startTime"] > 10 ** 12  # epoch ms
    assert record["endTime"] >= record["startTime"]
    if outcome is State.COMPLETED:
        assert set(record["result"]) == {"callId", "transcript", "outcome", "metadata"} and "error" not in record
    else:
        assert record["error"] == ERRORS[outcome] and "duration" not in record and "result" not in record
    waiting = fake.render(call, 0, call.created)
    assert waiting == {"jobId": call.call_id, "status": "waiting", "phone_number": "+1234567890"}


def test_secret_echoed_by_the_provider_is_not_stored(tmp_path, registry):
    fake = trillet_fake(speed=1.0)
    with fake.running():
        config = make_config(tmp_path, [account("tr", "trillet", fake.url, fake.demo_settings())])
        with running_service(config, registry) as svc:
            call = fake.add_call(steps=[Step("waiting", 0), Step("failed", 0.1)],
                                 error=f"Invalid x-api-key {KEY}", phone_number=KEY)
            svc.client.post("/api/v1/calls", json={"account": "tr", "call_id": call.call_id})
            wait_until(lambda: svc.call("tr", call.call_id)["state"] == "failed", message="failed")
            rec = svc.call("tr", call.call_id)
            assert KEY not in json.dumps(rec)
