"""Every installed plugin describes each of its settings and per-call params (and its call id),
and `plugins` / `plugins --json` show those descriptions."""

from __future__ import annotations

import json
import subprocess
import sys


def plugins(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "outbound_call_exporter.cli", "plugins", *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_setting_and_param_of_every_installed_plugin_is_described():
    listed = json.loads(plugins("--json"))["plugins"]
    assert {"telzino", "trillet", "polyai_agents", "polyai_platform", "polyai_connector"} <= {p["name"] for p in listed}
    text = plugins()
    for plugin in listed:
        fields = [(kind, f) for kind in ("settings", "params") for f in plugin[kind]]
        undescribed = [f"{kind}.{f['name']}" for kind, f in fields if not f["description"].strip()]
        assert not undescribed, f"{plugin['name']}: no description for {undescribed}"
        assert plugin["call_id"].strip(), f"{plugin['name']}: call_id has no description"
        for _, f in fields:
            assert f["description"] in text
    assert "(no description)" not in text
