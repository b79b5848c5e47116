"""Vonage end to end: the real service polls the Vonage fake over loopback with signed JWTs,
and takes its (signed) event webhooks."""

from __future__ import annotations

import time
from datetime import datetime

import httpx

from outbound_call_exporter import State
from outbound_call_exporter.testing import Step
from outbound_call_exporter_plugins.vonage import Vonage, VonageParams, VonageSettings
from outbound_call_exporter_plugins.vonage.fake import VonageFake, new_private_key

from conftest import account, make_config, running_service, wait_until

LABELS = {"provider": "vonage", "account": "vg"}
SLOW = {"queued": 60, "dialing": 60, "in_progress": 60, "unknown": 60}
SIGNATURE_SECRET = "vonage-signature-secret-4f1e0c9b2a7d"


def epoch(iso: str | None) -> float | None:
    return None if iso is None else datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_lifecycles_to_each_terminal_state(tmp_path, registry, caplog):
    fake = VonageFake(speed=10.0, seed=7)
    outcomes = [State.COMPLETED, State.COMPLETED, State.BUSY, State.NO_ANSWER, State.FAILED, State.CANCELLED]
    pem = fake.credentials["private_key"]
    with fake.running():
        config = make_config(tmp_path, [account("vg", "vonage", fake.url, fake.demo_settings())])
        with running_service(config, registry) as svc:
            calls = [fake.add_call(outcome=o) for o in outcomes]
            r = svc.client.post("/api/v1/calls", json=[{"account": "vg", "call_id": c.call_id} for c in calls])
            assert r.status_code == 201, r.text
            for call in calls:
                rec = wait_until(lambda: (r := svc.call("vg", call.call_id))["watching"] is False and r,
                                 timeout=30, message="every call ends")
                assert rec["state"] == call.outcome.value and rec["provider_status"] == call.steps[-1].status
                assert abs(epoch(rec["created_at"]) - call.created) < 1
                assert abs(epoch(rec["ended_at"]) - call.ended_at(fake.speed)) < 1
                if call.outcome is State.COMPLETED:
                    assert rec["answered_at"] is not None and rec["duration_seconds"] > 0
                else:
                    assert rec["answered_at"] is None and rec["duration_seconds"] is None
            for state in ("completed", "busy", "no_answer", "failed", "cancelled"):
                finished = svc.metric("outbound_calls_finished_total", state=state, **LABELS)
                assert finished == outcomes.count(State(state))
            assert svc.metric("outbound_call_time_to_answer_seconds_count", **LABELS) == 2
            everything = svc.metrics_text() + svc.client.get("/api/v1/calls?account=vg&limit=100").text
            assert "PRIVATE KEY" not in everything
    body = pem.splitlines()[5]
    assert body not in caplog.text and body not in (tmp_path / "calls.db").read_bytes().decode("latin-1")


def test_not_found_after_retention_is_expired(tmp_path, registry):
    fake = VonageFake(speed=1.0)
    with fake.running():
        config = make_config(tmp_path, [account("vg", "vonage", fake.url, fake.demo_settings())])
        with running_service(config, registry) as svc:
            seen = fake.add_call(steps=[Step("started", 0), Step("ringing", 0.1)])
            svc.client.post("/api/v1/calls", json={"account": "vg", "call_id": seen.call_id})
            wait_until(lambda: svc.call("vg", seen.call_id)["provider_status"] == "ringing")
            del fake.calls[fake.key(seen.call_id, {})]  # past the legs' TTL: 404
            wait_until(lambda: svc.call("vg", seen.call_id)["state"] == "expired", message="expired after 404")
            assert svc.metric("outbound_call_status_request_errors_total", reason="not_found", **LABELS) >= 1


def test_the_fake_forgets_calls_after_retention():
    fake = VonageFake(speed=1.0, retention_seconds=2.0)
    with fake.running():
        done = fake.add_call(steps=[Step("started", 0), Step("completed", 0.05)])
        provider = Vonage(VonageSettings(**fake.demo_settings()), fake.url)
        request = provider.build_request(VonageParams(call_id=done.call_id))
        with httpx.Client() as client:
            assert client.send(request).json()["status"] == "completed"
            gone = wait_until(lambda: (r := client.send(request)).status_code == 404 and r, timeout=10,
                              interval=0.2, message="404 once retention passed")
        assert gone.status_code == 404 and gone.headers["Content-Type"].startswith("application/problem+json")
        assert gone.json()["title"] == "Not Found"


