"""Plugin host: discovery, validation, isolation of broken plugins, and the `plugins` command."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import httpx
import pytest

from outbound_call_exporter import CallParams, CallStatus, Provider, ProviderSettings, State, hookimpl
from outbound_call_exporter import plugins as plugin_host
from outbound_call_exporter.hookspecs import PROJECT


class Good(Provider[ProviderSettings, CallParams]):
    name = "good"
    default_base_url = "https://good.example"
    Settings = ProviderSettings
    Params = CallParams
    status_map = {"done": State.COMPLETED}
    cadence = {State.QUEUED: 1, State.DIALING: 1, State.IN_PROGRESS: 1, State.UNKNOWN: 1}

    def build_request(self, call):
        return httpx.Request("GET", self.url("calls", call.call_id))

    def parse_body(self, body):
        return CallStatus(state=self.normalize(body["status"]), provider_status=body["status"])


class GoodPlugin:
    @hookimpl
    def register_providers(self, register):
        register(Good)


def _plugin(cls):
    class P:
        @hookimpl
        def register_providers(self, register):
            register(cls)
    return P()


def test_hook_register_providers_registers_a_provider():
    registry = plugin_host.build_registry([("good", GoodPlugin())])
    assert registry.providers == {"good": Good} and registry.failures == []


def test_hook_register_fakes_registers_a_fake():
    from outbound_call_exporter_plugins.telzino.fake import TelzinoFake

    class P:
        @hookimpl
        def register_fakes(self, register):
            register(TelzinoFake)

    registry = plugin_host.build_registry([("p", P())])
    assert registry.fakes == {"telzino": TelzinoFake}


class NoCadence(Good):
    name = "nocadence"
    cadence = {State.QUEUED: 1}


class BadName(Good):
    name = "Bad Name!"


class NoBuild(Provider):
    name = "nobuild"
    default_base_url = "https://x.example"
    Settings = ProviderSettings
    Params = CallParams
    status_map = {"x": State.COMPLETED}
    cadence = Good.cadence


class Raises:
    @hookimpl
    def register_providers(self, register):
        raise RuntimeError("boom")


class Typo:
    @hookimpl
    def register_provider(self, register):  # not a hook of ours
        pass


@pytest.mark.parametrize("bad, message", [
    (_plugin(NoCadence), "cadence needs a positive interval for dialing"),
    (_plugin(BadName), "name must match"),
    (_plugin(NoBuild), "build_request is not implemented"),
    (_plugin(object), "is not a Provider subclass"),
    (_plugin(Good), "already registered"),
    (Raises(), "boom"),
    (Typo(), "register_provider"),
])
def test_a_broken_plugin_is_reported_and_does_not_take_others_down(bad, message):
    registry = plugin_host.build_registry([("good", GoodPlugin()), ("bad", bad)])
    assert "good" in registry.providers
    assert len(registry.failures) == 1
    assert registry.failures[0].source == "bad"
    assert message in registry.failures[0].error


def test_import_failure_of_an_entry_point_is_reported(monkeypatch):
    real = importlib.metadata.entry_points

    def entry_points(group):
        eps = list(real(group=group))
        return eps + [importlib.metadata.EntryPoint("broken", "no_such_module_for_tests", PROJECT)]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(plugin_host, "_registry", None)
    try:
        registry = plugin_host.load_registry()
        assert "telzino" in registry.providers
        [failure] = registry.failures
        assert failure.source == "broken" and "ModuleNotFoundError" in failure.error
    finally:
        plugin_host._registry = None


def test_builtin_plugins_come_from_entry_points():
    names = {ep.name for ep in importlib.metadata.entry_points(group=PROJECT)}
    assert "telzino" in names
    assert "telzino" in plugin_host.load_registry().providers


def test_plugins_command_lists_settings_and_params():
    result = subprocess.run([sys.executable, "-m", "outbound_call_exporter.cli", "plugins", "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    telzino = rows["telzino"]
    assert {f["name"]: f["secret"] for f in telzino["settings"]} == {"token": True, "agent_id": False}
    assert [f["name"] for f in telzino["params"]] == ["agent_id"]
    assert telzino["statuses"]["dispatched"] == "queued"
    text = subprocess.run([sys.executable, "-m", "outbound_call_exporter.cli", "plugins"],
                          capture_output=True, text=True, timeout=60).stdout
    assert "token†*" in text and "agent_id" in text


def test_every_hook_spec_is_documented_in_the_readme():
    from pathlib import Path

    from outbound_call_exporter import hookspecs

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    specs = [name for name in dir(hookspecs) if name.startswith("register_")]
    assert specs
    for name in specs:
        assert f"`{name}(register)`" in readme, name


def test_public_api_is_exactly_all():
    import outbound_call_exporter

    public = {name for name in dir(outbound_call_exporter) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(outbound_call_exporter, name)).__name__ == "module"}
    assert public - modules == set(outbound_call_exporter.__all__) - {"__version__"}
