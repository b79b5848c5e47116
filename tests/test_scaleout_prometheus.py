"""The dashboard and every rule read the same from one exporter as from three replicas.

Two deployments watch the same calls at the same moments, each with its own fake provider
and its own real Prometheus (the shipped rules, scrape and evaluation every second): one
process on SQLite, and three replicas sharing a PostgreSQL store, with their partitions
still being balanced while the traffic runs. At one instant, after the traffic, every panel
query, every dashboard variable, every recording rule and the active alerts are read from
both Prometheus servers and must give the same series (instance aside) with the same values
within a tolerance for sample timing — not three times as much, not one series per replica.
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack
from typing import Any

from outbound_call_exporter import State
from outbound_call_exporter_plugins.telzino.fake import TelzinoFake

from promserver import Prometheus, dashboard_queries, recording_rule_queries, running_prometheus
from replicas import Replica, wait_for
from test_scaleout import LABELS, config, new_calls, register, summed

#: 40 % technical failures: the page goes pending in both deployments, so alerts are compared too
MIX = (State.COMPLETED, State.NO_ANSWER, State.FAILED, State.BUSY, State.FAILED)
LONG_CALLS = 24  # still talking at the end: the watched-calls gauges must sum to these
TICKS, PER_TICK, TICK_SECONDS = 10, 10, 2.0  # 100 calls over 20 s, each deployment
RELATIVE, ABSOLUTE = 0.2, 0.02  # what scrape and poll timing may move a value by
#: per process by design: how many exporters run each version (1 here, 3 there)
PER_PROCESS = {"panel 'Exporter version' A"}
#: request latency is each process's own; its series must match, its values need not
LATENCY = "status_request_duration"


def deployment_config(fake: TelzinoFake, store: dict[str, str]) -> dict[str, Any]:
    cfg = config(fake, "")
    del cfg["store_url"]
    cfg["accounts"][0]["max_requests_per_second"] = 400  # not what is compared: never throttled
    return {**cfg, **store}


def finished(replicas: list[Replica]) -> float:
    return sum(summed(replicas, "outbound_calls_finished_total", state=s.value, **LABELS) for s in State if s.terminal)


def series(prom: Prometheus, query: str, at: float) -> dict[frozenset[tuple[str, str]], float]:
    result = prom.api("query", query=query, time=f"{at:.3f}")["result"]
    return {frozenset((k, v) for k, v in r["metric"].items() if k != "instance"): float(r["value"][1]) for r in result}


def close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= max(ABSOLUTE, RELATIVE * max(abs(a), abs(b)))


def differences(name: str, one: dict, three: dict) -> list[str]:
    if set(one) != set(three):
        return [f"{name}: series differ: one {sorted(map(sorted, one))} / three {sorted(map(sorted, three))}"]
    if LATENCY in name or name.startswith("variable "):  # a variable is its label values only
        return []
    if "since last successful poll" in name:
        return [f"{name}: {one} / {three}" for k in one if abs(one[k] - three[k]) > 5]
    return [f"{name} {sorted(k)}: one {one[k]:.4g} / three {three[k]:.4g}" for k in one if not close(one[k], three[k])]


def test_dashboard_rules_and_alerts_read_the_same_from_one_exporter_or_three_replicas(tmp_path, pg_url):
    fakes = [TelzinoFake(speed=1.0, seed=5), TelzinoFake(speed=1.0, seed=5)]
    with ExitStack() as stack:
        for fake in fakes:
            stack.enter_context(fake.running())
        one = [Replica(tmp_path, "single", deployment_config(fakes[0], {"store_path": str(tmp_path / "calls.db")}))]
        three = [Replica(tmp_path, f"r{i}", deployment_config(fakes[1], {"store_url": pg_url})) for i in range(3)]
        for replica in one + three:
            stack.callback(replica.stop)
            replica.start()
        everyone = one + three
        wait_for(lambda: all(r.ready() for r in everyone), 60, "every exporter ready", everyone)
        proms = [stack.enter_context(running_prometheus(tmp_path / f"prometheus-{name}", [r.url[7:] for r in group]))
                 for name, group in (("one", one), ("three", three))]
        deployments = list(zip(fakes, (one, three)))

        for fake, group in deployments:
            register(group[0], new_calls(fake, LONG_CALLS, talk=600.0, outcomes=(State.COMPLETED,)))
        started = time.monotonic()
        for tick in range(TICKS):  # the same calls at the same moments, spread over the replicas
            for fake, group in deployments:
                register(group[tick % len(group)], new_calls(fake, PER_TICK, talk=2.0, outcomes=MIX))
            time.sleep(max(0.0, started + (tick + 1) * TICK_SECONDS - time.monotonic()))
        for _, group in deployments:
            wait_for(lambda: finished(group) == TICKS * PER_TICK, 60, "every short call finished", everyone)
        time.sleep(6)  # scraped, and every rule (rules of rules included) evaluated since
        at = time.time() - 1.5

        queries = {**dashboard_queries(), **recording_rule_queries(), "active alerts": "ALERTS"}
        problems, compared = [], 0
        for name, query in sorted(queries.items()):
            a, b = (series(p, query, at) for p in proms)
            if name in PER_PROCESS:
                assert sum(a.values()) == 1 and sum(b.values()) == 3, (name, a, b)
                continue
            compared += bool(a)
            problems += differences(name, a, b)
        assert not problems, "\n".join(problems)
        assert compared >= 40, f"only {compared} queries had data to compare"
        gauge = series(proms[1], 'sum(outbound_calls{state="in_progress"})', at)
        assert list(gauge.values()) == [LONG_CALLS], gauge
        pages = series(proms[1], 'ALERTS{alertname="OutboundCallTechnicalFailuresHigh"}', at)
        assert pages, "40 % technical failures: the page is at least pending"
