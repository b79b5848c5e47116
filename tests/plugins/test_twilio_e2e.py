"""Twilio end to end: the real service polls the Twilio fake over loopback, and takes its
signed status callbacks."""

from __future__ import annotations

import time
from datetime import datetime

import httpx

from outbound_call_exporter import State
from outbound_call_exporter.testing import Step, faults
from outbound_call_exporter_plugins.twilio.fake import TwilioFake

from conftest import account, make_config, running_service, wait_until

TOKEN, SECRET = "tw-auth-token-5be01c", "tw-key-secret-77a0d2"
LABELS = {"provider": "twilio", "account": "tw"}
SLOW = {"queued": 60, "dialing": 60, "in_progress": 60, "unknown": 60}


def twilio_fake(**kwargs) -> TwilioFake:
    fake = TwilioFake(**kwargs)
    fake.credentials.update(auth_token=TOKEN, api_key_secret=SECRET)
    return fake


def epoch(iso: str | None) -> float | None:
    return None if iso is None else datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_lifecycles_to_each_terminal_state(tmp_path, registry, caplog):
    fake = twilio_fake(speed=10.0, seed=5)
    outcomes = [State.COMPLETED, State.COMPLETED, State.BUSY, State.NO_ANSWER, State.FAILED, State.CANCELLED]
    with fake.running():
        config = make_config(tmp_path, [account("tw", "twilio", fake.url, fake.demo_settings())])
        with running_service(config, registry) as svc:
            calls = [fake.add_call(outcome=o) for o in outcomes]
            r = svc.client.post("/api/v1/calls", json=[{"account": "tw", "call_id": c.call_id} for c in calls])
            assert r.status_code == 201, r.text
            for call in calls:
                rec = wait_until(lambda: (r := svc.call("tw", call.call_id))["watching"] is False and r,
                                 timeout=30, message="every call ends")
                assert rec["state"] == call.outcome.value and rec["provider_status"] == call.steps[-1].status
                assert abs(epoch(rec["created_at"]) - call.created) < 1  # date_created, whole seconds
                assert abs(epoch(rec["ended_at"]) - call.ended_at(fake.speed)) < 1
                if call.outcome is State.COMPLETED:
                    answered = call.created + call.steps[-2].after / fake.speed
                    assert abs(epoch(rec["answered_at"]) - answered) < 2 and rec["duration_seconds"] > 0
                    assert rec["extras"]["to"] == "+1•••••••12"  # masked by default (privacy)
                else:
                    assert rec["answered_at"] is None and rec["duration_seconds"] is None
            for state in ("completed", "busy", "no_answer", "failed", "cancelled"):
                finished = svc.metric("outbound_calls_finished_total", state=state, **LABELS)
                assert finished == outcomes.count(State(state))
            assert svc.metric("outbound_call_time_to_answer_seconds_count", **LABELS) == 2
            assert svc.metric("outbound_call_talk_time_seconds_count", **LABELS) == 2
            everything = svc.metrics_text() + svc.client.get("/api/v1/calls?account=tw&limit=100").text
            assert TOKEN not in everything and SECRET not in everything
    assert TOKEN not in caplog.text and SECRET not in caplog.text


def test_not_found_after_retention_is_expired(tmp_path, registry):
    fake = twilio_fake(speed=1.0, retention_seconds=2.0)
    with fake.running():
        config = make_config(tmp_path, [account("tw", "twilio", fake.url, fake.demo_settings())])
        with running_service(config, registry) as svc:
            seen = fake.add_call(steps=[Step("queued", 0), Step("ringing", 0.1)])
            svc.client.post("/api/v1/calls", json={"account": "tw", "call_id": seen.call_id})
            wait_until(lambda: svc.call("tw", seen.call_id)["provider_status"] == "ringing")
            del fake.calls[fake.key(seen.call_id, {})]  # deleted, or past retention: 404 (20404)
            wait_until(lambda: svc.call("tw", seen.call_id)["state"] == "expired", message="expired after 404")
            assert svc.metric("outbound_call_status_request_errors_total", reason="not_found", **LABELS) >= 1

        # the fake forgets a finished call once retention passes, with Twilio's error body
        done = fake.add_call(steps=[Step("queued", 0), Step("completed", 0.05)])
        p = registry.providers["twilio"](registry.providers["twilio"].Settings(**fake.demo_settings()), fake.url)
        request = p.build_request(p.Params(call_id=done.call_id))
        with httpx.Client() as client:
            assert client.send(request).status_code == 200
            gone = wait_until(lambda: (r := client.send(request)).status_code == 404 and r, timeout=10,
                              interval=0.2, message="404 once retention passed")
        assert gone.status_code == 404 and gone.json()["code"] == 20404


def test_refused_credentials_take_the_account_down(tmp_path, registry):
    fake = twilio_fake(speed=1.0)
    with fake.running():
        settings = {**fake.demo_settings(), "api_key_secret": "wrong-secret"}
        config = make_config(tmp_path, [account("tw", "twilio", fake.url, settings)])
        with running_service(config, registry) as svc:
            call = fake.add_call(steps=[Step("queued", 0)])
            svc.client.post("/api/v1/calls", json={"account": "tw", "call_id": call.call_id})
            wait_until(lambda: svc.metric("outbound_call_account_up", **LABELS) == 0, message="account down")
            assert svc.metric("outbound_call_status_request_errors_total", reason="unauthorized", **LABELS) >= 1
            assert "wrong-secret" not in svc.metrics_text() + svc.client.get("/api/v1/calls").text


