"""End to end: a real Prometheus scrapes the running `demo` and evaluates the
shipped rules; every dashboard query, every dashboard variable and every
recording rule must return data, every rule must evaluate without error, and
the demo's failure spike must drive OutboundCallFailureRatioHigh to pending or
firing.

Needs Debian's `prometheus` binary: when CI=true a missing binary fails the
test, elsewhere it is skipped. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from conftest import require_tool

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "grafana" / "dashboards" / "outbound-calls.json"
RULE_FILES = [REPO / "prometheus" / "rules.yml", REPO / "prometheus" / "alerts.yml"]
SHIPPED_CONFIG = REPO / "prometheus" / "prometheus.yml"

SPIKE_AT_SECONDS = 2  # the demo's failure spike starts right away
DATA_DEADLINE_SECONDS = 120  # wait for data and the alert (typically ~15 s); with start-up, the test stays under 3 minutes
STARTUP_DEADLINE_SECONDS = 20

# Grafana's template variables, as a Prometheus query needs them.
VARIABLE_VALUES = {
    "provider": ".*",
    "account": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
}


# ------------------------------------------------------------------ helpers




def exporter_executable() -> str:
    beside_python = Path(sys.executable).parent / "outbound-call-exporter"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("outbound-call-exporter")
    if not found:
        pytest.fail("outbound-call-exporter is not installed (pip install -e .)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[0]} exited with {proc.returncode}:\n{tail(log)}")
        try:
            if http_get(url, timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} not ready after {STARTUP_DEADLINE_SECONDS}s:\n{tail(log)}")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def substitute_variables(expr: str, values: dict[str, str] | None = None) -> str:
    values = {**VARIABLE_VALUES, **(values or {})}

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise AssertionError(f"unknown dashboard variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def panel_queries(values: dict[str, str] | None = None) -> dict[str, str]:
    """Description -> PromQL for every panel target, with the variables set to `values`."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = {}
    stack = list(dashboard["panels"])
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            queries[f"panel {panel['title']!r} {target['refId']}"] = substitute_variables(target["expr"], values)
    return queries


def dashboard_queries() -> dict[str, str]:
    """Description -> PromQL for every panel target ("All" selected) and every query variable."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = panel_queries()
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["definition"].strip())
        assert match, f"unsupported variable query {var['definition']!r}"
        metric, label = match.groups()
        queries[f"variable ${var['name']}"] = f"count by ({label}) ({substitute_variables(metric)})"
    return queries


def recording_rule_queries() -> dict[str, str]:
    queries = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    labels = ",".join(f'{k}="{v}"' for k, v in sorted(rule.get("labels", {}).items()))
                    queries[f"recording rule {rule['record']}{{{labels}}}"] = f"{rule['record']}{{{labels}}}"
    return queries


@dataclass
class Prometheus:
    url: str
    log: Path

    def api(self, path: str, **params: str) -> dict:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        status, body = http_get(f"{self.url}/api/v1/{path}{query}")
        payload = json.loads(body)
        if payload.get("status") != "success":
            raise AssertionError(f"{path} {params}: HTTP {status}: {payload.get('error')}")
        return payload["data"]

    def instant(self, query: str) -> list[dict]:
        return self.api("query", query=query)["result"]

    def alerts(self) -> list[dict]:
        return self.api("alerts")["alerts"]

    def rules(self) -> list[dict]:
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]


def promql_regex_literal(value: str) -> str:
    """`value` as a regex matching itself, inside a PromQL double-quoted string (as Grafana does)."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value)


def has_finite_sample(result: list[dict]) -> bool:
    for series in result:
        value = float(series["value"][1])
        if not math.isnan(value) and not math.isinf(value):
            return True
    return False


