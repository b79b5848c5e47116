#!/usr/bin/env python3
"""Write the scenario tests for `promtool test rules`: realistic multi-hour traffic.

Hand-written series cannot show what the alerts must survive: hours of random traffic
around a normal outcome mix, counter resets, replicas, then an incident. This script
builds those series (seeded, so the output is stable) at a 15 s scrape/evaluation
interval, the shipped default, and the assertions each scenario needs:

- an incident: no alert at all (pending or firing) for the account before it starts,
  the expected alert firing by its deadline (the targets of README "Alerts");
- a quiet scenario: no alert at all for the account across the whole series.

    python3 prometheus/tests/generate.py            # rewrites prometheus/tests/scenarios_test.yml
    promtool test rules prometheus/tests/scenarios_test.yml

tests/test_rules.py checks the committed file is what this script writes.
"""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

STEP = 15  # seconds between samples and between rule evaluations
OUT = Path(__file__).with_name("scenarios_test.yml")

STATES = ("completed", "no_answer", "busy", "failed", "expired", "cancelled")
REASONS = ("busy", "no_answer", "other")
#: a normal campaign (design.md, "What counts as failure")
NORMAL = {"completed": 0.40, "no_answer": 0.45, "busy": 0.10, "failed": 0.05}
BAD_LIST = {"completed": 0.35, "no_answer": 0.40, "busy": 0.10, "failed": 0.15}  # 15% bad numbers
SPIKE = {"completed": 0.25, "no_answer": 0.32, "busy": 0.08, "failed": 0.35}
ALL_FAIL = {"failed": 1.0}
BAD_LIST_INCIDENT = {"completed": 0.20, "no_answer": 0.25, "busy": 0.05, "failed": 0.50}
ANSWER_DROP = {"completed": 0.04, "no_answer": 0.80, "busy": 0.11, "failed": 0.05}


@dataclass
class Phase:
    """From minute `at`, `rate` calls/s finish with outcome shares `mix`."""

    at: float
    mix: dict[str, float]
    rate: float = 2.5


@dataclass
class Account:
    name: str
    phases: list[Phase]
    provider: str = "telzino"
    instances: int = 1
    #: minutes at which the exporter restarts: counters drop to 0, `gap` scrapes are missed
    restarts: tuple[float, ...] = ()
    gap: int = 2
    #: minute from which the account's series exist (a new account)
    born: float = 0.0
    #: report busy/no_answer as state `failed` with a failure reason (as Trillet does)
    failed_with_reason: bool = False
    #: single calls: (minute, state), on top of the phases
    events: tuple[tuple[float, str], ...] = ()
    #: export polling series (requests 20/s); from `polling_fails_at` every request fails
    #: (and, from `down_at`, outbound_call_account_up is 0); requests drop to `backoff` x
    polling: bool = False
    polling_fails_at: float | None = None
    down_at: float | None = None
    backoff: float = 1.0
    #: from this minute the exporter's target is down: `up` 0, no series scraped
    target_down_at: float | None = None


@dataclass
class Check:
    """`alert` (name, severity) firing at minute `at`, `since` being when the incident began;
    or (alert None) no alert at all, pending or firing, in [since, at]."""

    at: float
    alert: tuple[str, str] | None = None
    since: float = 0.0


@dataclass
class Scenario:
    title: str
    minutes: float
    accounts: list[Account]
    checks: dict[str, list[Check]]  # account -> checks
    extra_series: list[tuple[str, str]] = field(default_factory=list)
    seed: int = 1


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def phase_at(account: Account, minute: float) -> Phase:
    return [p for p in account.phases if p.at <= minute][-1]


def account_series(account: Account, steps: int, rng: random.Random) -> dict[str, list[str]]:
    """Series selector -> one value (or `_`: not scraped) per step, for every exporter instance."""
    out: dict[str, list[str]] = {}
    for inst in range(account.instances):
        target = f'instance="exporter-{inst}:9877",job="outbound-call-exporter"'
        labels = f'provider="{account.provider}",account="{account.name}",{target}'
        counters = Counters()
        rows: dict[str, list[str]] = {key: [] for key in counters.keys(labels, account.polling)}
        rows[f"up{{{target}}}"] = []
        for step in range(steps):
            minute = step * STEP / 60
            # only the first replica restarts (all of them when there is one)
            restarting = inst == 0 and any(r <= minute < r + account.gap * STEP / 60 for r in account.restarts)
            down = restarting or (account.target_down_at is not None and minute >= account.target_down_at)
            rows[f"up{{{target}}}"].append("0" if down else "1")
            if down:
                counters = Counters()  # the process restarts: its counters start again at 0
            if down or minute < account.born:
                for key in counters.keys(labels, account.polling):
                    rows[key].append("_")
                continue
            counters.advance(account, minute, rng)
            for key, value in counters.values(labels, account, minute).items():
                rows[key].append(str(value))
        out |= rows
    return out


