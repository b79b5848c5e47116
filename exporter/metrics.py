"""Prometheus metrics (docs/design.md, "Metrics").

Counters and histograms are ordinary prometheus-client metrics, with every label set
pre-created when an account is added and the children bound once, so the poll loop never looks
labels up. State that lives elsewhere (calls per state, account health, build info) is read at
scrape time by a custom collector from per-account counts: a scrape costs
O(accounts × states), never O(calls), and there are no stale label sets to purge.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._version import __version__
from .leases import PARTITIONS
from .loopmetrics import LoopCounter, LoopFamily, LoopHistogram
from .model import ACTIVE_STATES, FINAL_STATES, ErrorReason, FailureReason, State

if TYPE_CHECKING:
    from .lifecycle import Outcome

# `_created` series double the output and no dashboard uses them; rate() handles restarts.
disable_created_metrics()

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ANSWER_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120)
TALK_BUCKETS = (5, 15, 30, 60, 120, 180, 300, 600, 900, 1800, 3600)
DISCOVERY_SOURCES = ("api", "scope", "webhook")
WEBHOOK_RESULTS = ("accepted", "rejected", "invalid_signature", "unknown_call")
#: SIP final responses common on outbound calls get their own label value; others their class
SIP_CODES = frozenset({400, 403, 404, 408, 410, 480, 484, 486, 487, 488, 500, 502, 503, 504, 600, 603})
#: default failure reason when the provider says nothing beyond the state
STATE_FAILURE_REASON = {
    State.BUSY: FailureReason.BUSY,
    State.NO_ANSWER: FailureReason.NO_ANSWER,
    State.CANCELLED: FailureReason.CANCELLED,
    State.FAILED: FailureReason.OTHER,
}


def sip_code_label(code: int) -> str:
    """A bounded label value for a SIP status code: the code if common, else its class."""
    if code in SIP_CODES:
        return str(code)
    return f"{code // 100}xx" if 100 <= code < 700 else "other"


class AccountView(Protocol):
    """What the collector reads from an account at scrape time."""

    name: str
    provider_name: str

    @property
    def counts(self) -> Mapping[State, int]: ...

    def up(self, now: float) -> bool: ...

    @property
    def last_success(self) -> float: ...


#: one watched batch's job counters: (provider, account, batch id, {job state: count})
BatchJobs = tuple[str, str, str, Mapping[str, int]]


@dataclass(frozen=True)
class AccountMetrics:
    """An account's pre-created children, bound once for the hot path."""

    registered: Counter
    finished: Mapping[State, Counter]
    time_to_terminal: Mapping[State, Histogram]
    requests: LoopCounter
    errors: Mapping[ErrorReason, Counter]
    request_duration: LoopHistogram
    time_to_answer: Histogram
    talk_time: Histogram
    failures: Mapping[FailureReason, Counter]
    sip_failures: Callable[[str], Counter]
    discovered: Mapping[str, Counter]
    webhooks: Mapping[str, Counter]

    def count_finished(self, outcome: Outcome) -> None:
        """Everything a call reaching its terminal state counts, once."""
        state = outcome.finished
        assert state is not None
        self.finished[state].inc()
        if outcome.time_to_terminal is not None and state in self.time_to_terminal:
            self.time_to_terminal[state].observe(outcome.time_to_terminal)
        if outcome.talk_time is not None:
            self.talk_time.observe(outcome.talk_time)
        failure = outcome.failure_reason or STATE_FAILURE_REASON.get(state)
        if failure is not None and state not in (State.COMPLETED, State.EXPIRED):
            self.failures[failure].inc()
        if outcome.sip_status_code is not None and state is not State.COMPLETED:
            self.sip_failures(sip_code_label(outcome.sip_status_code)).inc()


