"""Scopes, bulk status and webhooks against the real service and fakes on 127.0.0.1.

The request counts of scope watching and per-call polling of the same calls are printed side by
side (`pytest -s`) and compared."""

from __future__ import annotations

import time

import httpx
import pytest

from outbound_call_exporter import State
from outbound_call_exporter.testing import Step
from outbound_call_exporter_plugins.telzino.fake import TelzinoFake
from outbound_call_exporter_plugins.trillet.fake import TrilletFake

from conftest import account, make_config, running_service, wait_until

pytestmark = pytest.mark.both_stores

TERMINAL = ("completed", "failed", "busy", "no_answer", "cancelled", "expired")
MIX = [State.COMPLETED, State.BUSY, State.NO_ANSWER, State.FAILED, State.COMPLETED]


def finished(svc, acc: str, provider: str) -> float:
    return sum(svc.metric("outbound_calls_finished_total", provider=provider, account=acc, state=s) or 0
               for s in TERMINAL)


def requests_of(fake) -> int:
    return fake.requests["status"] + fake.requests["list"] + fake.requests["progress"]


def run_batch(tmp_path, registry, jobs: int, via_scope: bool) -> tuple[int, dict]:
    fake = TrilletFake(speed=4.0, seed=3)
    with fake.running():
        batch = "batch_7891011121314"
        calls = [fake.add_call(params={"batch_id": batch}, outcome=MIX[i % len(MIX)]) for i in range(jobs)]
        settings = {**fake.demo_settings(), "batch_id": batch}
        acc = account("tr", "trillet", fake.url, settings, max_requests_per_second=20,
                      poll_interval_seconds={"queued": 1, "dialing": 1, "in_progress": 1, "unknown": 1})
        with running_service(make_config(tmp_path, [acc]), registry) as svc:
            if via_scope:
                r = svc.client.post("/api/v1/scopes", json={"account": "tr", "scope": {"batch_id": batch}})
                assert r.status_code == 201, r.text
                scope_id = r.json()["id"]
                wait_until(lambda: svc.metric("outbound_call_batch_jobs", provider="trillet", account="tr",
                                              batch=batch, state="waiting") is not None, message="progress gauge")
            else:
                svc.client.post("/api/v1/calls", json=[{"account": "tr", "call_id": c.call_id} for c in calls])
            wait_until(lambda: finished(svc, "tr", "trillet") == jobs, timeout=120, message="all jobs finished")
            records = {c.call_id: svc.call("tr", c.call_id) for c in calls}
            for call in calls:
                assert records[call.call_id]["state"] == call.outcome.value.replace("busy", "failed").replace(
                    "no_answer", "failed"), records[call.call_id]
            if via_scope:
                wait_until(lambda: svc.client.get("/api/v1/scopes").json()["scopes"][0]["complete"],
                           message="batch scope complete")
                [scope] = svc.client.get("/api/v1/scopes").json()["scopes"]
                assert scope["id"] == scope_id and scope["discovered"] == jobs
                assert svc.metric("outbound_call_batch_jobs", provider="trillet", account="tr",
                                  batch=batch, state="waiting") is None  # removed once complete
                assert svc.metric("outbound_call_discovered_total", provider="trillet", account="tr",
                                  source="scope") == jobs
            # every request of any kind counts, and stays under the account's rate limit
            assert svc.metric("outbound_call_status_requests_total", provider="trillet",
                              account="tr") >= requests_of(fake)
            times = sorted(t for t, _, _ in fake.log)
            busiest = max(sum(1 for t in times[i:] if t - start < 2.0) for i, start in enumerate(times))
            # requests are spaced 1/20 s apart when sent, so any 2 s hold at most 41 of them; arrival
            # jitter on a loaded machine (up to ~150 ms) may add 3 more, a rate over the limit far more
            assert busiest <= 44, f"{busiest} requests within two seconds (limit 20/s)"
        return requests_of(fake), dict(fake.requests)


