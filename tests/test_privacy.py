"""Privacy and access by default (docs/design.md, "Privacy and access by default").

Every installed plugin's destination and metadata fields, found from its own declarations and
its own fake (so a new plugin is covered without touching this file), under each policy,
checked where they could end up: the SQLite store files themselves (main file and WAL), every
API response, `/metrics`, the landing page and the log. Then the write rule on a non-loopback
listener (bound to 0.0.0.0, reached over loopback) and what `check-config` says about it; and
`prune`, which deletes old records from the files themselves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from outbound_call_exporter import CallStatus, State
from outbound_call_exporter.config import Config, param_defaults
from outbound_call_exporter.testing import FakeProvider, Step
from outbound_call_exporter.plugins import Registry
from outbound_call_exporter.privacy import MASK, OMITTED, Privacy, country_code, is_loopback, mask_number
from outbound_call_exporter.store import NewCall, SQLiteStore as Store, Update

from conftest import account, make_config, running_service, stored_text, wait_until

MARK = uuid.uuid4().hex[:8]
CRM = f"CRM-{MARK}"  # a CRM id in every declared metadata field
#: quoted in every failure text a fake can carry (the free-text safety net)
REASON_NUMBER = "+447911123456"
WEBHOOK_TOKEN = f"hook-{MARK}"


def hidden_digits(number: str) -> str:
    """What masking must hide: the digits between the country code and the last two."""
    digits = re.sub(r"\D", "", number)
    return digits[len(country_code(digits)):-2]


@dataclass
class Personal:
    """One plugin's personal data as its fake serves it and the plugin keeps it."""

    plugin: str
    destinations: dict[str, str]  # extras key -> the number its fake serves
    metadata: tuple[str, ...]  # extras keys of free-form metadata

    def forbidden(self) -> list[str]:
        """Strings that must appear nowhere while the destination is masked or omitted."""
        return [hidden_digits(n) for n in self.destinations.values()]


def personal_data(registry: Registry) -> list[Personal]:
    """Each plugin's declared fields, with the values its fake puts there (rendered and parsed
    by the plugin itself, exactly as a poll would)."""
    out = []
    for name, cls in sorted(registry.providers.items()):
        assert name in registry.fakes, f"plugin {name} ships no fake: cannot check its personal data"
        fake = registry.fakes[name](seed=1)
        settings = cls.Settings.model_validate(fake.demo_settings())
        provider = cls(settings, "http://127.0.0.1:9")
        call = fake.add_call(steps=steps(fake, State.COMPLETED))
        params = cls.Params.model_validate({**param_defaults(settings, cls.Params), **call.params,
                                            "call_id": call.call_id})
        body = fake.render(call, len(call.steps) - 1, call.created + 60)
        status = provider.parse_response(params, httpx.Response(200, json=body, request=provider.build_request(params)))
        destinations = {k: status.extras[k] for k in cls.destination_extras if k in status.extras}
        assert set(destinations) == set(cls.destination_extras), f"{name}: its fake does not fill {cls.destination_extras}"
        out.append(Personal(name, destinations, tuple(sorted(cls.metadata_extras))))
    assert any(p.destinations for p in out) and any(p.metadata for p in out)
    return out


def steps(fake: FakeProvider, outcome: State, end: float = 0.6) -> list[Step]:
    return [Step(fake.raw_status[State.QUEUED], 0.0), Step(fake.raw_status[outcome], end)]


# -- masking --------------------------------------------------------------------------------------


@pytest.mark.parametrize("number, masked", [
    ("+18135551234", "+1•••••••34"),  # the design's example
    ("+4915112345678", "+49•••••••78"),
    ("+447911123456", "+44•••••••56"),
    ("+35312345678", "+353•••••••78"),
    ("+7 912 345-67-89", "+7•••••••89"),
    ("8135551234", "•••••••34"),  # no `+`: no knowable country code
    ("12345", MASK),  # too short to show any digit
    ("sip:alice@example.com", MASK),
    (18135551234, "•••••••34"),
    (None, MASK),
])
def test_mask_keeps_at_most_the_country_code_and_the_last_two_digits(number, masked):
    assert mask_number(number) == masked
    assert mask_number(masked) == masked  # idempotent: a status handed between replicas is masked once


def telzino_status(registry: Registry, reason: str | None = None) -> tuple[Any, CallStatus]:
    cls = registry.providers["telzino"]
    return cls, CallStatus(State.FAILED, "failed", reason=reason, extras={
        "to_number": "+18135551234", "request_metadata": {"crm_id": CRM},
        "error": reason, "transcript_id": "de79aee6-ae41-4003-a3f4-ba9d77b59bd8"})