def test_rate_limited_answers_are_counted_and_retried(tmp_path, registry):
    fake = twilio_fake(speed=1.0)
    with fake.running():
        config = make_config(tmp_path, [account("tw", "twilio", fake.url, fake.demo_settings())])
        with running_service(config, registry) as svc:
            fake.inject(faults.status(429, body=fake.rate_limited(), retry_after="1"), times=2)
            call = fake.add_call(steps=[Step("queued", 0), Step("completed", 0.5)])
            svc.client.post("/api/v1/calls", json={"account": "tw", "call_id": call.call_id})
            wait_until(lambda: svc.call("tw", call.call_id)["state"] == "completed", message="done after 429s")
            assert svc.metric("outbound_call_status_request_errors_total", reason="rate_limited", **LABELS) == 2
            assert svc.metric("outbound_call_account_up", **LABELS) == 1


def test_too_many_concurrent_requests_answer_429_with_retry_after(tmp_path, registry):
    fake = twilio_fake(speed=1.0, max_concurrent=2, delay=0.2)
    with fake.running():
        config = make_config(tmp_path, [account("tw", "twilio", fake.url, fake.demo_settings())])
        with running_service(config, registry) as svc:
            calls = [fake.add_call(steps=[Step("queued", 0), Step("completed", 0.5)]) for _ in range(8)]
            svc.client.post("/api/v1/calls", json=[{"account": "tw", "call_id": c.call_id} for c in calls])
            for call in calls:
                wait_until(lambda: svc.call("tw", call.call_id)["state"] == "completed", timeout=30,
                           message="every call completes despite 429s")
            assert fake.requests["rate_limited"] >= 1
            assert svc.metric("outbound_call_status_request_errors_total", reason="rate_limited", **LABELS) \
                == fake.requests["rate_limited"]
            assert svc.metric("outbound_call_account_up", **LABELS) == 1


def test_signed_status_callbacks(tmp_path, registry):
    fake = twilio_fake(speed=1.0)
    with fake.running():
        acc = account("tw", "twilio", fake.url, fake.demo_settings(), webhook_token="hook-secret",
                      poll_interval_seconds=SLOW)
        with running_service(make_config(tmp_path, [acc]), registry) as svc:
            url = f"{svc.url}/api/v1/webhooks/tw?token=hook-secret"
            call = fake.add_call(steps=[Step("queued", 0), Step("busy", 0.05)], outcome=State.BUSY)
            svc.client.post("/api/v1/calls", json={"account": "tw", "call_id": call.call_id})
            time.sleep(0.1)  # the call is busy at the fake; the service polls only a minute from now
            fields, headers = fake.status_callback(call, url, time.time())

            forged = {**headers, "X-Twilio-Signature": fake.status_callback(call, url + "x", time.time())[1]
                      ["X-Twilio-Signature"]}
            for bad_headers, bad_fields in ((forged, fields), (headers, {**fields, "CallStatus": "completed"}),
                                            ({"Content-Type": headers["Content-Type"]}, fields)):
                r = httpx.post(url, data=bad_fields, headers=bad_headers)
                assert r.status_code == 401 and TOKEN not in r.text, r.text
            assert svc.metric("outbound_call_webhooks_total", result="invalid_signature", **LABELS) == 3
            assert svc.call("tw", call.call_id)["state"] != "busy"

            r = httpx.post(url, data=fields, headers=headers)
            assert r.status_code == 202 and r.json() == {"result": "accepted"}, r.text
            rec = wait_until(lambda: (r := svc.call("tw", call.call_id))["state"] == "busy" and r,
                             timeout=5, message="terminal from the callback (polls are a minute apart)")
            assert rec["history"][-1]["provider_status"] == "busy"
            assert svc.metric("outbound_call_sip_failures_total", sip_code="486", **LABELS) == 1
            assert svc.metric("outbound_call_webhooks_total", result="accepted", **LABELS) == 1


def test_callbacks_behind_an_ingress_use_the_public_url(tmp_path, registry):
    fake = twilio_fake(speed=1.0)
    public = "https://calls.example.com/twilio/status"
    with fake.running():
        acc = account("tw", "twilio", fake.url, {**fake.demo_settings(), "webhook_url": public},
                      webhook_token="hook-secret", poll_interval_seconds=SLOW)
        with running_service(make_config(tmp_path, [acc]), registry) as svc:
            call = fake.add_call(steps=[Step("queued", 0), Step("completed", 0.05)])
            svc.client.post("/api/v1/calls", json={"account": "tw", "call_id": call.call_id})
            time.sleep(0.1)
            fields, headers = fake.status_callback(call, public + "?token=hook-secret", time.time())
            r = httpx.post(f"{svc.url}/api/v1/webhooks/tw?token=hook-secret", data=fields, headers=headers)
            assert r.status_code == 202, r.text
            wait_until(lambda: svc.call("tw", call.call_id)["state"] == "completed", timeout=5)
