"""The REST API: registration, idempotency, reads, listing, unwatching and every refusal."""

from __future__ import annotations

import pytest

from outbound_call_exporter.testing import Step
from outbound_call_exporter_plugins.telzino.fake import TelzinoFake

from conftest import account, break_store, make_config, repair_store, running_service, store_rows, wait_until

pytestmark = pytest.mark.both_stores

AGENT = "123e4567-e89b-12d3-a456-426614174000"
CALL = "0fc6daf8-7251-4553-9488-867ba0b82d8e"


@pytest.fixture(scope="module")
def fake():
    f = TelzinoFake(speed=1.0)
    with f.running():
        yield f


@pytest.fixture
def svc(tmp_path, registry, fake):
    config = make_config(tmp_path, [account("tz", "telzino", fake.url, fake.demo_settings())],
                         max_request_bytes=4096, max_batch=5, max_watched_calls=8)
    with running_service(config, registry) as running:
        yield running


def stored_rows(svc) -> int:
    return store_rows(svc.service.config, "SELECT count(*) FROM {calls}")[0][0]


def test_register_is_idempotent_and_returns_the_record(svc, fake):
    call = fake.add_call(steps=[Step("queued", 0)])
    first = svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": call.call_id})
    assert first.status_code == 201
    record = first.json()
    assert record["account"] == "tz" and record["provider"] == "telzino" and record["call_id"] == call.call_id
    assert record["params"] == {"agent_id": fake.agent_id}  # the account's default
    assert record["state"] == "queued" and record["watching"] is True
    for key in ("provider_status", "reason", "created_at", "answered_at", "ended_at", "duration_seconds",
                "first_seen_at", "last_polled_at", "polls", "poll_errors", "extras", "history"):
        assert key in record
    again = svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": call.call_id})
    assert again.status_code == 200
    assert svc.metric("outbound_calls_registered_total", provider="telzino", account="tz") == 1
    assert svc.client.get(f"/api/v1/calls/tz/{call.call_id}").json()["call_id"] == call.call_id


@pytest.mark.parametrize("body, status, field", [
    ({"account": "nope", "call_id": CALL}, 404, "account"),
    ({"call_id": CALL}, 422, "account"),
    ({"account": "tz"}, 422, "call_id"),
    ({"account": "tz", "call_id": 12345}, 422, "call_id"),
    ({"account": "tz", "call_id": "not-a-uuid"}, 422, "call_id"),
    ({"account": "tz", "call_id": "../x"}, 422, "call_id"),
    ({"account": "tz", "call_id": "a/b"}, 422, "call_id"),
    ({"account": "tz", "call_id": ".."}, 422, "call_id"),
    ({"account": "tz", "call_id": CALL, "params": {"agent_id": "../../admin"}}, 422, "params.agent_id"),
    ({"account": "tz", "call_id": CALL, "params": {"agent_id": AGENT + "%2F"}}, 422, "params.agent_id"),
    ({"account": "tz", "call_id": CALL, "params": {"color": "red"}}, 422, "params.color"),
    ({"account": "tz", "call_id": CALL, "params": ["agent_id"]}, 422, "params"),
    ({"account": "tz", "call_id": CALL, "extra": 1}, 422, "extra"),
    ([], 400, "batch"),
    ("just a string", 400, "JSON object"),
    (42, 400, "JSON object"),
])
def test_bad_registrations_are_refused_and_store_nothing(svc, body, status, field):
    response = svc.client.post("/api/v1/calls", json=body)
    assert response.status_code == status, response.text
    assert field in response.json()["error"]
    assert stored_rows(svc) == 0


