"""Prometheus rules: promtool checks and unit tests, plus the conventions users
of monitoring mixins rely on (alert names, severities, annotations, tests for
every alert, thresholds documented where they are set).

promtool comes from Debian's `prometheus` package. When CI=true a missing
promtool fails these tests; elsewhere they are skipped.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import require_tool

REPO = Path(__file__).resolve().parents[1]
PROM_DIR = REPO / "prometheus"
RULES = PROM_DIR / "rules.yml"
ALERTS = PROM_DIR / "alerts.yml"
UNIT_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))
DOCS = REPO / "README.md"

SEVERITIES = {"critical", "warning", "info"}
NON_TERMINAL = ("queued", "dialing", "in_progress", "unknown")

# Metric names of the public contract (docs/design.md) plus the histograms the
# exporter adds for providers that report them. A rule naming anything else is
# a typo.
COUNTERS_AND_GAUGES = {
    "outbound_calls",
    "outbound_calls_registered_total",
    "outbound_calls_finished_total",
    "outbound_call_status_requests_total",
    "outbound_call_status_request_errors_total",
    "outbound_call_last_successful_poll_timestamp_seconds",
    "outbound_call_account_up",
    "outbound_call_exporter_build_info",
    "outbound_call_exporter_partitions",
    "outbound_call_exporter_partitions_owned",
    "outbound_call_failures_total",  # its busy/no_answer reasons refine "not reached" (rules.yml)
}
HISTOGRAMS = {
    "outbound_call_time_to_terminal_seconds",
    "outbound_call_status_request_duration_seconds",
    "outbound_call_time_to_answer_seconds",
    "outbound_call_talk_time_seconds",
}
KNOWN_METRICS = (
    COUNTERS_AND_GAUGES
    | {f"{h}_{suffix}" for h in HISTOGRAMS for suffix in ("bucket", "count", "sum")}
    | {"up"}
)




def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)


def load_rules(path: Path) -> list[dict]:
    doc = yaml.safe_load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict]:
    return [r for r in load_rules(ALERTS) if "alert" in r]


def recording_rules() -> list[dict]:
    return [r for r in load_rules(RULES) if "record" in r]


def duration_seconds(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    total = 0
    for number, unit in re.findall(r"(\d+)([smhd])", text):
        total += int(number) * units[unit]
    return total


# ---------------------------------------------------------------- promtool


def test_promtool_check_rules():
    promtool = require_tool("promtool")
    result = run([promtool, "check", "rules", str(RULES), str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config():
    promtool = require_tool("promtool")
    result = run([promtool, "check", "config", str(PROM_DIR / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests(test_file):
    promtool = require_tool("promtool")
    result = run([promtool, "test", "rules", str(test_file)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_test_files_exist():
    assert UNIT_TESTS, "no promtool unit tests in prometheus/tests/"


# ---------------------------------------------------------- static checks


def test_alert_conventions():
    rules = alert_rules()
    assert rules
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"OutboundCalls?[A-Z][A-Za-z]+", name), name
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "dashboard_url"):
            assert annotations.get(key, "").strip(), f"{name}: missing annotation {key}"
        assert annotations["dashboard_url"].startswith("http"), name
        assert duration_seconds(rule.get("for", "")) >= 60, f"{name}: needs a `for:` of 1m or more"


def test_alert_names_and_severities_are_unique():
    pairs = [(r["alert"], r["labels"]["severity"]) for r in alert_rules()]
    assert len(pairs) == len(set(pairs)), pairs


def test_required_alerts_present():
    names = {r["alert"] for r in alert_rules()}
    for required in (
        "OutboundCallTechnicalFailuresHigh",
        "OutboundCallAnswerRateLow",
        "OutboundCallPollingFailing",
        "OutboundCallPollingErrorRatioHigh",
        "OutboundCallAccountDown",
        "OutboundCallsStuck",
        "OutboundCallExporterAbsent",
    ):
        assert required in names


def test_outcome_alerts_require_minimum_volume():
    """A quiet account (one failed call of two) never pages: every outcome alert needs calls."""
    for rule in alert_rules():
        if rule["alert"] in ("OutboundCallTechnicalFailuresHigh", "OutboundCallAnswerRateLow"):
            assert re.search(r"outbound_calls_finished_uncancelled:rate(\w+) \* \d+ >= \d+", rule["expr"]), rule["alert"]


def test_busy_and_no_answer_are_never_technical_failures():
    """docs/design.md, "What counts as failure": not reached is a business signal, not a failure."""
    for rule in recording_rules():
        expr = rule["expr"]
        if "technical_failure" in rule["record"] or "technical_failures" in rule["record"]:
            assert not re.search(r'state=~?"[^"]*(busy|no_answer)', expr), rule["record"]
        for selector in re.findall(r'outbound_calls_finished_total\{state!="cancelled"\}', expr):
            assert selector  # the denominator: every finished call but cancelled ones


def test_aggregations_keep_provider_and_account_and_drop_instance():
    """Summed over replicas: the same results with one exporter or N (and across restarts)."""
    for rule in recording_rules() + alert_rules():
        for op, clause in re.findall(r"\b(sum|max|min|count)\s*(by\s*\([^)]*\)|without\s*\([^)]*\))?\s*\(", rule["expr"]):
            name = rule.get("record") or rule["alert"]
            if rule.get("alert") == "OutboundCallExporterAbsent":
                continue
            if name.startswith("job:") or name == "OutboundCallExporterPartitionsUnowned":
                assert clause.replace(" ", "") == "by(job)", f"{name}: the exporter as a whole: by (job)"
                continue
            assert clause.startswith("by"), f"{name}: {op} needs an explicit by (provider, account, ...)"
            assert "provider" in clause and "account" in clause and "instance" not in clause, name


@functools.cache
def _generator():
    """prometheus/tests/generate.py (not a package: loaded from its path)."""
    spec = importlib.util.spec_from_file_location("oce_rule_scenarios", PROM_DIR / "tests" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_generated_scenarios_are_up_to_date():
    """scenarios_test.yml is what generate.py writes (edit the script, not the file)."""
    assert (PROM_DIR / "tests" / "scenarios_test.yml").read_text() == _generator().render()


def test_scenarios_cover_every_target():
    """README "Alerts" targets at 15 s: each incident quiet just before and firing by its deadline."""
    gen = _generator()
    assert gen.STEP == 15
    deadlines = {}
    for scenario in gen.scenarios():
        for account, checks in scenario.checks.items():
            fired = [c for c in checks if c.alert]
            quiet = [c for c in checks if c.alert is None]
            assert quiet, f"{scenario.title}: no quiet check"
            assert all(q.since == 0 for q in quiet), scenario.title  # nothing at all before
            for check in fired:
                assert max(q.at for q in quiet) >= check.since - 0.25, f"{scenario.title}: not quiet just before"
                deadlines[check.alert] = min(deadlines.get(check.alert, 1e9), check.at - check.since)
    assert deadlines[("OutboundCallTechnicalFailuresHigh", "critical")] <= 3
    assert deadlines[("OutboundCallAnswerRateLow", "warning")] <= 15
    for blind in ("OutboundCallPollingFailing", "OutboundCallAccountDown", "OutboundCallExporterAbsent"):
        assert deadlines[(blind, "critical")] <= 5


def _unit_test_cases():
    """alertname -> list of expected-alert lists over all promtool tests.

    The generated scenarios assert on the ALERTS series instead (random values make exact
    annotations impractical): `ALERTS{...alertname=...}` expected firing, and
    `count_over_time(ALERTS{...})` expected empty (nothing, pending or firing).
    """
    cases: dict[str, list[list]] = {}
    names = {r["alert"] for r in alert_rules()}
    for path in UNIT_TESTS:
        doc = yaml.safe_load(path.read_text())
        for group in doc["tests"]:
            for case in group.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], []).append(case.get("exp_alerts") or [])
            for case in group.get("promql_expr_test", []):
                if not case["expr"].startswith(("ALERTS{", "count_over_time(ALERTS{")):
                    continue
                named = re.search(r'alertname="(\w+)"', case["expr"])
                for name in [named[1]] if named else names:
                    expected = [{"exp_labels": dict(re.findall(r'(\w+)="([^"]*)"', s["labels"]))}
                                for s in case.get("exp_samples") or []]
                    cases.setdefault(name, []).append(expected)
    return cases


def test_every_alert_has_firing_and_quiet_unit_tests():
    cases = _unit_test_cases()
    for rule in alert_rules():
        name, severity = rule["alert"], rule["labels"]["severity"]
        expected = cases.get(name, [])
        fired = [a for alerts in expected for a in alerts if a["exp_labels"].get("severity") == severity]
        assert fired, f"no promtool test where {name} ({severity}) fires"
        assert any(not alerts for alerts in expected), f"no promtool test where {name} stays quiet"


def test_unit_tests_load_the_shipped_rule_files():
    for path in UNIT_TESTS:
        doc = yaml.safe_load(path.read_text())
        resolved = {(path.parent / f).resolve() for f in doc["rule_files"]}
        assert RULES.resolve() in resolved, path.name
        if "alert_rule_test" in path.read_text():
            assert ALERTS.resolve() in resolved, path.name


def test_recording_rule_names_follow_convention():
    for rule in recording_rules():
        parts = rule["record"].split(":")
        assert len(parts) == 3 and all(parts), f"{rule['record']}: expected level:metric:operations"
        assert parts[1].startswith("outbound_call"), rule["record"]


def _referenced_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return set(re.findall(r"(?<![\w:])([a-z_][a-z0-9_]*:[a-z0-9_:]+|outbound_calls?[a-z0-9_]*|up)(?![\w:(])", without_strings))


def test_rules_only_use_known_metrics_and_recorded_series():
    recorded = {r["record"] for r in recording_rules()}
    for rule in recording_rules() + alert_rules():
        for name in _referenced_names(rule["expr"]):
            if ":" in name:
                assert name in recorded, f"{rule.get('record') or rule['alert']}: unknown recorded series {name}"
            else:
                assert name in KNOWN_METRICS, f"{rule.get('record') or rule['alert']}: unknown metric {name}"


def test_non_terminal_state_selectors_are_complete():
    text = ALERTS.read_text()
    for selector in re.findall(r'outbound_calls\{state=~"([^"]+)"\}', text):
        assert set(selector.split("|")) == set(NON_TERMINAL), selector


def _threshold_table() -> dict[tuple[str, str], tuple[str, str]]:
    """(alert, severity) -> (condition, for) from the comment table atop alerts.yml."""
    table = {}
    for line in ALERTS.read_text().splitlines():
        match = re.match(r"#\s+(OutboundCall\w+)\s+(critical|warning|info)\s+(.+?)\s+(\d+[smh])\s*$", line)
        if match:
            table[(match[1], match[2])] = (match[3], match[4])
    return table


def test_threshold_table_matches_the_rules():
    """The table at the top of alerts.yml is where users read and tune thresholds."""
    table = _threshold_table()
    rules = {(r["alert"], r["labels"]["severity"]): r for r in alert_rules()}
    assert set(table) == set(rules)
    for key, (condition, for_) in table.items():
        rule = rules[key]
        assert duration_seconds(for_) == duration_seconds(rule["for"]), key
        for number in re.findall(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.%])", condition):
            assert re.search(rf"(?<![\w.]){re.escape(number)}(?![\w.])", rule["expr"]), (
                f"{key}: threshold {number} of the table is not in the expression"
            )


def test_every_alert_is_documented():
    text = DOCS.read_text()
    for rule in alert_rules():
        assert rule["alert"] in text, f"{rule['alert']} missing from {DOCS.relative_to(REPO)}"
