"""A real Prometheus for the end-to-end tests: started on loopback with the shipped rule files
(scrape and evaluation every second), and the dashboard's and rules' queries as PromQL."""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from conftest import require_tool

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "grafana" / "dashboards" / "outbound-calls.json"
RULE_FILES = [REPO / "prometheus" / "rules.yml", REPO / "prometheus" / "alerts.yml"]
SHIPPED_CONFIG = REPO / "prometheus" / "prometheus.yml"
STARTUP_DEADLINE_SECONDS = 20

# Grafana's template variables, as a Prometheus query needs them.
VARIABLE_VALUES = {
    "provider": ".*",
    "account": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
}



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


def is_baseline(query: str) -> bool:
    """One-day baselines are absent until an account has 1000 finished calls of history."""
    return "1d" in query


def recording_rule_queries() -> dict[str, str]:
    queries = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule and not is_baseline(rule["record"]):
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




@contextmanager
def running_prometheus(workdir: Path, targets: list[str]) -> Iterator[Prometheus]:
    """Prometheus scraping `targets` under the shipped config's job name, with the shipped rules."""
    binary = require_tool("prometheus")
    job = yaml.safe_load(SHIPPED_CONFIG.read_text())["scrape_configs"][0]["job_name"]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in RULE_FILES],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
    }
    workdir.mkdir(parents=True, exist_ok=True)
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