def test_policy_on_one_status(registry):
    cls, status = telzino_status(registry, "could not reach +1 813 555 1234 (8135551234) on 2026-06-11 (id 12345678)")
    masked = Privacy().apply(cls, status)
    assert masked.extras == {"to_number": "+1•••••••34", "error": masked.reason,
                             "transcript_id": "de79aee6-ae41-4003-a3f4-ba9d77b59bd8"}
    assert masked.reason == "could not reach +1•••••••34 (•••••••34) on 2026-06-11 (id 12345678)"
    omitted = Privacy(destination="omit").apply(cls, status)
    assert "to_number" not in omitted.extras and "request_metadata" not in omitted.extras
    assert omitted.reason == f"could not reach {OMITTED} ({OMITTED}) on 2026-06-11 (id 12345678)"
    full = Privacy(destination="full").apply(cls, status)
    assert full.reason == status.reason and full.extras["to_number"] == "+18135551234"
    assert "request_metadata" not in full.extras
    everything = Privacy(destination="full", provider_metadata=True).apply(cls, status)
    assert everything is status
    kept = Privacy(provider_metadata=True).apply(cls, status)
    assert kept.extras["request_metadata"] == {"crm_id": CRM} and kept.extras["to_number"] == "+1•••••••34"


def test_a_number_in_undeclared_fields_is_masked_too(registry):
    """A plugin that forgets a field (or a provider that quotes the number in an error) still
    keeps no full number: the free-text net catches international numbers anywhere."""
    cls = registry.providers["polyai_platform"]  # declares nothing: its bodies carry no number
    status = CallStatus(State.FAILED, "failure", reason="failed to connect to +18135551234",
                        extras={"callee": {"number": "+18135551234", "list": ["+4915112345678"]}})
    out = Privacy().apply(cls, status)
    assert out.reason == "failed to connect to +1•••••••34"
    assert out.extras == {"callee": {"number": "+1•••••••34", "list": ["+49•••••••78"]}}
    odd = Privacy(destination="omit").apply(cls, CallStatus(State.UNKNOWN, "calling +18135551234"))
    assert odd.provider_status == f"calling {OMITTED}"  # stored in the history, logged once


def test_every_builtin_plugin_declares_its_fields(registry):
    declared = {p.plugin: (set(p.destinations), set(p.metadata)) for p in personal_data(registry)}
    assert declared["telzino"] == ({"to_number"}, {"request_metadata"})
    assert declared["trillet"] == ({"phone_number"}, set())
    for name in ("polyai_agents", "polyai_platform", "polyai_connector"):
        assert declared[name] == (set(), set())


# -- end to end: every plugin, every policy, every place -------------------------------------------


POLICIES = {
    "default": {},
    "omit": {"destination": "omit"},
    "full": {"destination": "full"},
    "metadata": {"provider_metadata": True},
}


