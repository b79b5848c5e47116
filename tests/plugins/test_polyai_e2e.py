"""End to end: the real service polls each PolyAI fake over 127.0.0.1 until every call is final."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from outbound_call_exporter import State
from outbound_call_exporter.testing import Step, faults
from outbound_call_exporter_plugins.polyai.fakes import QUEUE_TIMEOUT, AgentsFake, ConnectorFake, PlatformFake, iso

from conftest import account, make_config, running_service, wait_until

#: per plugin: its fake, and calls ending in every terminal state its API can report
SPECS = {
    "polyai_agents": (AgentsFake, [State.COMPLETED] * 3 + [State.FAILED] * 2),
    "polyai_platform": (PlatformFake, [State.COMPLETED] * 3 + [State.FAILED] * 2),
    "polyai_connector": (ConnectorFake, [State.COMPLETED] * 3 + [State.FAILED, State.NO_ANSWER, State.NO_ANSWER,
                                                                 State.BUSY, State.CANCELLED]),
}
ACTIVE = ("queued", "dialing", "in_progress", "unknown")


def start(fake, tmp_path, registry, provider, settings=None, **config):
    cfg = make_config(tmp_path, [account("pa", provider, fake.url, settings or fake.demo_settings())], **config)
    return running_service(cfg, registry)


def secret_of(fake):
    [value] = fake.credentials.values()
    return value


def watched(svc, provider):
    return sum(svc.metric("outbound_calls", provider=provider, account="pa", state=s) for s in ACTIVE)


@pytest.mark.parametrize("provider", sorted(SPECS))
def test_every_terminal_state_is_reached_counted_and_kept(provider, tmp_path, registry, caplog):
    caplog.set_level(logging.DEBUG)
    fake_cls, outcomes = SPECS[provider]
    fake = fake_cls(speed=40.0, seed=11)
    with fake.running(), start(fake, tmp_path, registry, provider) as svc:
        calls = [fake.add_call(outcome=o) for o in outcomes]
        # params come from the account's settings defaults: only the call SID is sent
        response = svc.client.post("/api/v1/calls", json=[{"account": "pa", "call_id": c.call_id} for c in calls])
        assert response.status_code == 201, response.text
        labels = {"provider": provider, "account": "pa"}
        wait_until(lambda: svc.metric("outbound_calls_finished_total", state="completed", **labels)
                   == outcomes.count(State.COMPLETED) and watched(svc, provider) == 0,
                   timeout=30, message="every call terminal")

        expected = Counter(o.value for o in outcomes)
        for state in ("completed", "failed", "busy", "no_answer", "cancelled", "expired"):
            assert svc.metric("outbound_calls_finished_total", state=state, **labels) == expected.get(state, 0)
            if state != "expired":
                assert svc.metric("outbound_call_time_to_terminal_seconds_count", state=state,
                                  **labels) == expected.get(state, 0)
        for call in calls:
            record = svc.call("pa", call.call_id)
            assert record["state"] == call.outcome.value
            assert record["provider_status"] == call.steps[-1].status
            assert record["watching"] is False and record["params"] == call.params
            assert record["history"][-1]["state"] == call.outcome.value
            if provider == "polyai_connector":
                check_connector_record(fake, call, record)
            elif call.outcome is State.FAILED:
                assert record["reason"] == QUEUE_TIMEOUT
        if provider == "polyai_connector":
            answered = expected["completed"]
            assert svc.metric("outbound_call_time_to_answer_seconds_count", **labels) == answered
            assert svc.metric("outbound_call_talk_time_seconds_count", **labels) == answered
            for state in ("busy", "no_answer", "cancelled"):
                assert svc.metric("outbound_call_failures_total", reason=state, **labels) == expected[state]
        else:
            assert svc.metric("outbound_call_failures_total", reason="queue_timeout", **labels) == expected["failed"]
            assert svc.metric("outbound_call_time_to_answer_seconds_count", **labels) == 0

        secret = secret_of(fake)
        listing = svc.client.get("/api/v1/calls", params={"account": "pa"})
        assert len(listing.json()["calls"]) == len(calls)
        for text in (listing.text, svc.metrics_text(), caplog.text):
            assert secret not in text


def check_connector_record(fake, call, record):
    """History, creation and end times come from the provider's event_history, verbatim."""
    times = [iso(call.created + s.after / fake.speed) for s in call.steps]
    provider_rows = [h for h in record["history"] if h["provider_status"] is not None]
    assert [h["provider_status"] for h in provider_rows] == [s.status for s in call.steps]
    assert [h["at"].replace("+00:00", "Z") for h in provider_rows] == times
    assert record["created_at"].replace("+00:00", "Z") == times[0]
    assert record["ended_at"].replace("+00:00", "Z") == times[-1]
    assert record["extras"] == {"client_env": "production"}
    if call.outcome is State.COMPLETED:
        assert record["answered_at"].replace("+00:00", "Z") == times[-2]
        assert record["duration_seconds"] is not None
    else:
        assert record["answered_at"] is None


@pytest.mark.parametrize("provider", sorted(SPECS))
def test_status_gone_after_retention_means_expired(provider, tmp_path, registry):
    fake_cls, _ = SPECS[provider]
    fake = fake_cls(speed=1.0, retention_seconds=0.0)  # the status vanishes the moment the call ends
    with fake.running(), start(fake, tmp_path, registry, provider) as svc:
        queued = fake.raw_status[State.QUEUED]
        call = fake.add_call(steps=[Step(queued, 0), Step(fake.raw_status[State.COMPLETED], 1.5)])
        assert svc.client.post("/api/v1/calls", json={"account": "pa", "call_id": call.call_id}).status_code == 201
        wait_until(lambda: svc.call("pa", call.call_id)["state"] == "expired", timeout=15, message="expired")
        record = svc.call("pa", call.call_id)
        assert record["provider_status"] == queued and "retention" in record["reason"]
        assert [h["state"] for h in record["history"]][-1] == "expired"
        labels = {"provider": provider, "account": "pa"}
        assert svc.metric("outbound_calls_finished_total", state="expired", **labels) == 1
        assert svc.metric("outbound_call_status_request_errors_total", reason="not_found", **labels) == 1