@dataclass
class Counters:
    """One exporter process's counters for one account."""

    finished: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    reasons: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    requests: int = 0
    errors: int = 0

    def finish(self, state: str, n: int, failed_with_reason: bool) -> None:
        if state in ("busy", "no_answer"):
            self.finished["failed" if failed_with_reason else state] += n
            self.reasons[state] += n
        else:
            self.finished[state] += n
            if state == "failed":
                self.reasons["other"] += n

    def advance(self, account: Account, minute: float, rng: random.Random) -> None:
        phase = phase_at(account, minute)
        for state, share in phase.mix.items():
            self.finish(state, poisson(rng, phase.rate * STEP * share / account.instances), account.failed_with_reason)
        for at, state in account.events:
            if minute <= at < minute + STEP / 60:
                self.finish(state, 1, account.failed_with_reason)
        failing = account.polling_fails_at is not None and minute >= account.polling_fails_at
        sent = poisson(rng, 20 * STEP * (account.backoff if failing else 1.0) / account.instances)
        self.requests += sent
        self.errors += sent if failing else 0

    @staticmethod
    def keys(labels: str, polling: bool) -> list[str]:
        keys = [f'outbound_calls_finished_total{{{labels},state="{s}"}}' for s in STATES]
        keys += [f'outbound_call_failures_total{{{labels},reason="{r}"}}' for r in REASONS]
        if polling:
            keys += [f"outbound_call_status_requests_total{{{labels}}}",
                     f'outbound_call_status_request_errors_total{{{labels},reason="server_error"}}',
                     f"outbound_call_account_up{{{labels}}}"]
        return keys

    def values(self, labels: str, account: Account, minute: float) -> dict[str, int]:
        values = list(self.finished.values()) + list(self.reasons.values())
        if account.polling:
            up = 0 if account.down_at is not None and minute >= account.down_at else 1
            values += [self.requests, self.errors, up]
        return dict(zip(self.keys(labels, account.polling), values))


def duration(minutes: float) -> str:
    seconds = round(minutes * 60)
    return f"{seconds // 60}m{seconds % 60}s" if seconds % 60 else f"{seconds // 60}m"


def checks_yaml(account: str, checks: list[Check]) -> list[str]:
    """`account` "" means the exporter-level alerts (no account label)."""
    scope = f'account="{account}"' if account else 'alertname="OutboundCallExporterAbsent"'
    who = account or "the exporter"
    lines = []
    for check in checks:
        if check.alert is None:
            lines += [
                f"      # {who}: no alert at all (pending or firing) from minute {check.since:g} to {check.at:g}",
                f"      - expr: count_over_time(ALERTS{{{scope}}}[{duration(check.at - check.since)}])",
                f"        eval_time: {duration(check.at)}",
                "        exp_samples: []",
            ]
        else:
            name, severity = check.alert
            labels = f'alertname="{name}",alertstate="firing",severity="{severity}"'
            if account:
                labels += f',provider="telzino",account="{account}"'
            lines += [
                f"      # {who}: {name} ({severity}) firing by minute {check.at:g}",
                f"      - expr: ALERTS{{{scope},alertname=\"{name}\",severity=\"{severity}\",alertstate=\"firing\"}}",
                f"        eval_time: {duration(check.at)}",
                "        exp_samples:",
                f"          - labels: 'ALERTS{{{labels}}}'",
                "            value: 1",
            ]
    return lines


def scenario_yaml(scenario: Scenario) -> list[str]:
    rng = random.Random(scenario.seed)
    steps = int(scenario.minutes * 60 / STEP) + 1
    lines = [f"  # {scenario.title}", f"  - interval: {STEP}s", "    input_series:"]
    for account in scenario.accounts:
        for key, values in account_series(account, steps, rng).items():
            lines += [f"      - series: '{key}'", f"        values: '{' '.join(values)}'"]
    for key, values in scenario.extra_series:
        lines += [f"      - series: '{key}'", f"        values: '{values}'"]
    lines.append("    promql_expr_test:")
    for account, checks in scenario.checks.items():
        lines += checks_yaml(account, checks)
    return lines


def quiet(minutes: float) -> list[Check]:
    return [Check(at=minutes)]


def incident(at: float, deadline: float, alert: tuple[str, str]) -> list[Check]:
    return [Check(at=at - STEP / 60), Check(at=at + deadline, alert=alert, since=at)]


CRITICAL = ("OutboundCallTechnicalFailuresHigh", "critical")
ANSWER = ("OutboundCallAnswerRateLow", "warning")
POLLING = ("OutboundCallPollingFailing", "critical")
DOWN = ("OutboundCallAccountDown", "critical")
ABSENT = ("OutboundCallExporterAbsent", "critical")


