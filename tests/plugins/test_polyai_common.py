"""What the three PolyAI plugins share: call SID formats, registration, secrets in settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from outbound_call_exporter.plugins import build_registry
from outbound_call_exporter_plugins import polyai
from outbound_call_exporter_plugins.polyai.agents import AgentsParams
from outbound_call_exporter_plugins.polyai.connector import ConnectorParams
from outbound_call_exporter_plugins.polyai.platform import PlatformParams

UUID = "550e8400-e29b-41d4-a716-446655440000"
PARAMS = [
    (AgentsParams, {"agent_id": "a", "environment": "live"}),
    (PlatformParams, {}),
    (ConnectorParams, {"account_id": "acc", "project_id": "proj"}),
]


@pytest.mark.parametrize("model, extra", PARAMS)
@pytest.mark.parametrize("call_id", [f"OUT-{UUID}", UUID, UUID.upper(), f"OUT-{UUID.upper()}"])
def test_both_documented_id_shapes_are_accepted(model, extra, call_id):
    assert model(call_id=call_id, **extra).call_id == call_id


@pytest.mark.parametrize("model, extra", PARAMS)
@pytest.mark.parametrize("call_id", [
    "", "OUT-", "out-" + UUID, "OUT_" + UUID, "OUT-" + UUID + "\n", UUID + "\n", " " + UUID,
    "OUT-OUT-" + UUID, UUID[:-1], UUID + "0", UUID.replace("-", ""), "CA" + "0" * 32, "..",
    "OUT-" + UUID + "/..", "OUT-550e8400-e29b-41d4-a716-44665544000g", "12345",
])
def test_anything_else_is_refused_with_a_clear_message(model, extra, call_id):
    with pytest.raises(ValidationError) as info:
        model(call_id=call_id, **extra)
    error = info.value.errors(include_input=False)[0]
    assert error["loc"] == ("call_id",)
    assert "OUT- followed by a UUID, or a UUID" in error["msg"]


def test_one_module_registers_all_three_plugins_and_their_fakes():
    registry = build_registry([("polyai", polyai)])
    assert registry.failures == []
    assert set(registry.providers) == {"polyai_agents", "polyai_platform", "polyai_connector"}
    assert set(registry.fakes) == set(registry.providers)


@pytest.mark.parametrize("name, secret", [("polyai_agents", "api_key"), ("polyai_platform", "auth_token"),
                                          ("polyai_connector", "connector_id")])
def test_the_credential_is_a_required_secret(name, secret):
    cls = build_registry([("polyai", polyai)]).providers[name]
    with pytest.raises(ValidationError) as info:
        cls.Settings()
    assert info.value.errors()[0]["loc"] == (secret,)
    settings = cls.Settings(**{secret: "s3cret-value"})
    assert "s3cret-value" not in repr(settings)
    with pytest.raises(ValidationError):
        cls.Settings(**{secret: "x", "unknown_setting": 1})


@pytest.mark.parametrize("name, secret", [("polyai_agents", "api_key"), ("polyai_platform", "auth_token"),
                                          ("polyai_connector", "connector_id")])
@pytest.mark.parametrize("value", ["", "two words", "line\nbreak", "tab\there", "naïve", "x\r\nX-Evil: 1"])
def test_a_credential_that_cannot_be_a_header_is_refused_without_echoing_it(name, secret, value):
    cls = build_registry([("polyai", polyai)]).providers[name]
    with pytest.raises(ValidationError) as info:
        cls.Settings(**{secret: value})
    [error] = info.value.errors(include_input=False)
    assert error["loc"] == (secret,) and "printable ASCII" in error["msg"]
    if value:
        assert value not in error["msg"]


def test_the_provider_doc_has_every_status_mapping():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "providers" / "polyai.md").read_text()
    rows = set(re.findall(r"^\| `([^`]+)` \| `(\w+)` \|", text, re.MULTILINE))
    registry = build_registry([("polyai", polyai)])
    documented = {
        "polyai_agents": lambda raw: raw.isupper(),
        "polyai_platform": lambda raw: raw.islower(),
        "polyai_connector": lambda raw: True,
    }
    for name, cls in registry.providers.items():
        for raw, state in cls.status_map.items():
            if documented[name](raw):
                assert (raw, state.value) in rows, (name, raw)


@pytest.mark.parametrize("name", ["polyai_agents", "polyai_platform", "polyai_connector"])
def test_default_base_url_is_the_default_regions_server(name):
    cls = build_registry([("polyai", polyai)]).providers[name]
    settings = cls.Settings(**{cls.credential: "k"})
    assert cls.default_base_url_for(settings) == cls.default_base_url
    assert cls(settings).base_url == cls.default_base_url