@pytest.mark.parametrize("provider, code", [("polyai_agents", 502), ("polyai_platform", 500),
                                            ("polyai_connector", 500)])
def test_documented_server_error_is_retried(provider, code, tmp_path, registry):
    fake_cls, _ = SPECS[provider]
    fake = fake_cls(speed=1.0)
    with fake.running(), start(fake, tmp_path, registry, provider) as svc:
        fake.inject(faults.status(code), times=2)
        call = fake.add_call(steps=[Step(fake.raw_status[State.QUEUED], 0), Step(fake.raw_status[State.COMPLETED], 0.3)])
        svc.client.post("/api/v1/calls", json={"account": "pa", "call_id": call.call_id})
        wait_until(lambda: svc.call("pa", call.call_id)["state"] == "completed", timeout=20, message="completed")
        labels = {"provider": provider, "account": "pa"}
        assert svc.metric("outbound_call_status_request_errors_total", reason="server_error", **labels) == 2
        assert svc.call("pa", call.call_id)["poll_errors"] == 2


@pytest.mark.parametrize("provider", sorted(SPECS))
def test_wrong_credential_takes_the_account_down_without_leaking_it(provider, tmp_path, registry, caplog):
    caplog.set_level(logging.DEBUG)
    fake_cls, _ = SPECS[provider]
    fake = fake_cls()
    [field] = fake.credentials
    wrong = "wrong-credential-value-42"
    with fake.running(), start(fake, tmp_path, registry, provider, {**fake.demo_settings(), field: wrong}) as svc:
        call = fake.add_call()
        svc.client.post("/api/v1/calls", json={"account": "pa", "call_id": call.call_id})
        labels = {"provider": provider, "account": "pa"}
        wait_until(lambda: svc.metric("outbound_call_account_up", **labels) == 0, message="account down")
        assert svc.metric("outbound_call_status_request_errors_total", reason="unauthorized", **labels) >= 1
        assert wrong not in svc.metrics_text() + str(svc.call("pa", call.call_id)) + caplog.text


@pytest.mark.parametrize("provider, body, field", [
    ("polyai_platform", {"call_id": "CA1234"}, "call_id"),
    ("polyai_platform", {"call_id": "out-550e8400-e29b-41d4-a716-446655440000"}, "call_id"),
    ("polyai_connector", {"call_id": "OUT-550e8400-e29b-41d4-a716-446655440000",
                          "params": {"project_id": "../x"}}, "params.project_id"),
    ("polyai_agents", {"call_id": "550e8400-e29b-41d4-a716-446655440000",
                       "params": {"environment": "production"}}, "params.environment"),
])
def test_registration_refuses_what_the_docs_do_not_allow(provider, body, field, tmp_path, registry):
    fake_cls, _ = SPECS[provider]
    fake = fake_cls()
    with fake.running(), start(fake, tmp_path, registry, provider) as svc:
        response = svc.client.post("/api/v1/calls", json={"account": "pa", **body})
        assert response.status_code in (400, 422)
        assert response.json()["error"].startswith(field)


def test_agents_per_call_params_override_the_account_defaults(tmp_path, registry):
    fake = AgentsFake(speed=100.0)
    with fake.running(), start(fake, tmp_path, registry, "polyai_agents", {"api_key": fake.credentials["api_key"]}) as svc:
        call = fake.add_call(params={"agent_id": "other-agent", "environment": "sandbox"})
        missing = svc.client.post("/api/v1/calls", json={"account": "pa", "call_id": call.call_id})
        assert missing.status_code == 422 and "params.agent_id" in missing.json()["error"]
        ok = svc.client.post("/api/v1/calls", json={"account": "pa", "call_id": call.call_id, "params": call.params})
        assert ok.status_code == 201, ok.text
        wait_until(lambda: svc.call("pa", call.call_id)["state"] == "completed", timeout=15, message="completed")
        assert svc.call("pa", call.call_id)["params"] == {"agent_id": "other-agent", "environment": "sandbox"}


def test_connector_event_history_is_not_recorded_twice_across_a_restart(tmp_path, registry):
    """The provider's events already in the history are persisted, so a resumed call appends
    only new ones."""
    fake = ConnectorFake(speed=1.0)
    with fake.running():
        call = fake.add_call(steps=[Step("CREATED", 0), Step("ringing", 0.1), Step("in-progress", 0.2),
                                    Step("completed", 3.0)])
        with start(fake, tmp_path, registry, "polyai_connector") as svc:
            svc.client.post("/api/v1/calls", json={"account": "pa", "call_id": call.call_id, "params": call.params})
            wait_until(lambda: svc.call("pa", call.call_id)["provider_status"] == "in-progress")
        with start(fake, tmp_path, registry, "polyai_connector") as svc:
            wait_until(lambda: svc.call("pa", call.call_id)["state"] == "completed", message="completed after restart")
            statuses = [h["provider_status"] for h in svc.call("pa", call.call_id)["history"]]
            assert statuses == [None, "CREATED", "ringing", "in-progress", "completed"], statuses