class Metrics:
    """The exporter's own registry and metric families."""

    def __init__(
        self,
        buckets: Sequence[float],
        accounts: Callable[[], Iterable[AccountView]],
        clock: Callable[[], float],
        store_write_errors: Callable[[], int] = lambda: 0,
        batches: Callable[[], Iterable[BatchJobs]] = tuple,
        partitions_owned: Callable[[], int] = lambda: PARTITIONS,
    ) -> None:
        self.registry = CollectorRegistry()
        labels = ["provider", "account"]
        r = self.registry
        self.registered = Counter("outbound_calls_registered", "Calls that started being watched.", labels, registry=r)
        self.finished = Counter(
            "outbound_calls_finished", "Calls that reached each terminal state.", labels + ["state"], registry=r
        )
        self.time_to_terminal = Histogram(
            "outbound_call_time_to_terminal_seconds",
            "Time from the call's creation (provider clock when given, else registration) to its terminal state.",
            labels + ["state"],
            buckets=buckets,
            registry=r,
        )
        self.requests = LoopFamily("outbound_call_status_requests", "Status requests sent to the provider.")
        r.register(self.requests)
        self.errors = Counter(
            "outbound_call_status_request_errors", "Failed status requests, by reason.", labels + ["reason"], registry=r
        )
        self.request_duration = LoopFamily(
            "outbound_call_status_request_duration_seconds", "Latency of status requests.", buckets=LATENCY_BUCKETS
        )
        r.register(self.request_duration)
        self.time_to_answer = Histogram(
            "outbound_call_time_to_answer_seconds",
            "Time from the call's creation to the callee answering (provider clock).",
            labels,
            buckets=ANSWER_BUCKETS,
            registry=r,
        )
        self.talk_time = Histogram(
            "outbound_call_talk_time_seconds",
            "Talk time of answered calls as reported by the provider.",
            labels,
            buckets=TALK_BUCKETS,
            registry=r,
        )
        self.failures = Counter(
            "outbound_call_failures",
            "Calls that ended without completing, by failure reason.",
            labels + ["reason"],
            registry=r,
        )
        self.sip_failures = Counter(
            "outbound_call_sip_failures",
            "Calls that failed with a SIP status code (common codes, else the class).",
            labels + ["sip_code"],
            registry=r,
        )
        self.discovered = Counter(
            "outbound_call_discovered",
            "Calls that started being watched, by where the exporter learned of them (api, scope, webhook).",
            labels + ["source"],
            registry=r,
        )
        self.webhooks = Counter(
            "outbound_call_webhooks",
            "Result webhooks received, by result (accepted, rejected, invalid_signature, unknown_call).",
            labels + ["result"],
            registry=r,
        )
        r.register(StateCollector(accounts, clock, store_write_errors, batches, partitions_owned))

    def _sip_failure(self, lv: tuple[str, str], code: str) -> Counter:
        return self.sip_failures.labels(*lv, code)

    def add_account(self, provider: str, account: str) -> AccountMetrics:
        lv = (provider, account)
        return AccountMetrics(
            registered=self.registered.labels(*lv),
            finished={s: self.finished.labels(*lv, s.value) for s in FINAL_STATES},
            time_to_terminal={
                s: self.time_to_terminal.labels(*lv, s.value) for s in FINAL_STATES if s is not State.EXPIRED
            },
            requests=self.requests.labels(*lv),
            errors={e: self.errors.labels(*lv, e.value) for e in ErrorReason},
            request_duration=self.request_duration.labels(*lv),
            time_to_answer=self.time_to_answer.labels(*lv),
            talk_time=self.talk_time.labels(*lv),
            failures={f: self.failures.labels(*lv, f.value) for f in FailureReason},
            sip_failures=partial(self._sip_failure, lv),
            discovered={src: self.discovered.labels(*lv, src) for src in DISCOVERY_SOURCES},
            webhooks={res: self.webhooks.labels(*lv, res) for res in WEBHOOK_RESULTS},
        )


class StateCollector(Collector):
    """Scrape-time gauges computed from the in-memory per-account state."""

    def __init__(
        self,
        accounts: Callable[[], Iterable[AccountView]],
        clock: Callable[[], float],
        store_write_errors: Callable[[], int],
        batches: Callable[[], Iterable[BatchJobs]],
        partitions_owned: Callable[[], int] = lambda: PARTITIONS,
    ) -> None:
        self._partitions_owned = partitions_owned
        self._accounts = accounts
        self._clock = clock
        self._store_write_errors = store_write_errors
        self._batches = batches

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        calls = GaugeMetricFamily(
            "outbound_calls",
            "Watched calls currently in each non-terminal state.",
            labels=["provider", "account", "state"],
        )
        up = GaugeMetricFamily(
            "outbound_call_account_up",
            "1 while the account's status requests authenticate and succeed.",
            labels=["provider", "account"],
        )
        last = GaugeMetricFamily(
            "outbound_call_last_successful_poll_timestamp_seconds",
            "Unix time of the last successful status request (0 before the first).",
            labels=["provider", "account"],
        )
        for acc in self._accounts():
            lv = [acc.provider_name, acc.name]
            for state in ACTIVE_STATES:
                calls.add_metric(lv + [state.value], acc.counts.get(state, 0))
            up.add_metric(lv, 1.0 if acc.up(now) else 0.0)
            last.add_metric(lv, acc.last_success)
        batches = GaugeMetricFamily(
            "outbound_call_batch_jobs",
            "Jobs of each watched, incomplete batch by the provider's job state (the provider's own counters).",
            labels=["provider", "account", "batch", "state"],
        )
        for provider, account, batch, counts in self._batches():
            for job_state, value in counts.items():
                batches.add_metric([provider, account, batch, job_state], value)
        yield batches
        yield CounterMetricFamily(
            "outbound_call_store_write_errors",
            "Failed writes of poll results to the store (kept in memory and retried).",
            value=self._store_write_errors(),
        )
        yield GaugeMetricFamily(
            "outbound_call_exporter_partitions_owned",
            "Call partitions this process polls (with N replicas: those it leases).",
            value=self._partitions_owned(),
        )
        yield GaugeMetricFamily(
            "outbound_call_exporter_partitions",
            "The fixed number of call partitions (every one should be owned by a replica).",
            value=PARTITIONS,
        )
        info = GaugeMetricFamily(
            "outbound_call_exporter_build_info", "Build information; always 1.", labels=["version", "python_version"]
        )
        info.add_metric([__version__, platform.python_version()], 1.0)
        yield from (calls, up, last, info)