@pytest.mark.parametrize("raw, status, content_type", [
    (b'{"account": "tz", "account": "tz", "call_id": "x"}', 400, "application/json"),
    (b"{not json", 400, "application/json"),
    (b"\xff\xfe", 400, "application/json"),
    (b"[" * 2000 + b"]" * 2000, 400, "application/json"),
    (b'{"a": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}", 400, "application/json"),
    (b'{"account": NaN}', 400, "application/json"),
    (b'{"account": "tz", "call_id": "' + CALL.encode() + b'"}', 415, "text/plain"),
    (b"x" * 5000, 413, "application/json"),
])
def test_malformed_bodies_get_4xx_json(svc, raw, status, content_type):
    response = svc.client.post("/api/v1/calls", content=raw, headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    assert response.json()["error"]
    assert stored_rows(svc) == 0


def test_batch_is_all_or_nothing_and_limited(svc, fake):
    good = [{"account": "tz", "call_id": fake.add_call(steps=[Step("queued", 0)]).call_id} for _ in range(3)]
    bad = good + [{"account": "tz", "call_id": "bad id"}]
    response = svc.client.post("/api/v1/calls", json=bad)
    assert response.status_code == 422 and "[3] call_id" in response.json()["error"]
    assert stored_rows(svc) == 0
    too_many = [{"account": "tz", "call_id": CALL}] * 6
    assert svc.client.post("/api/v1/calls", json=too_many).status_code == 413
    ok = svc.client.post("/api/v1/calls", json=good)
    assert ok.status_code == 201
    assert ok.json()["created"] == 3 and len(ok.json()["calls"]) == 3
    assert stored_rows(svc) == 3


def test_max_watched_calls_gives_503(svc, fake):
    batch = [{"account": "tz", "call_id": fake.add_call(steps=[Step("queued", 0)]).call_id} for _ in range(5)]
    assert svc.client.post("/api/v1/calls", json=batch).status_code == 201
    more = [{"account": "tz", "call_id": fake.add_call(steps=[Step("queued", 0)]).call_id} for _ in range(4)]
    response = svc.client.post("/api/v1/calls", json=more)
    assert response.status_code == 503 and "max_watched_calls" in response.json()["error"]
    assert stored_rows(svc) == 5


def test_get_unknown_account_or_call_is_404(svc):
    assert svc.client.get(f"/api/v1/calls/nope/{CALL}").status_code == 404
    response = svc.client.get(f"/api/v1/calls/tz/{CALL}")
    assert response.status_code == 404 and "call_id" in response.json()["error"]
    assert svc.client.delete(f"/api/v1/calls/tz/{CALL}").status_code == 404


def test_delete_stops_watching_and_leaves_the_gauge(svc, fake):
    call = fake.add_call(steps=[Step("queued", 0), Step("dialing", 0.1)])
    svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": call.call_id})
    wait_until(lambda: svc.call("tz", call.call_id)["state"] == "dialing")
    assert svc.metric("outbound_calls", provider="telzino", account="tz", state="dialing") == 1
    response = svc.client.delete(f"/api/v1/calls/tz/{call.call_id}")
    assert response.status_code == 200
    assert response.json()["watching"] is False and response.json()["state"] == "dialing"
    assert svc.metric("outbound_calls", provider="telzino", account="tz", state="dialing") == 0
    polls = fake.requests[f"status:{call.call_id}"]
    again = svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": call.call_id})
    assert again.status_code == 200 and again.json()["watching"] is True  # watched again
    wait_until(lambda: fake.requests[f"status:{call.call_id}"] > polls, message="polled again")


def test_list_filters_and_pages_newest_first(svc, fake):
    ids = []
    for _ in range(5):
        c = fake.add_call(steps=[Step("queued", 0)])
        ids.append(c.call_id)
        svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": c.call_id})
    page = svc.client.get("/api/v1/calls", params={"limit": 2}).json()
    assert [r["call_id"] for r in page["calls"]] == ids[::-1][:2]
    seen = [r["call_id"] for r in page["calls"]]
    while page["next"]:
        page = svc.client.get("/api/v1/calls", params={"limit": 2, "cursor": page["next"]}).json()
        seen += [r["call_id"] for r in page["calls"]]
    assert seen == ids[::-1]
    assert len(svc.client.get("/api/v1/calls", params={"account": "tz", "state": "queued"}).json()["calls"]) == 5
    assert svc.client.get("/api/v1/calls", params={"state": "completed"}).json() == {"calls": [], "next": None}
    assert svc.client.get("/api/v1/calls", params={"since": "2999-01-01T00:00:00Z"}).json()["calls"] == []
    for params, field in [({"state": "bogus"}, "state"), ({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"),
                          ({"cursor": "!!"}, "cursor"), ({"since": "yesterday"}, "since")]:
        response = svc.client.get("/api/v1/calls", params=params)
        assert response.status_code == 400 and field in response.json()["error"]
    assert svc.client.get("/api/v1/calls", params={"account": "nope"}).status_code == 404


def test_health_and_readiness(svc):
    assert svc.client.get("/-/healthy").status_code == 200
    assert svc.client.get("/-/ready").status_code == 200
    assert svc.client.get("/").status_code == 200


def test_api_token_protects_writes(tmp_path, registry, fake):
    config = make_config(tmp_path, [account("tz", "telzino", fake.url, fake.demo_settings())],
                         api_token="s3cret-api-token")
    with running_service(config, registry) as svc:
        body = {"account": "tz", "call_id": CALL, "params": {"agent_id": AGENT}}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-api-token"}):
            response = svc.client.post("/api/v1/calls", json=body, headers=headers)
            assert response.status_code == 401
            assert "s3cret" not in response.text
        assert svc.client.delete(f"/api/v1/calls/tz/{CALL}").status_code == 401
        ok = svc.client.post("/api/v1/calls", json=body, headers={"Authorization": "Bearer s3cret-api-token"})
        assert ok.status_code == 201
        assert svc.client.get(f"/api/v1/calls/tz/{CALL}").status_code == 200  # reads stay open


def test_every_store_failure_the_api_meets_is_a_503_with_a_json_error(svc, fake):
    """The store is changed under the running service (here: its tables renamed away by another
    connection, as a broken restore or a wrong migration would): reads, registrations,
    unwatching and scope writes answer 503 with a JSON error, never 500."""
    call = fake.add_call(steps=[Step("queued", 0)])
    assert svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": call.call_id}).status_code == 201
    scope = svc.client.post("/api/v1/scopes", json={"account": "tz", "scope": {"agent_id": AGENT}})
    assert scope.status_code == 201
    break_store(svc.service.config)
    for method, path, body in (
        ("GET", f"/api/v1/calls/tz/{call.call_id}", None),
        ("GET", "/api/v1/calls", None),
        ("GET", "/", None),
        ("POST", "/api/v1/calls", {"account": "tz", "call_id": CALL}),
        ("DELETE", f"/api/v1/calls/tz/{call.call_id}", None),
        ("POST", "/api/v1/scopes", {"account": "tz", "scope": {"agent_id": "223e4567-e89b-12d3-a456-426614174000"}}),
        ("DELETE", f"/api/v1/scopes/{scope.json()['id']}", None),
    ):
        response = svc.client.request(method, path, json=body)
        assert response.status_code == 503, (method, path, response.text)
        assert "store" in response.json()["error"], (method, path)
    repair_store(svc.service.config)  # the stop writes what waited