@pytest.mark.parametrize("policy", POLICIES)
def test_every_plugin_under_each_policy(policy, registry, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    privacy = Privacy(**POLICIES[policy])
    people = {p.plugin: p for p in personal_data(registry)}
    fakes = {name: registry.fakes[name](seed=2) for name in people}
    seen: list[tuple[str, str]] = []
    with ExitStack() as stack:
        for fake in fakes.values():
            stack.enter_context(fake.running())
        accounts = [account(f"p-{name}", name, fake.url, fake.demo_settings()) for name, fake in fakes.items()]
        extra = {"privacy": POLICIES[policy]} if POLICIES[policy] else {}
        svc = stack.enter_context(running_service(make_config(tmp_path, accounts, **extra), registry))
        calls = register_calls(svc, fakes, people)
        records = {}
        for (name, outcome), call_id in calls.items():
            records[name, outcome] = wait_until(
                lambda: (r := svc.call(f"p-{name}", call_id))["state"] == outcome.value and r,
                message=f"{name} {outcome.value}")
            seen.append((f"GET {name} {outcome.value}", json.dumps(records[name, outcome], ensure_ascii=False)))
        seen.append(("GET /api/v1/calls", svc.client.get("/api/v1/calls", params={"limit": 1000}).text))
        seen.append(("GET /metrics", svc.metrics_text()))
        seen.append(("GET /", svc.client.get("/").text))
        seen += store_files(tmp_path, "while running")
    seen += store_files(tmp_path, "after stop")
    seen.append(("log", caplog.text))
    check_records(privacy, people, records)
    check_everywhere(privacy, people, seen)


def register_calls(svc: Any, fakes: dict[str, FakeProvider], people: dict[str, Personal]) -> dict[tuple[str, State], str]:
    """A completed and a failed call per plugin; metadata fields carry `CRM`, failure texts
    quote `REASON_NUMBER`."""
    calls = {}
    for name, fake in fakes.items():
        for outcome in (State.COMPLETED, State.FAILED):
            if outcome not in fake.raw_status:
                continue
            fields: dict[str, Any] = {k: {"crm_id": CRM} for k in people[name].metadata}
            if outcome is State.FAILED:
                fields.update({k: f"{v} (dialled {REASON_NUMBER})"
                               for k, v in fake.terminal_fields(outcome).items() if isinstance(v, str)})
            call = fake.add_call(steps=steps(fake, outcome), outcome=outcome, **fields)
            response = svc.client.post("/api/v1/calls", json={"account": f"p-{name}", "call_id": call.call_id,
                                                              "params": call.params})
            assert response.status_code == 201, response.text
            calls[name, outcome] = call.call_id
    return calls


def store_files(directory: Path, when: str) -> list[tuple[str, str]]:
    files = sorted(directory.glob("calls.db*"))
    assert files, "no store file"
    return [(f"store {f.name} ({when})", f.read_bytes().decode("utf-8", "replace")) for f in files]


def check_records(privacy: Privacy, people: dict[str, Personal], records: dict[tuple[str, State], dict]) -> None:
    for (name, outcome), record in records.items():
        extras, person = record["extras"], people[name]
        for key, number in person.destinations.items():
            expected = {"masked": mask_number(number), "full": number, "omit": None}[privacy.destination]
            assert extras.get(key) == expected, (name, key, extras)
        for key in person.metadata:
            assert extras.get(key) == ({"crm_id": CRM} if privacy.provider_metadata else None), (name, key, extras)
        if outcome is State.FAILED and record["reason"] and "dialled" in record["reason"]:
            quoted = {"masked": mask_number(REASON_NUMBER), "full": REASON_NUMBER, "omit": OMITTED}
            assert quoted[privacy.destination] in record["reason"], record["reason"]
    failed_with_text = [r for (_, o), r in records.items() if o is State.FAILED and "dialled" in (r["reason"] or "")]
    assert failed_with_text, "no plugin carried a failure text: the free-text net was not exercised"


def check_everywhere(privacy: Privacy, people: dict[str, Personal], seen: list[tuple[str, str]]) -> None:
    numbers = [n for p in people.values() for n in p.destinations.values()] + [REASON_NUMBER]
    if privacy.destination == "full":  # the positive control: the grep finds what is kept
        stored = "".join(text for where, text in seen if where.startswith("store"))
        assert all(n in stored for n in numbers), "destination: full should keep the numbers"
        forbidden = []
    else:
        forbidden = [hidden_digits(n) for n in numbers] + [n for n in numbers]
    if not privacy.provider_metadata:
        forbidden += [CRM, '"crm_id"']
    else:
        assert CRM in "".join(text for where, text in seen if where.startswith("store"))
    forbidden.append("john.doe@example.com")  # Trillet's result.metadata: never kept by the plugin
    leaks = [f"{where}: {text[max(0, text.index(f) - 60):text.index(f) + 40]!r}"
             for where, text in seen for f in forbidden if f in text]
    assert not leaks, "personal data leaked:\n" + "\n".join(leaks[:20])
    assert any(where.endswith("-wal (while running)") for where, _ in seen), "the WAL was not checked"


@pytest.mark.both_stores
def test_a_webhook_is_held_to_the_policy(registry, tmp_path):
    """Webhooks enter through their own path: the same policy applies before anything is kept."""
    fake = registry.fakes["telzino"](seed=3)
    with fake.running():
        slow = {"queued": 60, "dialing": 60, "in_progress": 60, "unknown": 60}  # the webhook comes first
        config = make_config(tmp_path, [account("tz", "telzino", fake.url, fake.demo_settings(),
                                                webhook_token=WEBHOOK_TOKEN, poll_interval_seconds=slow)])
        with running_service(config, registry) as svc:
            call = fake.add_call(steps=[Step("queued", 0.0)])
            assert svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": call.call_id,
                                                          "params": call.params}).status_code == 201
            body = {"id": call.call_id, "agent_id": call.params["agent_id"], "status": "failed",
                    "to_number": "+18135551234", "request_metadata": {"crm_id": CRM},
                    "error": f"could not reach {REASON_NUMBER}"}
            response = svc.client.post("/api/v1/webhooks/tz", json=body, headers={"X-Webhook-Token": WEBHOOK_TOKEN})
            assert response.json() == {"result": "accepted"}
            record = wait_until(lambda: (r := svc.call("tz", call.call_id))["state"] == "failed" and r)
            assert record["extras"]["to_number"] == "+1•••••••34" and "request_metadata" not in record["extras"]
            assert record["reason"] == "could not reach +44•••••••56"
    stored = stored_text(config)
    assert call.call_id in stored and "81355512" not in stored and CRM not in stored and "79111234" not in stored


