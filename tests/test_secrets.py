"""Secrets never leave: recognisable secrets for every secret setting of every installed plugin
(found from `load_registry().providers` and their Settings' `SecretStr` fields, so a new plugin
is covered without touching this file), then everything that would naturally echo them, then a
grep of every output for them.

Exercised: successful polls (the PolyAI connector echoes its `connector_id` in every body),
refused credentials (401 on every poll), connection errors, provider error bodies that quote
the key (401, 400, 429, 500), malformed and wrong-shaped bodies that quote it, debug logging, `check-config` on good and bad configs (secrets from YAML, `*_file` and env vars),
`plugins`, `watch` with a wrong token, and REST API errors built from secret-looking input.
Grepped: the service log, every CLI output, `/metrics`, every API response, and the store files.
The same grep looks for personal data under the default `privacy` policy: the digits a masked
destination hides and the metadata each plugin declares (from each plugin's own fake, as in
test_privacy.py), so a new plugin or a new output is covered here too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import typing
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from outbound_call_exporter import State
from outbound_call_exporter.testing import FakeProvider, Step, faults
from outbound_call_exporter.plugins import load_registry

from conftest import wait_until
from test_privacy import personal_data

MARK = uuid.uuid4().hex[:10]
API_TOKEN = f"S3CR3T-api-token-{MARK}"
WRONG_TOKEN = f"S3CR3T-wrong-token-{MARK}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(is_secret(arg) for arg in typing.get_args(annotation))


def secret_fields(cls: type) -> list[str]:
    return [name for name, info in cls.Settings.model_fields.items() if is_secret(info.annotation)]


def secret(kind: str, provider: str, name: str) -> str:
    return f"S3CR3T-{kind}-{provider}-{name}-{MARK}"


@dataclass
class Plugin:
    """One installed plugin: its fake (accepting the `good` secrets) and three accounts."""

    name: str
    fake: FakeProvider
    fields: list[str]
    good: dict[str, str]
    bad: dict[str, str]
    dead: dict[str, str]
    calls: dict[str, list[str]] = field(default_factory=dict)

    @property
    def secrets(self) -> list[str]:
        values = [*self.good.values(), *self.bad.values(), *self.dead.values()]
        # a PEM key leaks if any line of its body does, not only the whole of it
        lines = [line for v in values if "-----BEGIN" in v for line in v.splitlines() if len(line) >= 40]
        return values + lines

    def settings(self, which: dict[str, str]) -> dict[str, Any]:
        return {**self.fake.demo_settings(), **which}

    def echo(self) -> str:
        return " ".join(self.secrets)


def plugins_under_test() -> list[Plugin]:
    registry = load_registry()
    out = []
    for name, cls in sorted(registry.providers.items()):
        fields = secret_fields(cls)
        assert name in registry.fakes, f"plugin {name} ships no fake: cannot exercise its secrets"
        fake = registry.fakes[name](seed=4)
        # a fake may shape the value (a private key must be a real PEM: Vonage), else the marker
        value = getattr(fake, "secret_setting", lambda field, marker: marker)
        good, bad, dead = ({f: value(f, secret(kind, name, f)) for f in fields} for kind in ("good", "bad", "dead"))
        fake.credentials.update({f: v for f, v in good.items() if f in fake.credentials})
        out.append(Plugin(name, fake, fields, good, bad, dead))
    assert any(p.fields for p in out), "no plugin declares a secret setting"
    return out


def steps(fake: FakeProvider, outcome: State, end: float = 0.6) -> list[Step]:
    raw = fake.raw_status
    return [Step(raw[State.QUEUED], 0.0), Step(raw[outcome], end)]


# -- collecting every output --------------------------------------------------------------------

@dataclass
class Outputs:
    texts: list[tuple[str, str]] = field(default_factory=list)

    def add(self, where: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self.texts.append((where, text))

    def response(self, where: str, response: httpx.Response) -> httpx.Response:
        self.add(f"{where} -> {response.status_code}", response.text + json.dumps(dict(response.headers)))
        return response

    def cli(self, where: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "outbound_call_exporter.cli", *args], capture_output=True,
                                text=True, timeout=60, env={**os.environ, **(env or {})})
        self.add(f"{where} (exit {result.returncode})", result.stdout + result.stderr)
        return result

    def leaks(self, secrets: list[str]) -> list[str]:
        found = []
        for where, text in self.texts:
            for s in secrets:
                if s in text:
                    at = text.index(s)
                    found.append(f"{where}: ...{text[max(0, at - 80):at + len(s) + 20]!r}...")
        return found


def write_config(path: Path, tmp: Path, plugins: list[Plugin], port: int, **extra: Any) -> dict[str, str]:
    """The config file: secrets given in YAML, through `*_file` and through env vars, in turn.
    Returns the env vars to run with."""
    env: dict[str, str] = {}
    accounts = []
    dead_url = f"http://127.0.0.1:{free_port()}"
    for i, p in enumerate(plugins):
        for kind, secrets, url in (("good", p.good, p.fake.url), ("bad", p.bad, p.fake.url),
                                   ("dead", p.dead, dead_url)):
            name = f"{kind}-{p.name}"
            settings = p.settings(secrets)
            source = (i + len(kind)) % 3
            for f, value in secrets.items():
                if source == 1:  # a Docker/Kubernetes secret file
                    secret_file = tmp / f"{name}-{f}.secret"
                    secret_file.write_text(value + "\n")
                    settings.pop(f)
                    settings[f"{f}_file"] = str(secret_file)
                elif source == 2:  # an environment variable, addressed by account name
                    settings.pop(f)
                    env[f"OCE_ACCOUNTS__{name.upper().replace('-', '_')}__SETTINGS__{f.upper()}"] = value
            accounts.append({"name": name, "provider": p.name, "base_url": url, "settings": settings,
                             "max_requests_per_second": 500,
                             "poll_interval_seconds": {"queued": 0.2, "dialing": 0.2, "in_progress": 0.2,
                                                       "unknown": 0.2}})
    path.write_text(yaml.safe_dump({"listen_address": f"127.0.0.1:{port}", "store_path": str(tmp / "calls.db"),
                                    "api_token": API_TOKEN, "log_level": "debug", "request_timeout_seconds": 1,
                                    "accounts": accounts, **extra}))
    return env


def bad_configs(tmp: Path, plugins: list[Plugin]) -> list[tuple[str, str, dict[str, str], bool]]:
    """(name, YAML text, env, must be refused) of configs wrong in ways that tempt an echo."""
    p = next(p for p in plugins if p.fields)
    f, value = p.fields[0], p.good[p.fields[0]]
    base = {"name": "acc", "provider": p.name, "base_url": p.fake.url or "http://127.0.0.1:9"}
    settings = p.settings(p.good)

    def doc(*accounts: dict[str, Any], **extra: Any) -> str:
        return yaml.safe_dump({"accounts": list(accounts), **extra})

    out = [  # (name, YAML, env, must be refused)
        ("secret under a misspelt key", doc({**base, "settings": {**settings, f"{f}x": value}}), {}),
        ("secret as an unknown account field", doc({**base, "settings": settings, "password": value}), {}),
        ("secret in a list where a string belongs", doc({**base, "settings": {**settings, f: [value]}}), {}),
        ("api_token of the wrong type", doc({**base, "settings": settings}, api_token={"t": value}), {}),
        ("unterminated YAML string", f'accounts:\n  - name: acc\n    settings: {{{f}: "{value}\n', {}),
        ("YAML tab indentation", f"accounts:\n\t- {f}: {value}\n", {}),
        ("env var for an unknown account", doc({**base, "settings": settings}),
         {f"OCE_ACCOUNTS__NOPE__SETTINGS__{f.upper()}": value}),
        ("env var overriding with bad JSON", doc({**base, "settings": settings}),
         {"OCE_ACCOUNTS__0__SETTINGS": "{" + value}),
    ]
    out = [(name, text, env, True) for name, text, env in out]
    for q in plugins:  # every secret field with characters a header cannot carry: refused or not, no echo
        for g in q.fields:
            out.append((f"{q.name}.{g} with spaces and control characters",
                        doc({**base, "provider": q.name, "settings": {**q.settings(q.good), g: q.good[g] + " \x07 x"}}),
                        {}, False))
    return out


# -- the test -------------------------------------------------------------------------------------

def test_no_secret_in_any_output(tmp_path):
    plugins = plugins_under_test()
    secrets = [API_TOKEN, WRONG_TOKEN] + [s for p in plugins for s in p.secrets]
    out = Outputs()
    with ExitStack() as stack:
        for p in plugins:
            stack.enter_context(p.fake.running())
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        config = tmp_path / "config.yml"
        env = write_config(config, tmp_path, plugins, port)

        assert out.cli("check-config", "check-config", "--config", str(config), env=env).returncode == 0
        out.cli("plugins", "plugins")
        out.cli("plugins --json", "plugins", "--json")
        for i, (name, text, extra_env, refuse) in enumerate(bad_configs(tmp_path, plugins)):
            bad = tmp_path / f"bad-{i}.yml"
            bad.write_text(text)
            result = out.cli(f"check-config: {name}", "check-config", "--config", str(bad), env=extra_env)
            assert result.returncode != 0 or not refuse, f"{name}: accepted"

        log = tmp_path / "service.log"
        proc = subprocess.Popen([sys.executable, "-m", "outbound_call_exporter.cli", "run", "--config", str(config)],
                                stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, **env})
        try:
            wait_until(lambda: _ready(url), message="service ready")
            exercise_service(url, plugins, out)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()[-3000:]
        service_log = log.read_text()
        assert "level=debug" in service_log and "credentials refused" in service_log, "the log exercised nothing"
        out.add("service log (debug)", service_log)
        for store_file in tmp_path.glob("calls.db*"):
            out.add(f"store file {store_file.name}", store_file.read_bytes())
        out.cli("watch with a wrong token", "watch", "--url", url, "--account", "good-telzino",
                "--call-id", "x", "--token", WRONG_TOKEN)

    leaks = out.leaks(secrets)
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks[:20])
    assert len(out.texts) > 50
    personal = [hidden for p in personal_data(load_registry()) for hidden in p.forbidden()]
    assert personal, "no plugin keeps a destination: the personal-data grep checks nothing"
    leaks = out.leaks(personal + ['"crm_id"', "john.doe@example.com"])
    assert not leaks, "personal data leaked (default privacy policy):\n" + "\n".join(leaks[:20])


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def exercise_service(url: str, plugins: list[Plugin], out: Outputs) -> None:
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    with httpx.Client(base_url=url, timeout=10, trust_env=False, headers=auth) as client:
        for p in plugins:
            echo = p.echo().encode()
            # provider error bodies and failure texts that quote the key back
            for fault in (faults.status(401, body=b'{"error": "invalid key ' + echo + b'"}'),
                          faults.status(400, body=b'{"detail": "' + echo + b'"}'),
                          faults.status(500, body=b"Traceback: key=" + echo),
                          faults.status(429, body=echo, retry_after="0"),
                          faults.malformed(b'{"key": "' + echo),
                          faults.wrong_shape(json.dumps([p.echo()]).encode())):
                p.fake.inject(fault, times=1)
            good = [p.fake.add_call(steps=steps(p.fake, State.FAILED), outcome=State.FAILED),
                    p.fake.add_call(steps=steps(p.fake, State.COMPLETED), outcome=State.COMPLETED)]
            others = [p.fake.add_call(steps=[Step(p.fake.raw_status[State.QUEUED], 0)]) for _ in range(2)]
            items = [{"account": f"good-{p.name}", "call_id": c.call_id, "params": c.params} for c in good]
            items += [{"account": f"{kind}-{p.name}", "call_id": c.call_id, "params": c.params}
                      for kind, c in zip(("bad", "dead"), others)]
            response = out.response("POST batch", client.post("/api/v1/calls", json=items))
            assert response.status_code == 201, response.text
            p.calls = {"good": [c.call_id for c in good], "bad": [others[0].call_id], "dead": [others[1].call_id]}

        def settled() -> bool:
            for p in plugins:
                if p.fake.requests["fault"] < 6:
                    return False
                for call_id in p.calls["good"]:
                    if client.get(f"/api/v1/calls/good-{p.name}/{call_id}").json()["watching"]:
                        return False
            text = client.get("/metrics").text
            return all(_value(text, "outbound_call_status_request_errors_total",
                              f'account="{kind}-{p.name}"', f'reason="{reason}"') >= 1
                       for p in plugins for kind, reason in (("bad", "unauthorized"), ("dead", "connection_error")))

        wait_until(settled, timeout=60, message="every echo served, every good call finished, auth failures seen")

        for p in plugins:
            for kind, ids in p.calls.items():
                for call_id in ids:
                    out.response("GET call", client.get(f"/api/v1/calls/{kind}-{p.name}/{call_id}"))
            out.response("DELETE call", client.delete(f"/api/v1/calls/bad-{p.name}/{p.calls['bad'][0]}"))
            for field_name, value in p.good.items():
                # secret-looking input where an error names the field, never the value (input the
                # contract says is echoed, e.g. an unknown account's name, is left out)
                account, bad_id = f"good-{p.name}", value + "/.."
                for body in ({"account": account, "call_id": "x", "params": {field_name: value}},
                             {"account": account, "call_id": "x", "params": {"agent_id": bad_id, "batch_id": bad_id}},
                             {"account": account, "call_id": "x", field_name: value},
                             {"account": account, "call_id": bad_id},
                             [{"account": account, "call_id": "x", "params": {field_name: value}}] * 2):
                    response = out.response("POST invalid", client.post("/api/v1/calls", json=body))
                    assert 400 <= response.status_code < 500, response.text
                out.response("list with a secret cursor", client.get("/api/v1/calls", params={"cursor": value}))
                out.response("malformed JSON", client.post("/api/v1/calls", content=b'{"call_id": "' + value.encode(),
                                                           headers={"Content-Type": "application/json"}))
        out.response("wrong bearer token", client.post("/api/v1/calls", json={"account": "x", "call_id": "x"},
                                                        headers={"Authorization": f"Bearer {WRONG_TOKEN}"}))
        out.response("token as basic auth", client.post("/api/v1/calls", json={},
                                                         headers={"Authorization": f"Basic {WRONG_TOKEN}"}))
        cursor: str | None = None
        for _ in range(100):  # every page of the list
            response = out.response("list", client.get("/api/v1/calls", params={"limit": 7, **({"cursor": cursor}
                                                                                         if cursor else {})}))
            cursor = response.json()["next"]
            if cursor is None:
                break
        for path in ("/metrics", "/", "/-/healthy", "/-/ready", f"/metrics?token={API_TOKEN}"):
            out.response(f"GET {path}", client.get(path))
        out.response("GET /metrics (OpenMetrics)",
                     client.get("/metrics", headers={"Accept": "application/openmetrics-text"}))


def _value(text: str, name: str, *parts: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(p in line for p in parts):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.both_stores
def test_a_failure_reason_quoting_the_key_is_not_stored_or_returned(tmp_path, registry):
    """Real APIs do this ("Invalid API key sk-..."): the key must be redacted before it is kept."""
    from conftest import account, make_config, running_service, stored_text

    plugins = [p for p in plugins_under_test() if p.fields and p.fake.terminal_fields(State.FAILED)]
    assert plugins, "no plugin reports a failure text"
    out = Outputs()
    with ExitStack() as stack:
        for p in plugins:
            stack.enter_context(p.fake.running())
        config = make_config(tmp_path, [account(f"good-{p.name}", p.name, p.fake.url, p.settings(p.good))
                                        for p in plugins])
        svc = stack.enter_context(running_service(config, registry))
        for p in plugins:
            quoting = {k: f"Call rejected: invalid key {' '.join(p.good.values())}"
                       for k, v in p.fake.terminal_fields(State.FAILED).items() if isinstance(v, str)}
            call = p.fake.add_call(steps=steps(p.fake, State.FAILED), outcome=State.FAILED, **quoting)
            assert svc.client.post("/api/v1/calls", json={"account": f"good-{p.name}", "call_id": call.call_id,
                                                          "params": call.params}).status_code == 201
            p.calls = {"good": [call.call_id]}
        for p in plugins:
            record = wait_until(lambda: (r := svc.call(f"good-{p.name}", p.calls["good"][0]))["state"] == "failed"
                                and r, message=f"{p.name} call failed")
            out.add(f"GET {p.name} call", json.dumps(record))
        out.add("list", svc.client.get("/api/v1/calls").text)
        out.add("metrics", svc.metrics_text())
    store = stored_text(config)
    assert all(p.calls["good"][0] in store for p in plugins), "the store's text holds no record"
    out.add("the store", store)
    leaks = out.leaks([s for p in plugins for s in p.good.values()])
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks[:20])