def scenarios() -> list[Scenario]:
    return [
        Scenario("A normal campaign, 5 hours: 40% answered, 45% no answer, 10% busy, 5% failed.",
                 300, [Account("normal", [Phase(0, NORMAL)])], {"normal": quiet(300)}, seed=1),
        Scenario("A list with 15% bad numbers, 5 hours, from its first call (no baseline at first).",
                 300, [Account("bad-list", [Phase(0, BAD_LIST)])], {"bad-list": quiet(300)}, seed=2),
        Scenario("Busy and no-answer reported as `failed` with a reason (Trillet): not failures.",
                 180, [Account("reasons", [Phase(0, NORMAL)], failed_with_reason=True)],
                 {"reasons": quiet(180)}, seed=3),
        Scenario("Exporter restarts during normal traffic (counters reset, two scrapes missed), "
                 "and a new account appearing after an hour.",
                 240, [Account("restarted", [Phase(0, NORMAL)], restarts=(60, 61.5, 150)),
                       Account("new", [Phase(0, NORMAL)], born=60)],
                 {"restarted": quiet(240), "new": quiet(240), "": quiet(240)}, seed=4),
        Scenario("Three replicas share one account's calls; one of them restarts.",
                 180, [Account("replicas", [Phase(0, NORMAL)], instances=3, restarts=(90,))],
                 {"replicas": quiet(180), "": quiet(180)}, seed=5),
        Scenario("A quiet account: two calls in three hours, one of them failed; and one a minute, "
                 "one in five failing.",
                 180, [Account("quiet", [Phase(0, NORMAL, rate=0.0)], events=((30, "failed"), (32, "completed"))),
                       Account("trickle", [Phase(0, {"completed": 0.3, "no_answer": 0.5, "failed": 0.2},
                                                 rate=1 / 60)])],
                 {"quiet": quiet(180), "trickle": quiet(180)}, seed=6),
        Scenario("Technical failures 5% -> 35% after 2 hours: paging within 3 minutes.",
                 135, [Account("spike", [Phase(0, NORMAL), Phase(120, SPIKE)])],
                 {"spike": incident(120, 3, CRITICAL)}, seed=7),
        Scenario("Every call failing after 2 hours: paging within 2 minutes.",
                 130, [Account("all-failing", [Phase(0, NORMAL), Phase(120, ALL_FAIL)])],
                 {"all-failing": incident(120, 2, CRITICAL)}, seed=8),
        Scenario("A 15% bad-numbers account jumping to 50% after 3 hours: paging within 3 minutes.",
                 185, [Account("bad-list-incident", [Phase(0, BAD_LIST), Phase(180, BAD_LIST_INCIDENT)])],
                 {"bad-list-incident": incident(180, 3, CRITICAL)}, seed=9),
        Scenario("Answered 40% -> 4% after 2 hours, calls still finishing: warning within 15 minutes.",
                 140, [Account("answer-drop", [Phase(0, NORMAL), Phase(120, ANSWER_DROP)])],
                 {"answer-drop": incident(120, 15, ANSWER)}, seed=10),
        Scenario("Every status request failing (5xx, fast) after 1 hour; the account still says up.",
                 70, [Account("provider-500", [Phase(0, NORMAL)], polling=True, polling_fails_at=60)],
                 {"provider-500": incident(60, 5, POLLING)}, seed=11),
        Scenario("Every status request timing out after 1 hour: the exporter backs off (a fifth of the "
                 "requests) and reports the account down after 60 s, as it does.",
                 70, [Account("timeouts", [Phase(0, NORMAL)], polling=True, polling_fails_at=60, down_at=61,
                              backoff=0.2)],
                 {"timeouts": incident(60, 5, DOWN)}, seed=12),
        Scenario("The provider refuses the account's credentials after 1 hour (account_up 0 at once).",
                 70, [Account("refused", [Phase(0, NORMAL)], polling=True, polling_fails_at=60, down_at=60,
                              backoff=0.2)],
                 {"refused": incident(60, 5, DOWN)}, seed=13),
        Scenario("The exporter's target goes down after 1 hour (scrapes fail, up == 0).",
                 70, [Account("target-down", [Phase(0, NORMAL)], polling=True, target_down_at=60)],
                 {"": incident(60, 5, ABSENT)}, seed=14),
    ]


def render() -> str:
    lines = [
        "# GENERATED by prometheus/tests/generate.py -- do not edit; change the script and rerun it.",
        "# Scenario tests over realistic multi-hour traffic at the shipped 15 s interval.",
        "rule_files:",
        "  - ../rules.yml",
        "  - ../alerts.yml",
        "",
        f"evaluation_interval: {STEP}s",
        "",
        "tests:",
    ]
    for scenario in scenarios():
        lines += scenario_yaml(scenario)
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else OUT
    out.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