def test_a_call_found_by_a_scope_listing_is_held_to_the_policy(registry, tmp_path):
    """Listings (discovery and bulk refresh) are the third way statuses come in."""
    fake = registry.fakes["telzino"](seed=4, speed=4.0)
    with fake.running():
        acc = account("tz", "telzino", fake.url, fake.demo_settings(), watch=[{"agent_id": fake.agent_id}],
                      poll_interval_seconds={"queued": 0.5, "dialing": 0.5, "in_progress": 0.5, "unknown": 0.5})
        config = make_config(tmp_path, [acc])
        with running_service(config, registry) as svc:
            wait_until(lambda: svc.client.get("/api/v1/scopes").json()["scopes"], message="the config scope")
            call = fake.add_call(outcome=State.COMPLETED, request_metadata={"crm_id": CRM})
            record = wait_until(lambda: (r := svc.client.get(f"/api/v1/calls/tz/{call.call_id}")).status_code == 200
                                and r.json()["state"] == "completed" and r.json(), timeout=60, message="discovered")
            assert record["extras"]["to_number"] == "+1•••••••34" and "request_metadata" not in record["extras"]
            assert svc.metric("outbound_call_discovered_total", provider="telzino", account="tz", source="scope") == 1
    stored = stored_text(config)
    assert call.call_id in stored and "81355512" not in stored and "crm_id" not in stored


# -- access: writes on a non-loopback listener ---------------------------------------------------------


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.53", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("exporter.internal", False),
])
def test_loopback(host, loopback):
    assert is_loopback(host) is loopback


def open_listener(tmp_path: Path, registry: Registry, fake: FakeProvider, **extra: Any):
    accounts = [account("tz", "telzino", fake.url, fake.demo_settings(), webhook_token=WEBHOOK_TOKEN)]
    config = Config(listen_address="0.0.0.0:0", store_path=tmp_path / "calls.db", accounts=accounts, **extra)
    return running_service(config, registry)  # serve() reports the listener as 127.0.0.1