def test_batch_scope_watches_every_job_with_far_fewer_requests(tmp_path, registry, store_backend):
    jobs = 150
    scoped, detail = run_batch(tmp_path / "scope", registry, jobs, via_scope=True)
    if store_backend == "postgresql":  # every job finished once, checked; the request counts
        return  # compared below are the scope's logic, not the store's (and cost 15 s of CI)
    polled, _ = run_batch(tmp_path / "poll", registry, jobs, via_scope=False)
    print(f"\n{jobs} Trillet jobs: per-call polling {polled} requests; batch scope {scoped} requests "
          f"(list {detail.get('list', 0)}, progress {detail.get('progress', 0)}, status {detail.get('status', 0)})")
    assert scoped * 3 < polled


def test_agent_scope_discovers_new_calls_only_and_refreshes_in_bulk(tmp_path, registry):
    fake = TelzinoFake(speed=4.0, seed=5)
    with fake.running():
        old = fake.add_call(outcome=State.COMPLETED)  # created before the scope: not watched
        time.sleep(0.05)
        acc = account("tz", "telzino", fake.url, fake.demo_settings(), watch=[{"agent_id": fake.agent_id}],
                      poll_interval_seconds={"queued": 0.5, "dialing": 0.5, "in_progress": 0.5, "unknown": 0.5})
        with running_service(make_config(tmp_path, [acc]), registry) as svc:
            [scope] = svc.client.get("/api/v1/scopes").json()["scopes"]
            assert scope["scope"] == {"agent_id": fake.agent_id} and scope["complete"] is False
            calls = [fake.add_call(outcome=MIX[i % len(MIX)]) for i in range(40)]
            wait_until(lambda: finished(svc, "tz", "telzino") == len(calls), timeout=120, message="all finished")
            for call in calls:
                assert svc.call("tz", call.call_id)["state"] == call.outcome.value
            assert svc.client.get(f"/api/v1/calls/tz/{old.call_id}").status_code == 404
            assert svc.metric("outbound_call_discovered_total", provider="telzino", account="tz",
                              source="scope") == len(calls)
            per_call = fake.requests["status"]
            print(f"\n40 Telzino calls via an agent scope: {fake.requests['list']} list requests, "
                  f"{per_call} status requests (confirmations of ended calls)")
            assert per_call <= 2 * len(calls)  # ~one confirmation each, not one per cadence tick


def test_scopes_api_and_persistence(tmp_path, registry):
    fake = TrilletFake()
    with fake.running():
        config = make_config(tmp_path, [account("tr", "trillet", fake.url, fake.demo_settings()),
                                        account("tz", "telzino", "http://127.0.0.1:9", {"token": "t"})],
                             max_watched_batches=1)
        with running_service(config, registry) as svc:
            for body, status, field in [({"account": "nope", "scope": {"batch_id": "b"}}, 404, "account"),
                                        ({"account": "tr", "scope": {"agent_id": "x"}}, 422, "scope"),
                                        ({"account": "tr", "scope": {"batch_id": "a/b"}}, 422, "batch_id"),
                                        ({"account": "tr"}, 422, "scope"), ([], 400, "body")]:
                r = svc.client.post("/api/v1/scopes", json=body)
                assert r.status_code == status and field in r.json()["error"], r.text
            r = svc.client.post("/api/v1/scopes", json={"account": "tr", "scope": {"batch_id": "batch_1"}})
            assert r.status_code == 201
            created = r.json()
            assert set(created) == {"id", "account", "scope", "created_at", "discovered", "complete"}
            r = svc.client.post("/api/v1/scopes", json={"account": "tr", "scope": {"batch_id": "batch_2"}})
            assert r.status_code == 503 and "max_watched_batches" in r.json()["error"]
        with running_service(config, registry) as svc:  # stored: survives a restart
            assert [s["id"] for s in svc.client.get("/api/v1/scopes").json()["scopes"]] == [created["id"]]
            assert svc.client.delete(f"/api/v1/scopes/{created['id']}").status_code == 204
            assert svc.client.delete(f"/api/v1/scopes/{created['id']}").status_code == 404
            assert svc.client.get("/api/v1/scopes").json() == {"scopes": []}


