"""Config: YAML + OCE_ env overrides + *_file secrets; precise errors; check-config CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from outbound_call_exporter.config import Config, load_config, resolve_accounts
from outbound_call_exporter.errors import ConfigError

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
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


def _replace(old, new):
    return lambda text: text.replace(old, new)


#: one case per error class the README lists: (change to the good config, environment, the whole
#: message after "<file>: ")
ERROR_CLASSES = {
    "unreadable file": (None, {}, "cannot read: No such file or directory"),
    "invalid YAML": (_replace("accounts:", "accounts: ["), {}, "line 5 column 3: invalid YAML: "
                     "expected the node content, but found '-'"),
    "not a mapping": (lambda t: "- a\n- b\n", {}, "the top level must be a mapping of keys, not a list"),
    "unknown key": (_replace("listen_address", "listen_adress"), {},
                    "listen_adress: unknown key; did you mean listen_address?"),
    "missing key": (_replace("provider: telzino", "max_requests_per_second: 5"), {},
                    "accounts[0] (telzino-main).provider: required, but missing"),
    "invalid value": (_replace("max_concurrency: 4", "max_concurrency: -1"), {},
                      "accounts[0] (telzino-main).max_concurrency: Input should be greater than or equal to 1"),
    "no accounts": (lambda t: t.split("accounts:")[0], {}, "accounts: no account configured; add at least one "
                    "under accounts: with name, provider and settings (outbound-call-exporter plugins lists the "
                    "providers)"),
    "repeated account name": (lambda t: t + "  - name: telzino-main\n    provider: telzino\n", {},
                              "accounts: account names must be unique; repeated: telzino-main"),
    "unknown provider": (_replace("provider: telzino", "provider: nosuch"), {},
                         "accounts[0] (telzino-main).provider: unknown provider 'nosuch' (available: bland, polyai_agents, "
                         "polyai_connector, polyai_platform, retell, telzino, trillet, twilio, vapi, vonage)"),
    "plugin settings": (_replace("token_file", "tokn_file"), {},
                        "accounts[0] (telzino-main).settings.token: required, but missing\n{file}: accounts[0] "
                        "(telzino-main).settings.tokn_file: unknown key; did you mean token_file?"),
    "secret file": (_replace('token_file: "', 'token_file: "/nonexistent'), {},
                    "accounts[0] (telzino-main).settings.token_file: cannot read /nonexistent{secret}: "
                    "No such file or directory"),
    "secret given twice": (_replace("token_file:", "token: inline\n      token_file:"), {},
                           "accounts[0] (telzino-main).settings.token_file: give either token or token_file, not both"),
    "environment variable": (None, {"OCE_ACCOUNTS__3__SETTINGS__TOKEN": "t"},
                             "accounts[3]: OCE_ACCOUNTS__3__… names no item of accounts (by index or name: "
                             "telzino-main)"),
    "watch scope": (_replace("    settings:", "    watch: [{agent_id: nope}]\n    settings:"), {},
                    "accounts[0] (telzino-main).watch[0].agent_id: must be a UUID (8-4-4-4-12 hexadecimal digits)"),
}


def test_every_error_class_the_readme_lists_has_a_case():
    section = README.split("#### Config errors")[1].split("\n#")[0]
    listed = re.findall(r"^\| ([a-zA-Z ]+) \| `", section, re.M)
    assert listed and set(listed) == set(ERROR_CLASSES)


@pytest.mark.parametrize("name", ERROR_CLASSES)
def test_errors_in_one_voice(files, registry, tmp_path, name):
    mutate, environ, expected = ERROR_CLASSES[name]
    if mutate is None and not environ:
        files = tmp_path / "missing.yml"
    elif mutate is not None:
        files.write_text(mutate(files.read_text()))
    with pytest.raises(ConfigError) as info:
        resolve_accounts(load_config(files, environ=environ), registry)
    assert str(info.value) == f"{files}: " + expected.format(file=files, secret=tmp_path / "token")
    assert "tok-from-file" not in str(info.value) and "Value error" not in str(info.value)


def test_plugin_settings_errors_name_the_file_and_drop_library_prefixes(files, registry):
    files.write_text(files.read_text().replace(f'agent_id: "{AGENT}"', "agent_id: nope").replace(
        "provider: telzino", "provider: telzino\n    base_url: ftp://x"))
    with pytest.raises(ConfigError) as info:
        load_config(files, environ={})
    assert str(info.value) == f"{files}: accounts[0] (telzino-main).base_url: must start with http:// or https://"
    files.write_text(files.read_text().replace("    base_url: ftp://x\n", ""))
    with pytest.raises(ConfigError) as info:
        resolve_accounts(load_config(files, environ={}), registry)
    assert str(info.value) == f"{files}: accounts[0] (telzino-main).settings.agent_id: must be a UUID " \
                              "(8-4-4-4-12 hexadecimal digits)"


def test_poll_intervals_are_checked_per_state(files):
    files.write_text(files.read_text().replace("queued: 2", "queued: 0.01\n      ringing: 2"))
    with pytest.raises(ConfigError) as info:
        load_config(files, environ={})
    assert str(info.value).splitlines() == [
        f"{files}: accounts[0] (telzino-main).poll_interval_seconds.queued: Input should be greater than or "
        "equal to 0.1",
        f"{files}: accounts[0] (telzino-main).poll_interval_seconds.ringing: Input should be 'queued', 'dialing', "
        "'in_progress' or 'unknown'"]


def test_secret_files_from_the_environment(files, registry, tmp_path):
    other = tmp_path / "other"
    other.write_text("tok-from-env-file\n")
    config = load_config(files, environ={"OCE_API_TOKEN_FILE": str(other),
                                         "OCE_ACCOUNTS__TELZINO_MAIN__SETTINGS__TOKEN_FILE": str(other)})
    assert config.api_token.get_secret_value() == "tok-from-env-file"
    [acc] = resolve_accounts(config, registry)
    assert acc.provider.settings.token.get_secret_value() == "tok-from-env-file"


def test_environment_json_and_unrelated_variables(files):
    config = load_config(files, environ={"OCE_ACCOUNTS__0__POLL_INTERVAL_SECONDS": '{"dialing": 4}',
                                         "OCE_SOAK_SECONDS": "5", "OCE_ACCOUNTS__0__SETTINGS__AGENT_ID": AGENT})
    assert config.accounts[0].poll_interval_seconds == {"queued": 2, "in_progress": 15, "dialing": 4}


def test_code_built_config_reads_nothing_else(monkeypatch, tmp_path):
    monkeypatch.setenv("OCE_LISTEN_ADDRESS", "127.0.0.1:1")
    assert Config(store_path=tmp_path / "x.db").listen_address == "0.0.0.0:9877"


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
    assert result.stderr.splitlines() == [
        f"error: {bad}: accounts[0] (a).settings.agent_id: Input should be a valid string"]
    assert "super-secret-value" not in result.stderr + result.stdout
    missing = _cli("check-config", "--config", str(tmp_path / "missing.yml"))
    assert missing.returncode != 0 and "cannot read" in missing.stderr
    empty = tmp_path / "empty.yml"
    empty.write_text("listen_address: 127.0.0.1:0\n")
    for command in ("check-config", "run"):
        result = _cli(command, "--config", str(empty))
        assert result.returncode != 0 and f"{empty}: accounts: no account configured" in result.stderr


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
