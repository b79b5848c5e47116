"""Config: YAML + OCE_ env overrides + *_file secrets; precise errors; check-config CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from outbound_call_exporter.config import load_config, resolve_accounts
from outbound_call_exporter.errors import ConfigError

AGENT = "123e4567-e89b-12d3-a456-426614174000"

GOOD = f"""
listen_address: "127.0.0.1:9999"
store_path: "{{store}}"
accounts:
  - name: telzino-main
    provider: telzino
    max_concurrency: 4
    poll_interval_seconds:
      queued: 2
      in_progress: 15
    settings:
      token_file: "{{secret}}"
      agent_id: "{AGENT}"
"""


@pytest.fixture
def files(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("tok-from-file\n")
    path = tmp_path / "config.yml"
    path.write_text(GOOD.format(store=tmp_path / "x" / "calls.db", secret=secret))
    return path


def test_yaml_file_secret_file_and_defaults(files, registry):
    config = load_config(files, environ={})
    assert config.listen_address == "127.0.0.1:9999"
    assert config.max_watch_seconds == 21600
    assert config.histogram_buckets_seconds[0] == 5 and config.histogram_buckets_seconds[-1] == 7200
    [acc] = resolve_accounts(config, registry)
    assert acc.provider.settings.token.get_secret_value() == "tok-from-file"
    assert acc.cadence[acc.provider.status_map["queued"]] == 2
    assert acc.defaults == {"agent_id": AGENT}
    assert "tok-from-file" not in repr(config) and "tok-from-file" not in repr(acc.provider.settings)


def test_env_overrides_by_index_and_by_account_name(files, registry):
    config = load_config(files, environ={
        "OCE_LISTEN_ADDRESS": "127.0.0.1:1234",
        "OCE_ACCOUNTS__0__MAX_CONCURRENCY": "9",
        "OCE_ACCOUNTS__TELZINO_MAIN__SETTINGS__AGENT_ID": "00000000-0000-0000-0000-000000000000",
        "OCE_HISTOGRAM_BUCKETS_SECONDS": "[1, 2, 3]",
        "OCE_API_TOKEN": "api-tok",
        "UNRELATED": "x",
    })
    assert config.listen_address == "127.0.0.1:1234"
    assert config.accounts[0].max_concurrency == 9
    assert config.accounts[0].settings["agent_id"] == "00000000-0000-0000-0000-000000000000"
    assert config.histogram_buckets_seconds == [1, 2, 3]
    assert config.api_token.get_secret_value() == "api-tok"


@pytest.mark.parametrize("mutate, expected", [
    (lambda t: t.replace("provider: telzino", "provider: nosuch"), "accounts[0] (telzino-main).provider: unknown provider 'nosuch'"),
    (lambda t: t.replace("max_concurrency: 4", "max_concurrency: -1"), "accounts[0] (telzino-main).max_concurrency"),
    (lambda t: t.replace("queued: 2", "queued: 0.01"), "poll_interval_seconds"),
    (lambda t: t.replace("queued: 2", "ringing: 2"), "poll_interval_seconds.ringing"),
    (lambda t: t.replace(f'agent_id: "{AGENT}"', 'agent_id: "nope"'), "settings: agent_id"),
    (lambda t: t.replace("listen_address", "listen_adress"), "listen_adress: Extra inputs are not permitted"),
    (lambda t: t + "  - name: telzino-main\n    provider: telzino\n", "unique"),
    (lambda t: t.replace("accounts:", "accounts: ["), "invalid YAML"),
])
def test_errors_name_the_field(files, registry, mutate, expected):
    files.write_text(mutate(files.read_text()))
    with pytest.raises(ConfigError) as info:
        resolve_accounts(load_config(files, environ={}), registry)
    assert expected in str(info.value)
    assert str(files) in str(info.value) or "accounts[0]" in str(info.value)
    assert "tok-from-file" not in str(info.value)


def test_missing_secret_file_is_named(files):
    files.write_text(files.read_text().replace("token_file: \"", "token_file: \"/nonexistent"))
    with pytest.raises(ConfigError, match="settings.token_file: cannot read /nonexistent"):
        load_config(files, environ={})


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "outbound_call_exporter.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_check_config_cli(files, tmp_path):
    ok = _cli("check-config", "--config", str(files))
    assert ok.returncode == 0, ok.stderr
    assert "telzino-main (telzino)" in ok.stdout
    bad = tmp_path / "bad.yml"
    bad.write_text("accounts:\n  - name: a\n    provider: telzino\n    settings: {token: super-secret-value, agent_id: 42}\n")
    result = _cli("check-config", "--config", str(bad))
    assert result.returncode != 0
    assert "accounts[0] (a).settings" in result.stderr
    assert "super-secret-value" not in result.stderr + result.stdout
    missing = _cli("check-config", "--config", str(tmp_path / "missing.yml"))
    assert missing.returncode != 0 and "cannot read" in missing.stderr


def test_version_and_help():
    assert _cli("--version").stdout.startswith("outbound-call-exporter ")
    for sub in ("run", "demo", "watch", "plugins", "check-config"):
        assert _cli(sub, "--help").returncode == 0


def test_rate_limit_defaults_to_the_plugins_documented_limit(files, registry):
    [acc] = resolve_accounts(load_config(files, environ={}), registry)
    assert acc.config.max_requests_per_second == 20  # Telzino publishes none
    trillet = files.read_text().replace("provider: telzino", "provider: trillet").replace(
        "token_file", "api_key_file").replace(f'agent_id: "{AGENT}"', 'workspace_id: "ws"')
    files.write_text(trillet)
    [acc] = resolve_accounts(load_config(files, environ={}), registry)
    assert acc.config.max_requests_per_second == 1  # Trillet's developer plan: 60 per minute
    files.write_text(trillet.replace("max_concurrency: 4", "max_concurrency: 4\n    max_requests_per_second: 5"))
    [acc] = resolve_accounts(load_config(files, environ={}), registry)
    assert acc.config.max_requests_per_second == 5
