"""The fault-injection harness: the real service, a faulty provider and a healthy bystander.

Every fault case runs the same scene: two accounts, `victim` (its fake misbehaves) and
`bystander` (its own fake, healthy), both at a fast test cadence. Calls are registered on both;
the fault stays on for a measured window while the test scrapes `/metrics`; then it clears.
The checks every case shares live here, so each case only says what is special about it:

- the service stays up: every scrape during the window answers 200, quickly, with the
  contract's series;
- the right `reason` is counted, and only that one;
- backoff is real: status requests sent during the window, against what the cadence alone
  would allow;
- the bystander account is unaffected: no errors, `account_up` 1, its calls seen finishing
  within a cadence or two of the provider's end time, while the victim is still failing;
- once the fault clears every victim call reaches its true terminal state (state, raw status
  and `ended_at` from the provider's clock), and its record counts the errors it saw.
"""

from __future__ import annotations

import socket
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import httpx

from outbound_call_exporter import State
from outbound_call_exporter.testing import FakeCall, FakeProvider, Step
from outbound_call_exporter.model import ErrorReason
from outbound_call_exporter.plugins import Registry
from outbound_call_exporter_plugins.telzino.fake import TelzinoFake

from conftest import RunningService, account, expected_state, make_config, running_service, wait_until

VICTIM, BYSTANDER = "victim", "bystander"
#: the test cadence of `conftest.account`: queued/dialing 0.2 s, in_progress/unknown 0.3 s
CADENCE = 0.2
REASONS = tuple(r.value for r in ErrorReason)
#: a mix of true outcomes, so "recovered" means "recovered to the right one"
OUTCOMES = (State.COMPLETED, State.BUSY, State.NO_ANSWER, State.FAILED, State.COMPLETED, State.BUSY)
#: how late after the provider's end a healthy account may notice (cadence + jitter + slack)
BYSTANDER_LAG = 1.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quick_steps(fake: FakeProvider, outcome: State, end: float = 0.6) -> list[Step]:
    """A short lifecycle in the fake's own raw statuses: queued, (dialing), in progress, end."""
    raw = fake.raw_status
    steps = [Step(raw[State.QUEUED], 0.0)]
    if State.DIALING in raw and outcome is not State.CANCELLED:
        steps.append(Step(raw[State.DIALING], end * 0.2))
    if outcome is State.COMPLETED:
        steps.append(Step(raw[State.IN_PROGRESS], end * 0.5))
    return steps + [Step(raw[outcome], end)]


def body(call: FakeCall, account_name: str) -> dict[str, Any]:
    return {"account": account_name, "call_id": call.call_id, "params": call.params}


