"""End to end for `vapi`, `retell` and `bland`: the real service against each fake over 127.0.0.1.

Every terminal state each API can report, expiry after retention, refused credentials, 429s,
discovery through scopes and result webhooks with the platform's signature.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter

import httpx
import pytest

from outbound_call_exporter import State
from outbound_call_exporter.testing import Step, faults
from outbound_call_exporter_plugins.bland.fake import BlandFake
from outbound_call_exporter_plugins.retell.fake import RetellFake
from outbound_call_exporter_plugins.retell.signature import sign
from outbound_call_exporter_plugins.vapi.fake import VapiFake

from conftest import account, make_config, running_service, wait_until

#: per plugin: its fake, and calls ending in every terminal state its API can report
SPECS = {
    "vapi": (VapiFake, [State.COMPLETED] * 3 + [State.BUSY, State.NO_ANSWER, State.FAILED, State.CANCELLED]),
    "retell": (RetellFake, [State.COMPLETED] * 3 + [State.BUSY, State.NO_ANSWER, State.FAILED]),
    "bland": (BlandFake, [State.COMPLETED] * 3 + [State.BUSY, State.NO_ANSWER, State.FAILED, State.CANCELLED]),
}
ACTIVE = ("queued", "dialing", "in_progress", "unknown")
HOOK = "hook-token-1"


def start(fake, tmp_path, registry, provider, settings=None, **extra):
    acc = account("acc", provider, fake.url, settings or fake.demo_settings(), **extra)
    return running_service(make_config(tmp_path, [acc]), registry)


def labels(provider):
    return {"provider": provider, "account": "acc"}


def register(svc, calls):
    body = [{"account": "acc", "call_id": c.call_id, "params": c.params} for c in calls]
    response = svc.client.post("/api/v1/calls", json=body)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("provider", sorted(SPECS))
def test_every_terminal_state_is_reached_counted_and_kept(provider, tmp_path, registry, caplog):
    caplog.set_level(logging.DEBUG)
    fake_cls, outcomes = SPECS[provider]
    fake = fake_cls(speed=40.0, seed=7)
    with fake.running(), start(fake, tmp_path, registry, provider) as svc:
        calls = [fake.add_call(outcome=o) for o in outcomes]
        register(svc, calls)
        wait_until(lambda: sum(svc.metric("outbound_calls", state=s, **labels(provider)) for s in ACTIVE) == 0
                   and svc.metric("outbound_calls_finished_total", state="completed", **labels(provider)) == 3,
                   timeout=30, message="every call terminal")
        expected = Counter(o.value for o in outcomes)
        for state in ("completed", "failed", "busy", "no_answer", "cancelled", "expired"):
            assert svc.metric("outbound_calls_finished_total", state=state, **labels(provider)) == expected[state]
        for reason in ("busy", "no_answer", "cancelled"):
            assert svc.metric("outbound_call_failures_total", reason=reason, **labels(provider)) == expected[reason]
        assert svc.metric("outbound_call_talk_time_seconds_count", **labels(provider)) == expected["completed"]
        answered = 0 if provider == "retell" else expected["completed"]  # Retell gives no answer time
        assert svc.metric("outbound_call_time_to_answer_seconds_count", **labels(provider)) == answered
        for call in calls:
            record = svc.call("acc", call.call_id)
            assert record["state"] == call.outcome.value and record["watching"] is False
            assert record["provider_status"] == call.steps[-1].status
            if call.outcome is State.COMPLETED:
                assert record["duration_seconds"] is not None and record["ended_at"] is not None
        secret = fake.credentials["api_key"]
        for text in (svc.client.get("/api/v1/calls").text, svc.metrics_text(), caplog.text):
            assert secret not in text


@pytest.mark.parametrize("provider", sorted(SPECS))
def test_status_gone_after_retention_means_expired(provider, tmp_path, registry):
    fake_cls, _ = SPECS[provider]
    fake = fake_cls(speed=1.0, retention_seconds=0.0)
    with fake.running(), start(fake, tmp_path, registry, provider) as svc:
        queued = fake.raw_status[State.QUEUED]
        call = fake.add_call(steps=[Step(queued, 0), Step(fake.raw_status[State.COMPLETED], 1.0)])
        register(svc, [call])
        wait_until(lambda: svc.call("acc", call.call_id)["state"] == "expired", timeout=15, message="expired")
        assert svc.call("acc", call.call_id)["provider_status"] == queued
        assert svc.metric("outbound_call_status_request_errors_total", reason="not_found", **labels(provider)) == 1


@pytest.mark.parametrize("provider", sorted(SPECS))
def test_wrong_key_takes_the_account_down_without_leaking_it(provider, tmp_path, registry, caplog):
    caplog.set_level(logging.DEBUG)
    fake_cls, _ = SPECS[provider]
    fake = fake_cls()
    wrong = "wrong-api-key-value-42"
    with fake.running(), start(fake, tmp_path, registry, provider, {**fake.demo_settings(), "api_key": wrong}) as svc:
        call = fake.add_call()
        register(svc, [call])
        wait_until(lambda: svc.metric("outbound_call_account_up", **labels(provider)) == 0, message="account down")
        assert svc.metric("outbound_call_status_request_errors_total", reason="unauthorized", **labels(provider)) >= 1
        assert wrong not in svc.metrics_text() + json.dumps(svc.call("acc", call.call_id)) + caplog.text


@pytest.mark.parametrize("provider", sorted(SPECS))
def test_429_is_counted_and_its_retry_after_honoured(provider, tmp_path, registry):
    fake_cls, _ = SPECS[provider]
    fake = fake_cls(speed=1.0)
    with fake.running(), start(fake, tmp_path, registry, provider) as svc:
        fake.inject(faults.status(429, retry_after="1",
                                  body=b'{"message": "Too Many Requests", "statusCode": 429}'), times=1)
        call = fake.add_call(steps=[Step(fake.raw_status[State.QUEUED], 0), Step(fake.raw_status[State.COMPLETED], 0.2)])
        register(svc, [call])
        wait_until(lambda: svc.call("acc", call.call_id)["state"] == "completed", timeout=20, message="completed")
        assert svc.metric("outbound_call_status_request_errors_total", reason="rate_limited", **labels(provider)) == 1
        arrivals = [t for t, cid in fake.arrivals if cid == call.call_id]
        assert arrivals[1] - arrivals[0] >= 0.9, "the retry waited for Retry-After"
        assert svc.metric("outbound_call_account_up", **labels(provider)) == 1


@pytest.mark.parametrize("provider, scope", [("vapi", {"assistant_id": VapiFake.assistant_id}),
                                             ("retell", {"agent_id": RetellFake.agent_id})])
def test_scope_discovers_calls_created_after_it(provider, scope, tmp_path, registry):
    fake_cls, outcomes = SPECS[provider]
    fake = fake_cls(speed=20.0, seed=3)
    with fake.running():
        # created (and started: Retell has no time for a call still `registered`) before the scope
        old = fake.add_call(steps=[Step(fake.raw_status[State.QUEUED], 0), Step(fake.raw_status[State.IN_PROGRESS], 0.1),
                                   Step(fake.raw_status[State.COMPLETED], 2)])
        time.sleep(0.1)
        with start(fake, tmp_path, registry, provider, watch=[scope],
                   poll_interval_seconds={"queued": 0.3, "dialing": 0.3, "in_progress": 0.3, "unknown": 0.3}) as svc:
            wait_until(lambda: fake.requests["list"] >= 1, message="a first listing")
            calls = [fake.add_call(outcome=o) for o in outcomes]
            wait_until(lambda: all(svc.client.get(f"/api/v1/calls/acc/{c.call_id}").status_code == 200
                                   and not svc.call("acc", c.call_id)["watching"] for c in calls),
                       timeout=30, message="every new call discovered and finished")
            for call in calls:
                assert svc.call("acc", call.call_id)["state"] == call.outcome.value
            assert svc.client.get(f"/api/v1/calls/acc/{old.call_id}").status_code == 404
            assert svc.metric("outbound_call_discovered_total", source="scope", **labels(provider)) == len(calls)


@pytest.mark.parametrize("provider, settings", [("vapi", {}), ("retell", {}),
                                                ("bland", {"webhook_secret": "bland-signing-secret"})])
def test_result_webhook_finishes_the_call(provider, settings, tmp_path, registry):
    fake_cls, _ = SPECS[provider]
    fake = fake_cls(speed=1.0, credentials={**fake_cls().default_credentials(), **settings})
    slow = {"queued": 60, "dialing": 60, "in_progress": 60, "unknown": 60}
    with fake.running(), start(fake, tmp_path, registry, provider, fake.demo_settings(), webhook_token=HOOK,
                               poll_interval_seconds=slow) as svc:
        call = fake.add_call(steps=[Step(fake.raw_status[State.QUEUED], 0), Step(fake.raw_status[State.BUSY], 0.3)],
                             outcome=State.BUSY)
        call.callback_url = f"{svc.url}/api/v1/webhooks/acc?token={HOOK}"
        register(svc, [call])
        wait_until(lambda: svc.call("acc", call.call_id)["state"] == "busy", timeout=10,
                   message="terminal from the webhook (polls are a minute apart)")
        assert fake.requests["webhook:202"] == 1
        assert svc.metric("outbound_call_webhooks_total", result="accepted", **labels(provider)) == 1


@pytest.mark.parametrize("provider, header, settings", [
    ("retell", "x-retell-signature", {}),
    ("bland", "X-Webhook-Signature", {"webhook_secret": "bland-signing-secret"}),
])
def test_webhook_signature_is_verified(provider, header, settings, tmp_path, registry):
    fake_cls, _ = SPECS[provider]
    fake = fake_cls(credentials={**fake_cls().default_credentials(), **settings})
    slow = {"queued": 60, "dialing": 60, "in_progress": 60, "unknown": 60}
    with fake.running(), start(fake, tmp_path, registry, provider, fake.demo_settings(), webhook_token=HOOK,
                               poll_interval_seconds=slow) as svc:
        call = fake.add_call(steps=[Step(fake.raw_status[State.QUEUED], 0), Step(fake.raw_status[State.BUSY], 30)],
                             outcome=State.BUSY)
        register(svc, [call])
        body = fake.webhook_body(call, time.time())
        content = json.dumps(body).encode()
        good = call.callback_headers[header]
        url = f"{svc.url}/api/v1/webhooks/acc"
        forged = {"retell": sign(content, "not-the-key", int(time.time() * 1000)), "bland": "0" * 64}[provider]
        for headers in ({}, {header: forged}, {header: good.replace(good[-4:], "beef")}):
            r = httpx.post(url, content=content, headers={"X-Webhook-Token": HOOK, "Content-Type": "application/json",
                                                          **headers})
            assert r.status_code == 401, r.text
            assert fake.credentials["api_key"] not in r.text and good not in r.text
        assert svc.metric("outbound_call_webhooks_total", result="invalid_signature", **labels(provider)) == 3
        assert svc.call("acc", call.call_id)["state"] != "busy"
        r = httpx.post(url, content=content, headers={"X-Webhook-Token": HOOK, "Content-Type": "application/json",
                                                      header: good})
        assert r.status_code == 202, r.text
        assert svc.call("acc", call.call_id)["state"] == "busy"
        assert svc.metric("outbound_call_webhooks_total", result="accepted", **labels(provider)) == 1


def test_capabilities_are_declared(registry):
    vapi, retell, bland = (registry.providers[n] for n in ("vapi", "retell", "bland"))
    assert vapi.supports("list") and vapi.supports("webhook") and not vapi.supports("progress")
    assert retell.supports("list") and retell.supports("webhook") and not retell.supports("progress")
    assert bland.supports("webhook") and not bland.supports("list")
    assert (vapi.scope_keys, retell.scope_keys) == ({"assistant_id", "phone_number_id"}, {"agent_id"})


@pytest.mark.parametrize("provider, scope", [("vapi", {"assistant_id": VapiFake.assistant_id}),
                                             ("retell", {"agent_id": RetellFake.agent_id})])
def test_discovery_follows_the_cursor_past_one_page(provider, scope, tmp_path, registry):
    fake_cls, _ = SPECS[provider]
    fake = fake_cls(speed=1.0)
    cadence = {"queued": 1.0, "dialing": 1.0, "in_progress": 1.0, "unknown": 1.0}
    with fake.running(), start(fake, tmp_path, registry, provider, watch=[scope], poll_interval_seconds=cadence) as svc:
        wait_until(lambda: fake.requests["list"] >= 1, message="a first listing")
        steps = [Step(fake.raw_status[State.QUEUED], 0), Step(fake.raw_status[State.IN_PROGRESS], 0.5),
                 Step(fake.raw_status[State.COMPLETED], 30)]
        calls = []
        for i in range(250):
            calls.append(fake.add_call(steps=list(steps)))
            if i % 3 == 0:
                time.sleep(0.002)  # a few calls a millisecond, as a busy campaign creates them
        wait_until(lambda: svc.metric("outbound_call_discovered_total", source="scope", **labels(provider)) == 250,
                   timeout=30, message="all 250 discovered")
        assert fake.requests["list"] >= 26, "25 pages of 10 in the cycle that found them"
        assert {r["call_id"] for r in svc.client.get("/api/v1/calls", params={"limit": 1000}).json()["calls"]} \
            == {c.call_id for c in calls}
