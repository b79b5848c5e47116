"""Several accounts, one provider down the whole time (and one hanging): the rest are untouched.

One healthy account per installed plugin that ships a fake (so new plugins join automatically),
plus `dead` (nothing listens on its port) and `hung` (every request hangs to the deadline).
"""

from __future__ import annotations

import time
from contextlib import ExitStack

from outbound_call_exporter import State, health
from outbound_call_exporter.testing import faults
from outbound_call_exporter_plugins.telzino.fake import TelzinoFake

from conftest import account, expected_state, make_config, running_service, wait_until
from fault_harness import free_port, CADENCE, REASONS, body, parse_iso, quick_steps

OUTCOMES = (State.COMPLETED, State.BUSY, State.NO_ANSWER, State.FAILED, State.CANCELLED)
WINDOW = 5.0


def test_one_provider_down_all_along_leaves_every_other_account_alone(tmp_path, registry, monkeypatch):
    monkeypatch.setattr(health, "DOWN_AFTER_SECONDS", 2.0)  # 60 s in production: scaled for time
    healthy = {f"ok-{name}": cls(seed=i) for i, (name, cls) in enumerate(sorted(registry.fakes.items()))}
    hung = TelzinoFake(seed=99)
    with ExitStack() as stack:
        for fake in [*healthy.values(), hung]:
            stack.enter_context(fake.running())
        hung.inject(faults.hang(), times=None)
        dead_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there, ever
        accounts = [account(name, f.provider, f.url, f.demo_settings()) for name, f in healthy.items()]
        accounts += [account("dead", "telzino", dead_url, hung.demo_settings()),
                     account("hung", "telzino", hung.url, hung.demo_settings())]
        config = make_config(tmp_path, accounts, request_timeout_seconds=0.5)
        svc = stack.enter_context(running_service(config, registry))

        calls = {name: [f.add_call(steps=quick_steps(f, o, 0.8), outcome=o) for o in OUTCOMES if o in f.raw_status]
                 for name, f in healthy.items()}
        stranded = [hung.add_call(steps=quick_steps(hung, o, 0.8), outcome=o) for o in OUTCOMES[:4]]
        items = [body(c, name) for name, cs in calls.items() for c in cs]
        items += [body(c, "dead") for c in stranded] + [body(c, "hung") for c in stranded]
        assert svc.client.post("/api/v1/calls", json=items).status_code == 201

        started = time.monotonic()
        while time.monotonic() - started < WINDOW:  # the service answers throughout
            assert svc.client.get("/metrics").status_code == 200
            time.sleep(0.2)

        for name, fake in healthy.items():
            labels = {"provider": fake.provider, "account": name}
            for call in calls[name]:
                record = svc.call(name, call.call_id)
                assert record["state"] == expected_state(registry, fake, call), record
                lag = parse_iso(record["last_polled_at"]) - call.ended_at(fake.speed)
                assert lag < 1.5, f"{name}: noticed the end {lag:.2f}s late"
            for reason in REASONS:
                assert svc.metric("outbound_call_status_request_errors_total", reason=reason, **labels) == 0, \
                    (name, reason)
            assert svc.metric("outbound_call_account_up", **labels) == 1, name

        for name, reason in (("dead", "connection_error"), ("hung", "timeout")):
            labels = {"provider": "telzino", "account": name}
            wait_until(lambda: svc.metric("outbound_call_account_up", **labels) == 0, timeout=5,
                       message=f"{name} account down")
            assert svc.metric("outbound_call_last_successful_poll_timestamp_seconds", **labels) == 0
            assert svc.metric("outbound_call_status_request_errors_total", reason=reason, **labels) > 0
            assert sum(svc.metric("outbound_calls", state=s.value, **labels) for s in State
                       if not s.terminal) == len(stranded), f"{name}: stranded calls still watched"
            sent = svc.metric("outbound_call_status_requests_total", **labels)
            allowed = len(stranded) * WINDOW / CADENCE
            assert len(stranded) <= sent <= 0.5 * allowed, f"{name}: {sent} requests in {WINDOW}s (cadence: {allowed})"
        assert hung.requests["fault"] > 0
