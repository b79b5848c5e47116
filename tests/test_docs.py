"""Guard tests: the docs a user reads stay true (datasette's tests/test_docs.py is the model).

Every public name and every hook is documented; the README's plugin example is real code that
runs; the README's call record has the API's shape; docs cite only files in the repository.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import types
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

import outbound_call_exporter
from outbound_call_exporter import PollError, State, hookspecs
from outbound_call_exporter.api_models import CallRecord
from outbound_call_exporter.plugins import build_registry, make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
GUIDE = (ROOT / "docs" / "writing-a-plugin.md").read_text(encoding="utf-8")
HOOKS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
               if hasattr(fn, f"{hookspecs.PROJECT}_spec"))


def _section(text: str, heading: str) -> str:
    return text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


@pytest.mark.parametrize("name", outbound_call_exporter.__all__)
def test_every_public_name_is_documented(name):
    assert f"| `{name}` |" in _section(GUIDE, "## 7. Reference: the public API"), \
        f"{name} is in outbound_call_exporter.__all__ but not in docs/writing-a-plugin.md's reference"


def test_the_reference_lists_only_public_names():
    listed = re.findall(r"^\| `([A-Za-z_]+)` \|", _section(GUIDE, "## 7. Reference: the public API"), re.M)
    assert sorted(listed) == sorted(outbound_call_exporter.__all__)


def test_hook_specs_are_found():
    assert HOOKS == sorted(n for n in dir(make_plugin_manager().hook) if not n.startswith("_"))
    assert "register_providers" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    signature = f"`{hook}({', '.join(inspect.signature(getattr(hookspecs, hook)).parameters)})`"
    assert signature in _section(GUIDE, "## 6. Hooks"), f"{hook} is not in docs/writing-a-plugin.md's hooks"
    assert signature in _section(README, "## Writing a provider plugin"), f"{hook} is not in the README"


@pytest.fixture
def acme(monkeypatch):
    """The README's example as the module `acme_exporter_plugin` (as its entry point names it)."""
    [code] = _blocks(_section(README, "## Writing a provider plugin"), "python")
    module = types.ModuleType("acme_exporter_plugin")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # pydantic resolves annotations there
    exec(compile(code, "README.md", "exec"), module.__dict__)
    return module


def test_readme_plugin_example_registers_and_validates(acme):
    registry = build_registry([("acme", acme)])
    assert registry.failures == [] and "acme" in registry.providers
    [toml] = _blocks(_section(README, "## Writing a provider plugin"), "toml")
    assert f"[project.entry-points.{hookspecs.PROJECT}]" in toml


def test_readme_plugin_example_builds_requests_and_parses_responses(acme):
    provider = acme.Acme(acme.AcmeSettings(api_key="k-123"))
    call = acme.AcmeParams(call_id="c-1")
    request = provider.build_request(call)
    assert str(request.url) == "https://api.acme.example/v1/calls/c-1" and request.headers["X-Api-Key"] == "k-123"
    with pytest.raises(ValidationError):
        acme.AcmeParams(call_id="../admin")
    done = provider.parse_response(call, httpx.Response(200, json={"status": "done", "ended_at": 1_700_000_000},
                                                        request=request))
    assert done.state is State.COMPLETED and done.ended_at.timestamp() == 1_700_000_000
    with pytest.raises(PollError, match="`status` is missing"):  # the host's check, not the plugin's
        provider.parse_response(call, httpx.Response(200, json={"state": "done"}, request=request))
    with pytest.raises(ValidationError, match="sent as an HTTP header"):
        acme.AcmeSettings(api_key="key with spaces\n")


def test_readme_call_record_has_the_apis_shape():
    [record] = [b for b in _blocks(README, "json") if '"history"' in b]
    CallRecord.model_validate(json.loads(record.replace("…", "x")))


CITED = re.compile(r"\.\./shared|provider-docs/|(?<![\w/])design\.md")


def test_code_and_docs_cite_only_files_in_the_repository():
    files = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("docs/providers/*.md"),
             *ROOT.glob("exporter/*.py"), *ROOT.glob("plugins/**/*.py"), *ROOT.glob("tests/**/*.py")]
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in files if path.name != "test_docs.py"
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if CITED.search(line)]
    assert not offenders, f"cite docs/design.md or docs/providers/reference/ instead: {offenders}"


def test_relative_links_in_the_docs_resolve():
    for path in [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("docs/providers/*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            assert (path.parent / target).exists(), f"{path.relative_to(ROOT)} links to missing {target}"