def test_webhook_finishes_a_call_at_once_then_confirms(tmp_path, registry):
    fake = TelzinoFake(speed=1.0)
    with fake.running():
        acc = account("tz", "telzino", fake.url, fake.demo_settings(), webhook_token="hook-secret",
                      poll_interval_seconds={"queued": 60, "dialing": 60, "in_progress": 60, "unknown": 60})
        with running_service(make_config(tmp_path, [acc]), registry) as svc:
            url = f"{svc.url}/api/v1/webhooks/tz"
            call = fake.add_call(steps=[Step("queued", 0), Step("busy", 0.3)])
            call.callback_url, call.callback_headers = url, {"X-Webhook-Token": "hook-secret"}
            svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": call.call_id})
            wait_until(lambda: svc.call("tz", call.call_id)["state"] == "busy", timeout=10,
                       message="terminal from the webhook (polls are a minute apart)")
            assert fake.requests["webhook:202"] == 1
            wait_until(lambda: svc.call("tz", call.call_id)["polls"] >= 1, message="one confirming status request")
            assert svc.metric("outbound_call_webhooks_total", provider="telzino", account="tz", result="accepted") == 1

            body = {"id": "0fc6daf8-7251-4553-9488-867ba0b82d8e", "status": "completed"}
            assert httpx.post(url, json=body, headers={"X-Webhook-Token": "hook-secret"}).status_code == 202
            assert svc.metric("outbound_call_webhooks_total", provider="telzino", account="tz",
                              result="unknown_call") == 1
            assert svc.client.get(f"/api/v1/calls/tz/{body['id']}").status_code == 404  # not stored
            for kwargs in ({}, {"headers": {"X-Webhook-Token": "wrong"}}, {"params": {"token": "wrong"}}):
                r = httpx.post(url, json=body, **kwargs)
                assert r.status_code == 401 and "hook-secret" not in r.text
            assert httpx.post(url, json=body, params={"token": "hook-secret"}).status_code == 202
            for bad in (b"not json", b'{"status": "completed"}', b"[1]"):
                r = httpx.post(url, content=bad, headers={"X-Webhook-Token": "hook-secret",
                                                          "Content-Type": "application/json"})
                assert r.status_code == 400
            assert svc.metric("outbound_call_webhooks_total", provider="telzino", account="tz",
                              result="rejected") == 6


def test_terminal_is_final_and_a_conflicting_report_is_kept_in_history(tmp_path, registry):
    fake = TelzinoFake(speed=1.0)
    with fake.running():
        acc = account("tz", "telzino", fake.url, fake.demo_settings(), webhook_token="hook-secret",
                      poll_interval_seconds={"queued": 60, "dialing": 60, "in_progress": 60, "unknown": 60})
        with running_service(make_config(tmp_path, [acc]), registry) as svc:
            call = fake.add_call(steps=[Step("busy", 0)])
            svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": call.call_id})
            r = httpx.post(f"{svc.url}/api/v1/webhooks/tz", headers={"X-Webhook-Token": "hook-secret"},
                           json={"id": call.call_id, "status": "completed"})
            assert r.status_code == 202 and r.json() == {"result": "accepted"}
            wait_until(lambda: svc.call("tz", call.call_id)["polls"] == 1, message="the confirming request")
            record = svc.call("tz", call.call_id)
            assert record["state"] == "completed"  # the first terminal report stands
            assert [h["provider_status"] for h in record["history"]][-2:] == ["completed", "busy"]
            assert svc.metric("outbound_calls_finished_total", provider="telzino", account="tz", state="busy") == 0