@dataclass
class Progress:
    waiting: dict[str, str]
    alert_states: set[str] = field(default_factory=set)
    rule_errors: dict[str, str] = field(default_factory=dict)
    unevaluated_rules: set[str] = field(default_factory=set)

    def done(self) -> bool:
        return not self.waiting and self.alert_states and not self.unevaluated_rules


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    exe = exporter_executable()
    workdir = tmp_path_factory.mktemp("demo")
    port = free_port()
    log = workdir / "demo.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [exe, "demo", "--listen", f"127.0.0.1:{port}", "--store", str(workdir / "demo.db"),
             "--duration", "300", "--failure-spike-at", str(SPIKE_AT_SECONDS),
             # the demo spreads its calls over every installed fake (ten providers): keep each
             # provider's share near 0.4 calls/s, so per-provider panels fill as quickly as before
             "--calls-per-second", "4"],
            stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
        )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/-/ready", proc, log)
        yield f"127.0.0.1:{port}", log
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def prometheus(demo, tmp_path_factory):
    binary = require_tool("prometheus")
    target, _ = demo
    workdir = tmp_path_factory.mktemp("prometheus")
    job = yaml.safe_load(SHIPPED_CONFIG.read_text())["scrape_configs"][0]["job_name"]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in RULE_FILES],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}],
    }
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
        )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/-/ready", proc, log)
        yield Prometheus(f"http://127.0.0.1:{port}", log)
    finally:
        stop_process(proc)


# --------------------------------------------------------------------- test


def poll_once(prom: Prometheus, progress: Progress) -> None:
    for description, query in list(progress.waiting.items()):
        if has_finite_sample(prom.instant(query)):
            del progress.waiting[description]
    for alert in prom.alerts():
        if alert["labels"]["alertname"] == "OutboundCallFailureRatioHigh":
            progress.alert_states.add(alert["state"])
    progress.unevaluated_rules = set()
    for rule in prom.rules():
        name = rule.get("name")
        if rule.get("health") == "err":
            progress.rule_errors[name] = rule.get("lastError", "")
        elif rule.get("health") != "ok":
            progress.unevaluated_rules.add(name)


def test_dashboard_queries_recording_rules_and_failure_alert_on_real_prometheus(prometheus, demo):
    queries = {**dashboard_queries(), **recording_rule_queries()}
    assert len(queries) > 20
    progress = Progress(waiting=dict(queries))
    deadline = time.monotonic() + DATA_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        poll_once(prometheus, progress)  # a query Prometheus rejects fails here at once
        assert not progress.rule_errors, f"rules failing to evaluate: {progress.rule_errors}"
        if progress.done():
            break
        time.sleep(1.0)

    logs = f"\n--- demo log ---\n{tail(demo[1])}\n--- prometheus log ---\n{tail(prometheus.log)}"
    assert not progress.waiting, (
        f"no data after {DATA_DEADLINE_SECONDS}s for:\n  "
        + "\n  ".join(f"{d}: {progress.waiting[d]}" for d in sorted(progress.waiting))
        + logs
    )
    assert not progress.unevaluated_rules, f"rules never evaluated: {progress.unevaluated_rules}{logs}"
    assert progress.alert_states & {"pending", "firing"}, (
        f"OutboundCallFailureRatioHigh never became pending/firing during the failure spike{logs}"
    )

    # The same panels with one provider and one account picked from the
    # variables' own queries, as a user selecting them would see. Telzino is the
    # provider that reports everything the panels show (SIP codes, answer time,
    # talk time); others leave some panels legitimately empty.
    providers = {r["metric"]["provider"] for r in prometheus.instant("count by (provider) (outbound_call_account_up)")}
    assert "telzino" in providers, providers
    provider = "telzino"
    account = prometheus.instant(
        f'count by (account) (outbound_call_account_up{{provider=~"{promql_regex_literal(provider)}"}})'
    )[0]["metric"]["account"]
    chosen = {"provider": promql_regex_literal(provider), "account": promql_regex_literal(account)}
    selected = Progress(waiting=panel_queries(chosen))
    deadline = time.monotonic() + 20
    while selected.waiting and time.monotonic() < deadline:
        for description, query in list(selected.waiting.items()):
            if has_finite_sample(prometheus.instant(query)):
                del selected.waiting[description]
        time.sleep(0.5)
    assert not selected.waiting, f"no data with provider={provider} account={account}: {selected.waiting}"

    # The exporter is scraped under the job the absence alert watches, and the
    # demo account is healthy: neither alert may be active.
    active = {a["labels"]["alertname"] for a in prometheus.alerts()}
    assert "OutboundCallExporterAbsent" not in active
    assert "OutboundCallAccountDown" not in active
    (up,) = prometheus.instant('up{job="outbound-call-exporter"}')
    assert up["value"][1] == "1"