def test_a_key_vonage_does_not_know_takes_the_account_down(tmp_path, registry):
    fake = VonageFake(speed=1.0)
    with fake.running():
        other = new_private_key()
        config = make_config(tmp_path, [account("vg", "vonage", fake.url,
                                                {**fake.demo_settings(), "private_key": other})])
        with running_service(config, registry) as svc:
            call = fake.add_call(steps=[Step("started", 0)])
            svc.client.post("/api/v1/calls", json={"account": "vg", "call_id": call.call_id})
            wait_until(lambda: svc.metric("outbound_call_account_up", **LABELS) == 0, message="account down")
            assert svc.metric("outbound_call_status_request_errors_total", reason="unauthorized", **LABELS) >= 1
            assert fake.requests["status"] >= 1


def test_the_documented_rate_limit_answers_429(tmp_path, registry):
    fake = VonageFake(speed=1.0, rate_limit=3)
    with fake.running():
        acc = account("vg", "vonage", fake.url, fake.demo_settings())  # 500 requests/s: over Vonage's limit
        with running_service(make_config(tmp_path, [acc]), registry) as svc:
            calls = [fake.add_call(steps=[Step("started", 0), Step("completed", 1.0)]) for _ in range(10)]
            svc.client.post("/api/v1/calls", json=[{"account": "vg", "call_id": c.call_id} for c in calls])
            for call in calls:
                wait_until(lambda: svc.call("vg", call.call_id)["state"] == "completed", timeout=30,
                           message="every call completes despite 429s")
            assert fake.requests["rate_limited"] >= 1
            assert svc.metric("outbound_call_status_request_errors_total", reason="rate_limited", **LABELS) \
                == fake.requests["rate_limited"]


def test_signed_event_webhooks(tmp_path, registry):
    fake = VonageFake(speed=1.0)
    with fake.running():
        acc = account("vg", "vonage", fake.url, {**fake.demo_settings(), "signature_secret": SIGNATURE_SECRET},
                      webhook_token="hook-secret", poll_interval_seconds=SLOW)
        with running_service(make_config(tmp_path, [acc]), registry) as svc:
            url = f"{svc.url}/api/v1/webhooks/vg"
            call = fake.add_call(steps=[Step("started", 0), Step("failed", 0.05)], outcome=State.FAILED)
            svc.client.post("/api/v1/calls", json={"account": "vg", "call_id": call.call_id})
            time.sleep(0.1)  # failed at the fake; the service polls only a minute from now
            body, headers = fake.event_webhook(call, time.time(), SIGNATURE_SECRET)
            token = {"X-Webhook-Token": "hook-secret"}
            _, wrong = fake.event_webhook(call, time.time(), "not-the-signature-secret-0123456789ab")
            for content, bad in ((body, wrong), (body.replace(b'"failed"', b'"completed"'), headers),
                                 (body, {"Content-Type": "application/json"})):
                r = httpx.post(url, content=content, headers={**bad, **token})
                assert r.status_code == 401 and SIGNATURE_SECRET not in r.text, r.text
            assert svc.metric("outbound_call_webhooks_total", result="invalid_signature", **LABELS) == 3
            assert svc.call("vg", call.call_id)["state"] != "failed"

            r = httpx.post(url, content=body, headers={**headers, **token})
            assert r.status_code == 202 and r.json() == {"result": "accepted"}, r.text
            rec = wait_until(lambda: (r := svc.call("vg", call.call_id))["state"] == "failed" and r, timeout=5,
                             message="terminal from the event (polls are a minute apart)")
            assert rec["reason"] == "invalid_number"
            assert svc.metric("outbound_call_failures_total", reason="unreachable", **LABELS) == 1
            assert svc.metric("outbound_call_webhooks_total", result="accepted", **LABELS) == 1
