"""A separately installed plugin is discovered through its entry point, exactly like the built-ins.

`examples/third-party-plugin` is pip-installed (once per module) into a temporary `--target`
directory that is on `sys.path` only inside the `installed_plugin` fixture, so it never stays
registered for other tests. docs/writing-a-plugin.md shows that example's code; the last tests
check the page and the files agree.
"""

from __future__ import annotations

import base64
import importlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from outbound_call_exporter import State
from outbound_call_exporter import plugins as plugin_host
from outbound_call_exporter.hookspecs import PROJECT

from conftest import account, make_config, running_service, wait_until

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "third-party-plugin"
GUIDE = ROOT / "docs" / "writing-a-plugin.md"
MODULE = "oce_sample_calls"
NAME = "sample_calls"


def _offline_backend() -> bool:
    """setuptools can build a wheel without downloading anything (needs `wheel` before 70.1)."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    import setuptools

    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="module")
def install_dir(tmp_path_factory) -> Path:
    """`pip install` the example (a copy, so build files never land in the repo) into a target dir."""
    base = tmp_path_factory.mktemp("third-party")
    source, target = base / "src", base / "site"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    offline = ["--no-index", "--no-build-isolation"] if _offline_backend() else []
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
         *offline, "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(target.glob(f"{MODULE}-*.dist-info/entry_points.txt"))
    return target


def _names() -> set[str]:
    return {ep.name for ep in importlib.metadata.entry_points(group=PROJECT)}


@pytest.fixture
def installed_plugin(install_dir):
    """The example importable and discoverable for one test; afterwards, gone without a trace."""
    saved_registry = plugin_host._registry
    plugin_host._registry = None  # load_registry() discovers afresh, as at process start
    sys.path.insert(0, str(install_dir))
    importlib.invalidate_caches()
    try:
        yield install_dir
    finally:
        sys.path.remove(str(install_dir))
        for module in [m for m in sys.modules if m == MODULE or m.startswith(MODULE + ".")]:
            del sys.modules[module]
        importlib.invalidate_caches()
        plugin_host._registry = saved_registry
    assert NAME not in _names()


def test_not_discoverable_without_installing():
    assert NAME not in _names() and importlib.util.find_spec(MODULE) is None


def test_discovered_through_its_entry_point_like_the_builtins(installed_plugin):
    entry_points = {ep.name: ep for ep in importlib.metadata.entry_points(group=PROJECT)}
    assert {"telzino", "trillet", NAME} <= set(entry_points)
    assert entry_points[NAME].value == MODULE and entry_points[NAME].dist.name == "oce-sample-calls"

    registry = plugin_host.load_registry()  # the very function `run`, `demo` and `plugins` use
    assert registry.failures == []  # no name collides with a built-in (the built-in `twilio` included)
    assert {"telzino", "trillet", "twilio", NAME} <= set(registry.providers)
    assert registry.providers[NAME].__module__ == MODULE
    assert registry.fakes[NAME].__module__ == f"{MODULE}.fake"
    assert registry.sources[f"register_providers{NAME}"] == NAME


def test_plugins_command_lists_it(install_dir):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(install_dir), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "outbound_call_exporter.cli", "plugins"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert re.search(rf"^{NAME}\s+—\s+Twilio-compatible Calls API", result.stdout, re.M), result.stdout
    assert "account_sid*" in result.stdout and "auth_token†*" in result.stdout


def test_running_service_polls_it_and_exports_its_calls(installed_plugin, tmp_path):
    registry = plugin_host.load_registry()
    fake = registry.fakes[NAME](speed=20.0, seed=2)
    outcomes = [State.COMPLETED, State.COMPLETED, State.BUSY, State.NO_ANSWER, State.FAILED, State.CANCELLED]
    labels = {"provider": NAME, "account": "tw"}
    with fake.running():
        config = make_config(tmp_path, [account("tw", NAME, fake.url, fake.demo_settings())])
        with running_service(config, registry) as svc:
            calls = [fake.add_call(outcome=o) for o in outcomes]
            response = svc.client.post("/api/v1/calls", json=[{"account": "tw", "call_id": c.call_id} for c in calls])
            assert response.status_code == 201, response.text
            refused = svc.client.post("/api/v1/calls", json={"account": "tw", "call_id": "not-a-call-sid"})
            assert refused.status_code == 422 and "call_id" in refused.json()["error"]

            wait_until(lambda: sum(svc.metric("outbound_calls_finished_total", state=o.value, **labels)
                                   for o in set(outcomes)) == len(outcomes), timeout=30, message="all terminal")
            for outcome in set(outcomes):
                assert svc.metric("outbound_calls_finished_total", state=outcome.value, **labels) == \
                    outcomes.count(outcome)
            assert svc.metric("outbound_calls_registered_total", **labels) == len(outcomes)
            assert svc.metric("outbound_call_account_up", **labels) == 1
            for call in calls:
                rec = svc.call("tw", call.call_id)
                assert rec["provider"] == NAME and rec["state"] == call.outcome.value
                assert rec["created_at"] and rec["ended_at"]
            assert fake.credentials["auth_token"] not in svc.metrics_text()


# -- the guide shows the tested code ------------------------------------------------------------


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)


def test_guide_shows_the_example_code_verbatim():
    python, toml = _blocks("python"), _blocks("toml")
    assert python[0] == (EXAMPLE / MODULE / "__init__.py").read_text(encoding="utf-8")
    assert toml[0] == (EXAMPLE / "pyproject.toml").read_text(encoding="utf-8")


def test_guide_unit_test_snippet_runs(installed_plugin):
    module = importlib.import_module(MODULE)
    snippet = _blocks("python")[1]
    exec(compile(snippet, str(GUIDE), "exec"), {**vars(module), "httpx": httpx, "State": State})


def test_example_request_has_the_calls_api_shape(installed_plugin):
    module = importlib.import_module(MODULE)
    sid, call_sid = "AC" + "a" * 32, "CA" + "b" * 32
    provider = module.SampleCalls(module.SampleCallsSettings(account_sid=sid, auth_token="tok"))
    request = provider.build_request(module.SampleCallsParams(call_id=call_sid))
    assert str(request.url) == f"https://calls.example.com/2010-04-01/Accounts/{sid}/Calls/{call_sid}.json"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"{sid}:tok".encode()).decode()