def test_no_open_writes_on_a_shared_network(registry, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    fake = registry.fakes["telzino"](seed=5)
    with fake.running(), open_listener(tmp_path, registry, fake) as svc:
        assert svc.url.startswith("http://127.0.0.1:")
        call = fake.add_call(steps=[Step("queued", 0.0)])
        writes = [("POST", "/api/v1/calls", {"account": "tz", "call_id": call.call_id, "params": call.params}),
                  ("POST", "/api/v1/calls", [{"account": "tz", "call_id": call.call_id, "params": call.params}]),
                  ("DELETE", f"/api/v1/calls/tz/{call.call_id}", None),
                  ("POST", "/api/v1/scopes", {"account": "tz", "scope": {"agent_id": call.params["agent_id"]}}),
                  ("DELETE", "/api/v1/scopes/anything", None)]
        for method, path, body in writes:
            response = svc.client.request(method, path, json=body)
            assert response.status_code == 403, (method, path, response.text)
            assert "set api_token" in response.json()["error"]
        assert svc.client.get("/api/v1/calls").json() == {"calls": [], "next": None}
        assert svc.client.get(f"/api/v1/calls/tz/{call.call_id}").status_code == 404  # nothing was registered
        for path in ("/metrics", "/-/healthy", "/-/ready", "/api/v1/scopes", "/"):
            assert svc.client.get(path).status_code == 200, path
        hook = svc.client.post("/api/v1/webhooks/tz", json={"id": call.call_id, "status": "completed"},
                               headers={"X-Webhook-Token": WEBHOOK_TOKEN})
        assert hook.status_code == 202  # webhooks keep their own token
    assert "no api_token is set: POST/DELETE on the REST API answer 403" in caplog.text


def test_allow_unauthenticated_writes_opens_them_with_a_warning(registry, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    fake = registry.fakes["telzino"](seed=6)
    with fake.running(), open_listener(tmp_path, registry, fake, allow_unauthenticated_writes=True) as svc:
        call = fake.add_call(steps=[Step("queued", 0.0)])
        body = {"account": "tz", "call_id": call.call_id, "params": call.params}
        assert svc.client.post("/api/v1/calls", json=body).status_code == 201
        assert svc.client.delete(f"/api/v1/calls/tz/{call.call_id}").status_code == 200
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "allow_unauthenticated_writes" in r.message]
    assert warnings and "anyone who can reach the port" in warnings[0].message


def test_api_token_on_a_shared_network(registry, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    fake = registry.fakes["telzino"](seed=7)
    with fake.running(), open_listener(tmp_path, registry, fake, api_token="tok-" + MARK) as svc:
        call = fake.add_call(steps=[Step("queued", 0.0)])
        body = {"account": "tz", "call_id": call.call_id, "params": call.params}
        assert svc.client.post("/api/v1/calls", json=body).status_code == 401
        assert svc.client.post("/api/v1/calls", json=body, headers={"Authorization": f"Bearer tok-{MARK}"}).status_code == 201
    assert "api_token" not in caplog.text  # nothing to warn about


def test_loopback_listener_is_unaffected(registry, tmp_path):
    fake = registry.fakes["telzino"](seed=8)
    with fake.running():
        config = make_config(tmp_path, [account("tz", "telzino", fake.url, fake.demo_settings())])
        with running_service(config, registry) as svc:
            call = fake.add_call(steps=[Step("queued", 0.0)])
            body = {"account": "tz", "call_id": call.call_id, "params": call.params}
            assert svc.client.post("/api/v1/calls", json=body).status_code == 201


#: a config needs an account (run, check-config and prune read the same file)
ACCOUNT = {"name": "tz", "provider": "telzino", "settings": {"token": "tz-token"}}


def check_config(tmp_path: Path, **doc: Any) -> subprocess.CompletedProcess:
    path = tmp_path / f"config-{uuid.uuid4().hex[:6]}.yml"
    path.write_text(yaml.safe_dump({"store_path": str(tmp_path / "c.db"), "accounts": [ACCOUNT], **doc}))
    return subprocess.run([sys.executable, "-m", "outbound_call_exporter.cli", "check-config", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_check_config_reports_the_combination(tmp_path):
    refused = check_config(tmp_path)  # the defaults: 0.0.0.0:9877, no api_token
    assert refused.returncode == 0, refused.stderr
    assert "warning: listen_address 0.0.0.0:9877 is not loopback and no api_token is set" in refused.stderr
    assert "privacy: destination masked, provider_metadata false" in refused.stdout
    opened = check_config(tmp_path, allow_unauthenticated_writes=True)
    assert opened.returncode == 0 and "warning: allow_unauthenticated_writes is true" in opened.stderr
    for quiet in (check_config(tmp_path, listen_address="127.0.0.1:9877"),
                  check_config(tmp_path, api_token="t0ken", privacy={"destination": "full"})):
        assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr
    assert "destination full" in quiet.stdout
    wrong = check_config(tmp_path, privacy={"destination": "hashed"})
    assert wrong.returncode != 0 and "privacy.destination" in wrong.stderr


# -- retention: prune -----------------------------------------------------------------------------------


def test_prune_deletes_old_unwatched_records_from_the_files(tmp_path):
    """Records kept before a policy change (or for longer than needed) can be deleted: the
    bytes leave the store files, not just the index."""
    now, day = time.time(), 86400.0
    old_number = f"+1813{uuid.uuid4().int % 10**7:07d}"

    async def fill() -> None:
        store = Store(tmp_path / "calls.db")
        await store.open()
        calls = [NewCall("a", f"c{i}", "telzino", {}, now - age * day) for i, age in enumerate((90, 90, 90, 1))]
        regs = await store.register(calls, "queued")
        finished = {"state": "completed", "watching": 0, "extras": {"to_number": old_number}}
        store.queue(Update(regs[0].seq, {**finished, "ended_at": now - 89 * day}, history=[("completed", "c", now)]))
        store.queue(Update(regs[1].seq, {**finished, "ended_at": now - 5 * day}))  # ended recently: kept
        # regs[2]: registered 90 days ago and still watched: kept; regs[3]: recent
        store.queue(Update(regs[3].seq, {**finished, "ended_at": now - 1 * day}))
        await store.close()

    asyncio.run(fill())
    assert old_number.encode() in b"".join(f.read_bytes() for f in tmp_path.glob("calls.db*"))
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"store_path": str(tmp_path / "calls.db"), "accounts": [ACCOUNT]}))
    cli = [sys.executable, "-m", "outbound_call_exporter.cli", "prune", "--config", str(config)]
    result = subprocess.run([*cli, "--older-than-days", "30"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "deleted 1 call record(s)" in result.stdout
    with sqlite3.connect(tmp_path / "calls.db") as db:
        assert [r[0] for r in db.execute("SELECT call_id FROM calls ORDER BY call_id")] == ["c1", "c2", "c3"]
        assert db.execute("SELECT count(*) FROM history WHERE call_seq = 1").fetchone() == (0,)
    stored = b"".join(f.read_bytes() for f in tmp_path.glob("calls.db*"))
    assert stored.count(old_number.encode()) == 2  # c1 and c3 keep theirs; c0's bytes are gone
    for bad in ("0", "-3", "soon"):
        refused = subprocess.run([*cli, "--older-than-days", bad], capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "older-than-days" in refused.stderr
    missing = tmp_path / "missing.yml"
    missing.write_text(yaml.safe_dump({"store_path": str(tmp_path / "nope.db"), "accounts": [ACCOUNT]}))
    refused = subprocess.run([sys.executable, "-m", "outbound_call_exporter.cli", "prune", "--config", str(missing),
                              "--older-than-days", "1"], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "no store at" in refused.stderr and not (tmp_path / "nope.db").exists()


@pytest.mark.both_stores
def test_prune_while_the_service_runs(registry, tmp_path):
    """`prune` opens the store the service uses: the SQLite file, or the PostgreSQL database
    whose URL comes from store_url_file or OCE_STORE_URL (as the service loads it)."""
    fake = registry.fakes["telzino"](seed=9)
    with fake.running():
        config = make_config(tmp_path, [account("tz", "telzino", fake.url, fake.demo_settings())],
                             privacy={"destination": "full"})
        with running_service(config, registry) as svc:
            calls = [fake.add_call(steps=steps(fake, State.COMPLETED, end=0.2)) for _ in range(3)]
            for call in calls:
                body = {"account": "tz", "call_id": call.call_id, "params": call.params}
                assert svc.client.post("/api/v1/calls", json=body).status_code == 201
            for call in calls:
                wait_until(lambda: not svc.call("tz", call.call_id)["watching"], message="call finished")
            path = tmp_path / "prune.yml"
            doc: dict[str, Any] = {"store_path": str(config.store_path), "accounts": [ACCOUNT]}
            env = dict(os.environ)
            if config.store_url is not None:  # with a password: it must show nowhere
                url = config.store_url.get_secret_value().replace("oce@", "oce:pg-s3cret@")
                (tmp_path / "store_url").write_text(url + "\n")
                doc = {**doc, "store_url_file": str(tmp_path / "store_url")}
            path.write_text(yaml.safe_dump(doc))
            cli = [sys.executable, "-m", "outbound_call_exporter.cli", "prune", "--config", str(path)]
            result = subprocess.run([*cli, "--older-than-days", "1e-9"],  # finished before now
                                    capture_output=True, text=True, timeout=60, env=env)
            assert result.returncode == 0 and "deleted 3 call record(s)" in result.stdout, result
            assert result.stderr == "", result.stderr  # an idle service holds neither the WAL nor a VACUUM
            for call in calls:
                assert svc.client.get(f"/api/v1/calls/tz/{call.call_id}").status_code == 404
            assert "8135551234" not in stored_text(config), "pruned numbers are still in the store"
            if config.store_url is not None:
                assert "pg-s3cret" not in result.stdout and "/t" in result.stdout  # host:port/database
                path.write_text(yaml.safe_dump({"accounts": [ACCOUNT]}))  # the URL from the environment
                env["OCE_STORE_URL"] = url
                again = subprocess.run([*cli, "--older-than-days", "1e-9"], capture_output=True, text=True,
                                       timeout=60, env=env)
                assert again.returncode == 0 and "deleted 0 call record(s)" in again.stdout, again
            fresh = fake.add_call(steps=steps(fake, State.COMPLETED, end=0.2))
            body = {"account": "tz", "call_id": fresh.call_id, "params": fresh.params}
            assert svc.client.post("/api/v1/calls", json=body).status_code == 201
            wait_until(lambda: svc.call("tz", fresh.call_id)["state"] == "completed", message="service still works")