def parse_iso(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass
class Scene:
    svc: RunningService
    registry: Registry
    victim: FakeProvider
    bystander: FakeProvider
    victim_calls: list[FakeCall] = field(default_factory=list)
    bystander_calls: list[FakeCall] = field(default_factory=list)
    registered_at: float = 0.0
    scrape_latencies: list[float] = field(default_factory=list)

    # -- metrics ------------------------------------------------------------------------------

    def labels(self, name: str, fake: FakeProvider) -> dict[str, str]:
        return {"provider": fake.provider, "account": name}

    def errors(self, name: str = VICTIM, reason: str | None = None) -> dict[str, float] | float:
        """One reason's error count, or all of them by reason."""
        fake = self.victim if name == VICTIM else self.bystander
        samples = self.svc.samples()
        counts = {r: samples.get(("outbound_call_status_request_errors_total",
                                  frozenset({**self.labels(name, fake), "reason": r}.items())), -1.0)
                  for r in REASONS}
        return counts if reason is None else counts[reason]

    def requests_sent(self, name: str = VICTIM) -> float:
        fake = self.victim if name == VICTIM else self.bystander
        return self.svc.metric("outbound_call_status_requests_total", **self.labels(name, fake)) or 0.0

    def up(self, name: str = VICTIM) -> float | None:
        fake = self.victim if name == VICTIM else self.bystander
        return self.svc.metric("outbound_call_account_up", **self.labels(name, fake))

    def calls_in(self, state: str, name: str = VICTIM) -> float | None:
        fake = self.victim if name == VICTIM else self.bystander
        return self.svc.metric("outbound_calls", state=state, **self.labels(name, fake))

    # -- driving -------------------------------------------------------------------------------

    def register(self, victims: int = len(OUTCOMES), bystanders: int = 4, end: float = 0.6) -> None:
        """Add calls to both fakes and register them all in one batch."""
        self.victim_calls = [self.victim.add_call(steps=quick_steps(self.victim, o, end), outcome=o)
                             for o in OUTCOMES[:victims]]
        self.bystander_calls = [self.bystander.add_call(steps=quick_steps(self.bystander, o, end), outcome=o)
                                for o in OUTCOMES[:bystanders]]
        items = [body(c, VICTIM) for c in self.victim_calls] + [body(c, BYSTANDER) for c in self.bystander_calls]
        self.registered_at = time.time()
        response = self.svc.client.post("/api/v1/calls", json=items)
        assert response.status_code == 201, response.text

    def keep_scraping(self, seconds: float, interval: float = 0.2) -> None:
        """Scrape /metrics for `seconds` (bounded): the service must answer every time, fast."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = self.svc.client.get("/metrics")
            self.scrape_latencies.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
            assert "outbound_call_status_request_errors_total" in response.text
            time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
        assert self.svc.client.get("/-/healthy").status_code == 200
        assert max(self.scrape_latencies) < 2.0, f"slow scrapes during the fault: {max(self.scrape_latencies):.2f}s"

    def victim_arrivals(self, start: float, end: float) -> list[float]:
        ids = {c.call_id for c in self.victim_calls}
        return sorted(t for t, cid in list(self.victim.arrivals) if cid in ids and start <= t <= end)

    # -- the shared checks ---------------------------------------------------------------------

    def assert_bystander_unaffected(self) -> None:
        """Every bystander call finished, noticed promptly, with no error on that account."""
        for call in self.bystander_calls:
            record = self.svc.call(BYSTANDER, call.call_id)
            assert record["state"] == self.expected_state(self.bystander, call), record
            noticed = parse_iso(record["last_polled_at"])
            ended = call.ended_at(self.bystander.speed)
            assert noticed is not None and noticed - ended < BYSTANDER_LAG, \
                f"bystander noticed its call's end {noticed - ended:.2f}s late"
        errors = self.errors(BYSTANDER)
        assert set(errors.values()) == {0.0}, f"bystander errors: {errors}"
        assert self.up(BYSTANDER) == 1

    def assert_backoff(self, sent: float, window: float, calls: int, at_most: float = 0.5,
                       at_least: float = 1.0) -> None:
        """`sent` requests in `window` for `calls` failing calls: at most `at_most` of what the
        cadence alone allows, and at least `at_least` per call (it keeps trying)."""
        allowed = calls * window / CADENCE
        assert sent <= at_most * allowed, f"{sent:.0f} requests in {window}s; the cadence allows {allowed:.0f}"
        assert sent >= at_least * calls, f"only {sent:.0f} requests in {window}s for {calls} calls"

    def expected_state(self, fake: FakeProvider, call: FakeCall) -> str:
        return expected_state(self.registry, fake, call)

    def assert_victims_recover(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Every victim call reaches its true terminal state; returns the records."""
        def all_done() -> list[dict[str, Any]] | None:
            records = [self.svc.call(VICTIM, c.call_id) for c in self.victim_calls]
            return records if all(not r["watching"] for r in records) else None

        records = wait_until(all_done, timeout=timeout, message="every victim call finishes after the fault")
        for call, record in zip(self.victim_calls, records):
            assert record["state"] == self.expected_state(self.victim, call), record
            assert record["provider_status"] == call.steps[-1].status, record
            ended = parse_iso(record["ended_at"])
            if ended is not None:  # on the provider's clock, not when the exporter found out
                assert abs(ended - call.ended_at(self.victim.speed)) < 1.0, record
            terminal = [h for h in record["history"] if h["state"] == record["state"]]
            assert len(terminal) == 1, record["history"]
        wait_until(lambda: self.up(VICTIM) == 1, timeout=10, message="victim account up again")
        return records

    def assert_only_reason(self, reason: str, records: list[dict[str, Any]], exact: float | None = None) -> float:
        """Only `reason` was counted on the victim; its count matches the calls' records."""
        errors = self.errors(VICTIM)
        others = {r: v for r, v in errors.items() if r != reason and v != 0}
        assert not others, f"unexpected reasons {others} (expected only {reason})"
        assert errors[reason] >= 1, f"no {reason} counted: {errors}"
        assert sum(r["poll_errors"] for r in records) == errors[reason], \
            "the records' poll_errors disagree with the error counter"
        if exact is not None:
            assert errors[reason] == exact, f"{errors[reason]} {reason} counted, {exact} faults served"
        return errors[reason]


@contextmanager
def scene(tmp_path: Path, registry: Registry, victim: FakeProvider | None = None,
          bystander: FakeProvider | None = None, victim_port: int = 0,
          victim_extra: dict[str, Any] | None = None, **config: Any) -> Iterator[Scene]:
    """Run both fakes and the service (request timeout 0.5 s unless given)."""
    victim = victim or TelzinoFake(seed=1)
    bystander = bystander or TelzinoFake(seed=2)
    config.setdefault("request_timeout_seconds", 0.5)
    with ExitStack() as stack:
        stack.enter_context(victim.running(port=victim_port))
        stack.enter_context(bystander.running())
        cfg = make_config(tmp_path, [
            account(VICTIM, victim.provider, victim.url, victim.demo_settings(), **(victim_extra or {})),
            account(BYSTANDER, bystander.provider, bystander.url, bystander.demo_settings()),
        ], **config)
        svc = stack.enter_context(running_service(cfg, registry))
        yield Scene(svc, registry, victim, bystander)


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False
