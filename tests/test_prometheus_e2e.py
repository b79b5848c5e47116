"""End to end: a real Prometheus scrapes the running `demo` and evaluates the
shipped rules; every dashboard query, every dashboard variable and every
recording rule must return data (the one-day baselines aside: they need 1000
calls of history), every rule must evaluate without error, no alert may be
pending or firing on the demo's normal traffic, and its failure spike must make
the critical OutboundCallTechnicalFailuresHigh fire.

The shipped rule files are loaded unchanged; only the scrape and evaluation
interval is shortened (1 s), which does not shorten the rules' windows or
`for:` durations, so the spike takes about as long to page as in production.

Needs Debian's `prometheus` binary: when CI=true a missing binary fails the
test, elsewhere it is skipped. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from outbound_call_exporter.plugins import load_registry

from promserver import (Prometheus, dashboard_queries, free_port, has_finite_sample, is_baseline, panel_queries,
                        promql_regex_literal, recording_rule_queries, running_prometheus, stop_process, tail,
                        wait_until_ready)


#: demo traffic per fake provider (the demo spreads its calls over every installed fake): about
#: 2 a second per demo account, the volume the alerts are designed for
CALLS_PER_SECOND_PER_PROVIDER = 2.0
QUIET_FROM_SECONDS = 20  # start-up: before the first scrape/poll, absence and staleness may be pending
SPIKE_AT_SECONDS = 60  # normal traffic until then; afterwards ~35% technical failures
FIRE_DEADLINE_SECONDS = 180  # the page fires ~2 minutes after the spike (target: 3)
PAGE = ("OutboundCallTechnicalFailuresHigh", "critical")



# ------------------------------------------------------------------ helpers




def exporter_executable() -> str:
    beside_python = Path(sys.executable).parent / "outbound-call-exporter"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("outbound-call-exporter")
    if not found:
        pytest.fail("outbound-call-exporter is not installed (pip install -e .)")
    return found


@dataclass
class Progress:
    waiting: dict[str, str]
    paged: bool = False
    rule_errors: dict[str, str] = field(default_factory=dict)
    unevaluated_rules: set[str] = field(default_factory=set)
    #: alerts seen pending or firing while the demo's traffic was normal
    during_normal_traffic: set[str] = field(default_factory=set)

    def done(self) -> bool:
        return not self.waiting and self.paged and not self.unevaluated_rules


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
             "--duration", "400", "--calls-per-second", str(CALLS_PER_SECOND_PER_PROVIDER * len(load_registry().fakes)),
             "--failure-spike-at", str(SPIKE_AT_SECONDS)],
            stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
        )
    started = time.monotonic()
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/-/ready", proc, log)
        yield f"127.0.0.1:{port}", log, started
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def prometheus(demo, tmp_path_factory):
    target, _, _ = demo
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), [target]) as prom:
        yield prom


# --------------------------------------------------------------------- test


def poll_once(prom: Prometheus, progress: Progress, traffic_normal: bool) -> None:
    for description, query in list(progress.waiting.items()):
        if has_finite_sample(prom.instant(query)):
            del progress.waiting[description]
    for alert in prom.alerts():
        labels = alert["labels"]
        if traffic_normal:
            progress.during_normal_traffic.add(f"{labels['alertname']} {alert['state']} {labels}")
        if (labels["alertname"], labels.get("severity")) == PAGE and alert["state"] == "firing":
            progress.paged = True
    progress.unevaluated_rules = set()
    for rule in prom.rules():
        name = rule.get("name")
        if rule.get("health") == "err":
            progress.rule_errors[name] = rule.get("lastError", "")
        elif rule.get("health") != "ok":
            progress.unevaluated_rules.add(name)


def test_dashboard_queries_recording_rules_and_alerts_on_real_prometheus(prometheus, demo):
    queries = {**dashboard_queries(), **recording_rule_queries()}
    assert len(queries) > 20
    baselines = {d: q for d, q in queries.items() if is_baseline(q)}
    for query in baselines.values():
        prometheus.instant(query)  # valid PromQL, even while it has no data yet
    progress = Progress(waiting={d: q for d, q in queries.items() if d not in baselines})
    started = demo[2]
    deadline = started + SPIKE_AT_SECONDS + FIRE_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        elapsed = time.monotonic() - started
        # a query Prometheus rejects fails here at once
        poll_once(prometheus, progress, traffic_normal=QUIET_FROM_SECONDS <= elapsed < SPIKE_AT_SECONDS)
        assert not progress.rule_errors, f"rules failing to evaluate: {progress.rule_errors}"
        assert not progress.during_normal_traffic, (
            f"alerts pending/firing on normal demo traffic: {sorted(progress.during_normal_traffic)}"
        )
        if progress.done():
            break
        time.sleep(1.0)

    logs = f"\n--- demo log ---\n{tail(demo[1])}\n--- prometheus log ---\n{tail(prometheus.log)}"
    assert time.monotonic() - started > SPIKE_AT_SECONDS, "the demo's normal traffic was never observed"
    assert not progress.waiting, (
        "no data for:\n  " + "\n  ".join(f"{d}: {progress.waiting[d]}" for d in sorted(progress.waiting)) + logs
    )
    assert not progress.unevaluated_rules, f"rules never evaluated: {progress.unevaluated_rules}{logs}"
    assert progress.paged, f"{PAGE} never fired within {FIRE_DEADLINE_SECONDS}s of the failure spike{logs}"

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
    selected = Progress(waiting={d: q for d, q in panel_queries(chosen).items() if not is_baseline(q)})
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
