"""The PolyAI fakes speak their docs, and each plugin reads its fake over real loopback HTTP."""

from __future__ import annotations

import httpx
import pytest

from outbound_call_exporter import ErrorReason, PollError, State
from outbound_call_exporter.testing import Step
from outbound_call_exporter_plugins.polyai.agents import PolyAIAgents
from outbound_call_exporter_plugins.polyai.connector import PolyAIConnector
from outbound_call_exporter_plugins.polyai.fakes import QUEUE_TIMEOUT, AgentsFake, ConnectorFake, PlatformFake
from outbound_call_exporter_plugins.polyai.platform import PolyAIPlatform

from conftest import wait_until

PLUGINS = [(PolyAIAgents, AgentsFake), (PolyAIPlatform, PlatformFake), (PolyAIConnector, ConnectorFake)]
IDS = [p.name for p, _ in PLUGINS]
#: the doc's key set of each status body
DOC_KEYS = {
    "polyai_agents": {"callSid", "status", "reason"},
    "polyai_platform": {"status", "reason"},
    "polyai_connector": {"call_sid", "account_id", "project_id", "client_env", "connector_id", "created_at",
                         "status", "last_updated", "event_history"},
}


def plugin_for(cls, fake, **settings):
    return cls(cls.Settings(**{**fake.demo_settings(), **settings}), fake.url)


def poll(plugin, fake_call, client):
    params = plugin.Params(call_id=fake_call.call_id, **fake_call.params)
    request = plugin.build_request(params)
    return plugin.parse_response(params, client.send(request))


@pytest.fixture
def client():
    with httpx.Client(timeout=5, trust_env=False) as c:
        yield c


@pytest.mark.parametrize("cls, fake_cls", PLUGINS, ids=IDS)
def test_plugin_follows_a_full_lifecycle_at_its_fake(cls, fake_cls, client):
    fake = fake_cls(speed=50.0, seed=3)
    with fake.running():
        plugin = plugin_for(cls, fake)
        call = fake.add_call(outcome=State.COMPLETED)
        assert call.call_id.startswith("OUT-")
        seen = []

        def terminal():
            status = poll(plugin, call, client)
            if not seen or seen[-1] != status.provider_status:
                seen.append(status.provider_status)
            return status.state.terminal and status

        status = wait_until(terminal, timeout=10, interval=0.01, message="terminal status")
        assert status.state is State.COMPLETED
        assert seen[0] == fake.raw_status[State.QUEUED] and seen[-1] == fake.raw_status[State.COMPLETED]
        assert set(seen) <= set(cls.status_map)


@pytest.mark.parametrize("cls, fake_cls", PLUGINS, ids=IDS)
def test_bodies_have_exactly_the_documented_fields(cls, fake_cls, client):
    fake = fake_cls()
    with fake.running():
        call = fake.add_call(steps=[Step(fake.raw_status[State.QUEUED], 0)])
        request = plugin_for(cls, fake).build_request(cls.Params(call_id=call.call_id, **call.params))
        response = client.send(request)
        assert response.status_code == 200
        assert set(response.json()) == DOC_KEYS[cls.name]


@pytest.mark.parametrize("cls, fake_cls", PLUGINS, ids=IDS)
def test_wrong_or_missing_credential_is_401(cls, fake_cls, client):
    fake = fake_cls()
    with fake.running():
        call = fake.add_call()
        secret = next(iter(fake.credentials))
        plugin = plugin_for(cls, fake, **{secret: "wrong"})
        with pytest.raises(PollError) as info:
            poll(plugin, call, client)
        assert info.value.reason is ErrorReason.UNAUTHORIZED
        request = plugin.build_request(plugin.Params(call_id=call.call_id, **call.params))
        header = next(h for h in request.headers if h.lower().startswith("x-"))
        del request.headers[header]
        assert client.send(request).status_code == 401


@pytest.mark.parametrize("cls, fake_cls", PLUGINS, ids=IDS)
def test_malformed_call_sid_is_400_and_unknown_call_404(cls, fake_cls, client):
    fake = fake_cls()
    with fake.running():
        plugin = plugin_for(cls, fake)
        good = plugin.build_request(plugin.Params(call_id="OUT-550e8400-e29b-41d4-a716-446655440000",
                                                  **fake.new_params()))
        response = client.send(good)
        assert response.status_code == 404 and response.json() == {"error": "Call SID not found"}
        bad = httpx.Request("GET", str(good.url).replace("OUT-550e8400", "OUT-zzz"), headers=good.headers)
        response = client.send(bad)
        assert response.status_code == 400 and "call SID" in response.json()["error"]


@pytest.mark.parametrize("cls, fake_cls", PLUGINS, ids=IDS)
def test_status_is_gone_after_retention(cls, fake_cls, client):
    fake = fake_cls(speed=1.0, retention_seconds=0.3)
    with fake.running():
        plugin = plugin_for(cls, fake)
        call = fake.add_call(steps=[Step(fake.raw_status[State.QUEUED], 0),
                                    Step(fake.raw_status[State.COMPLETED], 0.1)])
        assert poll(plugin, call, client).state in (State.QUEUED, State.COMPLETED)

        def gone():
            try:
                poll(plugin, call, client)
            except PollError as exc:
                return exc.reason is ErrorReason.NOT_FOUND
            return False

        wait_until(gone, timeout=5, message="404 after retention")


@pytest.mark.parametrize("query, code", [("", 400), ("?environment=production", 400), ("?environment=LIVE", 400),
                                         ("?environment=live", 200), ("?environment=sandbox", 404)])
def test_agents_fake_requires_the_environment_the_call_was_made_in(query, code, client):
    fake = AgentsFake()
    with fake.running():
        call = fake.add_call()
        url = f"{fake.url}/v1/agents/{fake.agent_id}/telephony/outbound-calls/{call.call_id}/status{query}"
        assert client.get(url, headers={"X-API-KEY": fake.credentials["api_key"]}).status_code == code


@pytest.mark.parametrize("fake_cls", [AgentsFake, PlatformFake])
def test_outcome_fakes_fail_with_the_documented_reason(fake_cls, client):
    fake = fake_cls(speed=1000.0)
    with fake.running():
        call = fake.add_call(outcome=State.FAILED)
        assert [s.status for s in call.steps] == [fake.raw_status[State.QUEUED], fake.raw_status[State.FAILED]]
        plugin = plugin_for({"polyai_agents": PolyAIAgents, "polyai_platform": PolyAIPlatform}[fake.provider], fake)
        status = wait_until(lambda: (s := poll(plugin, call, client)).state.terminal and s, timeout=5)
        assert status.state is State.FAILED and status.reason == QUEUE_TIMEOUT


def test_connector_history_grows_with_the_call(client):
    fake = ConnectorFake(speed=1.0)
    with fake.running():
        call = fake.add_call(steps=[Step("CREATED", 0), Step("queued", 0.05), Step("ringing", 0.1),
                                    Step("in-progress", 0.15), Step("busy", 0.2)])
        plugin = plugin_for(PolyAIConnector, fake)
        status = wait_until(lambda: (s := poll(plugin, call, client)).state.terminal and s, timeout=5)
        assert [e.provider_status for e in status.events] == ["CREATED", "queued", "ringing", "in-progress", "busy"]
        assert status.state is State.BUSY and status.extras == {"client_env": "production"}


@pytest.mark.parametrize("fake_cls", [AgentsFake, PlatformFake, ConnectorFake])
def test_demo_calls_only_draw_outcomes_the_api_can_report(fake_cls):
    fake = fake_cls(seed=7)
    outcomes = {fake.demo_call().outcome for _ in range(300)}
    expected = {State.COMPLETED, State.FAILED} if fake_cls is not ConnectorFake else \
        {State.COMPLETED, State.FAILED, State.BUSY, State.NO_ANSWER, State.CANCELLED}
    assert outcomes == expected
