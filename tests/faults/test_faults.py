"""Fault injection, one case per fault, against the real service (see `fault_harness`).

Each case: the fault is on for a window while `/metrics` is scraped; the right reason is
counted (and only it); requests during the window are bounded by backoff (or by the account
pause, for 401/403/429); the bystander account is unaffected; and after the fault clears every
call reaches its true terminal state.
"""

from __future__ import annotations

import logging
import time
import uuid

import pytest

from outbound_call_exporter import health
from outbound_call_exporter.testing import Step, faults, http_date_in

from conftest import wait_until
from fault_harness import BYSTANDER, CADENCE, VICTIM, free_port, scene

WINDOW = 2.0  # seconds each fault stays on while measured
MIB = 1024 * 1024


# -- faults the host retries per call with exponential backoff ------------------------------------
# (more shapes of bad answer -- arrays, bare strings, non-UTF-8, empty 500s, 4xx -- go through every
# plugin's parsing in test_every_plugin)

PER_CALL = [
    pytest.param(faults.status(500), "server_error", id="http-500"),
    pytest.param(faults.status(502, body=b"<html>Bad Gateway</html>"), "server_error", id="http-502-html"),
    pytest.param(faults.status(503), "server_error", id="http-503"),
    pytest.param(faults.stall(), "timeout", id="read-timeout-mid-body"),
    pytest.param(faults.hang(), "timeout", id="accepts-never-answers"),
    pytest.param(faults.drip(100_000, every=0.05), "timeout", id="slow-drip"),
    pytest.param(faults.reset(), "connection_error", id="reset-mid-body"),
    pytest.param(faults.malformed(), "invalid_response", id="malformed-json"),
    pytest.param(faults.wrong_shape(b'{"status": {"code": 3}, "created_at": true}'), "invalid_response",
                 id="wrong-shape"),
    pytest.param(faults.huge(64 * MIB), "invalid_response", id="64MiB-body"),
]


@pytest.mark.parametrize("fault, reason", PER_CALL)
def test_fault_backs_off_per_call_and_recovers(tmp_path, registry, fault, reason):
    with scene(tmp_path, registry) as s:
        s.victim.inject(fault, times=None)
        s.register()
        s.keep_scraping(WINDOW)
        sent = s.requests_sent(VICTIM)
        s.assert_backoff(sent, WINDOW, len(s.victim_calls), at_least=2)
        s.assert_bystander_unaffected()
        assert all(s.svc.call(VICTIM, c.call_id)["watching"] for c in s.victim_calls), "a fault ended a call"

        s.victim.clear_faults()
        records = s.assert_victims_recover()
        s.assert_only_reason(reason, records, exact=s.victim.requests["fault"])
        if reason == "timeout":  # one overall deadline (0.5 s) per exchange, however the bytes trickle
            labels = {"provider": "telzino", "account": VICTIM}
            total = s.svc.metric("outbound_call_status_request_duration_seconds_count", **labels)
            within = s.svc.metric("outbound_call_status_request_duration_seconds_bucket", le="1.0", **labels)
            assert within == total, f"{total - within} exchanges outlived the 0.5 s deadline by 0.5 s"
        if fault.name == "huge":  # the body was capped at max_response_bytes, not read to the end
            per_response = s.victim.fault_bytes_sent / s.victim.requests["fault"]
            assert per_response < 24 * MIB, f"{per_response / MIB:.1f} MiB written per 64 MiB response"


def test_retry_after_on_5xx_is_a_lower_bound_per_call(tmp_path, registry):
    with scene(tmp_path, registry) as s:
        s.victim.inject(faults.status(503, retry_after="1.2"), times=None)
        s.register(victims=3)
        s.keep_scraping(3.0)
        for call in s.victim_calls:
            times = [t for t, cid in list(s.victim.arrivals) if cid == call.call_id]
            gaps = [b - a for a, b in zip(times, times[1:])]
            assert gaps and min(gaps) >= 1.1, f"retried {min(gaps):.2f}s after a 503 with Retry-After: 1.2"
        s.assert_bystander_unaffected()
        s.victim.clear_faults()
        records = s.assert_victims_recover()
        s.assert_only_reason("server_error", records, exact=s.victim.requests["fault"])


# -- connection refused: nothing listens until the provider comes back ------------------------------

def test_connection_refused_backs_off_and_recovers_when_the_provider_returns(tmp_path, registry):
    with scene(tmp_path, registry, victim_port=free_port()) as s:
        s.victim.down()
        s.register()
        s.keep_scraping(WINDOW)
        sent = s.requests_sent(VICTIM)
        s.assert_backoff(sent, WINDOW, len(s.victim_calls), at_least=2)
        assert s.victim.requests["status"] == 0
        s.assert_bystander_unaffected()

        s.victim.up()
        records = s.assert_victims_recover()
        refused = s.assert_only_reason("connection_error", records)
        assert refused >= sent - len(s.victim_calls), "requests sent while nothing listened were not all refused"


# -- faults that pause the whole account -------------------------------------------------------

def _assert_quiet_after(s, status: int, quiet: float, margin: float = 0.3) -> int:
    """After each `status` answer at time t, no request arrived in [t + margin, t + quiet]
    (requests already sent when it arrived may land just after it). Returns how many."""
    answered = [t for t, _, code in list(s.victim.log) if code == status]
    arrivals = [t for t, _ in list(s.victim.arrivals)]
    for t in answered:
        early = [a - t for a in arrivals if t + margin <= a <= t + quiet]
        assert not early, f"requests {early} s after a {status} that paused the account for {quiet}s"
    return len(answered)


@pytest.mark.parametrize("retry_after, quiet", [
    pytest.param("1.5", 1.4, id="seconds"),
    pytest.param(http_date_in(3), 1.9, id="http-date"),  # a whole-second date: 2 to 3 s away
])
def test_429_retry_after_pauses_the_whole_account(tmp_path, registry, retry_after, quiet):
    with scene(tmp_path, registry) as s:
        s.victim.inject(faults.status(429, retry_after=retry_after), times=None)
        s.register()
        s.keep_scraping(3.5)
        assert _assert_quiet_after(s, 429, quiet) >= 2, "the pause never ended"
        s.assert_backoff(s.requests_sent(VICTIM), 3.5, len(s.victim_calls), at_most=0.25, at_least=0.3)
        assert s.up(VICTIM) == 1, "429 is about the request rate, not the account's health"
        s.assert_bystander_unaffected()

        s.victim.clear_faults()
        records = s.assert_victims_recover()
        s.assert_only_reason("rate_limited", records, exact=s.victim.requests["fault"])


def test_429_without_retry_after_backs_off_exponentially(tmp_path, registry):
    """Repeated 429s with no Retry-After: the wait must grow like any other error's backoff
    (README: "Errors back off per call ... over an exponentially growing window").

    One call, 6 s of 429s. A constant backoff (cadence + U(0, 2 x cadence), rescheduled within
    another cadence) never leaves more than 0.8 s between two requests; an exponential one
    leaves a gap over 1.2 s within 6 s except with probability ~4e-4 (simulated).
    """
    with scene(tmp_path, registry) as s:
        s.victim.inject(faults.status(429), times=None)
        s.register(victims=1)
        s.keep_scraping(6.0)
        times = s.victim_arrivals(s.registered_at, time.time()) + [time.time()]
        gap = max(b - a for a, b in zip(times, times[1:]))
        assert gap > 1.2, f"{len(times) - 1} requests in 6 s, never more than {gap:.2f}s apart"
        s.victim.clear_faults()
        records = s.assert_victims_recover()
        s.assert_only_reason("rate_limited", records, exact=s.victim.requests["fault"])


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_pauses_the_account_and_marks_it_down(tmp_path, registry, monkeypatch, status):
    monkeypatch.setattr(health, "AUTH_BACKOFF_BASE_SECONDS", 1.0)  # 5 s in production: scaled for time
    with scene(tmp_path, registry) as s:
        s.victim.inject(faults.status(status, body=b'{"error": "Unauthorized"}'), times=None)
        s.register(victims=2)  # few calls: see the burst case below for why
        s.keep_scraping(2.5)
        assert s.up(VICTIM) == 0, "credentials refused but account_up is not 0"
        assert s.svc.metric("outbound_call_last_successful_poll_timestamp_seconds",
                            provider="telzino", account=VICTIM) == 0
        assert _assert_quiet_after(s, status, 0.95) >= 1
        s.assert_backoff(s.requests_sent(VICTIM), 2.5, len(s.victim_calls), at_most=0.25, at_least=0.5)
        s.assert_bystander_unaffected()

        s.victim.clear_faults()
        records = s.assert_victims_recover()
        s.assert_only_reason("unauthorized", records, exact=s.victim.requests["fault"])


def test_a_burst_of_concurrent_401s_is_one_auth_failure(tmp_path, registry, monkeypatch):
    """Credentials revoked while 12 requests are in flight: that is one failure, so the first
    pause is base + U(0, 2 x base) (README: 5 s, 10 s, ... 5 min), not minutes. Twice, so that
    a lucky draw of the long pause cannot pass it."""
    monkeypatch.setattr(health, "AUTH_BACKOFF_BASE_SECONDS", 1.0)
    with scene(tmp_path, registry) as s:
        calls = [s.victim.add_call(steps=[Step("queued", 0)]) for _ in range(12)]
        for round_ in range(2):
            served = s.victim.requests["fault"]
            # slow 401s: every call's first poll (jittered over 0.2 s) is in flight before one answers
            s.victim.inject(faults.slow(0.4, faults.status(401)), times=12)
            if round_ == 0:
                s.svc.client.post("/api/v1/calls", json=[{"account": VICTIM, "call_id": c.call_id,
                                                          "params": c.params} for c in calls])
            wait_until(lambda: s.victim.requests["fault"] == served + 12, timeout=10, message="the 401 burst")
            wait_until(lambda: s.up(VICTIM) == 0, timeout=5, message="account down")
            # first pause: base + U(0, 2 x base) = at most 3 s, plus a cadence and scheduling slack
            wait_until(lambda: s.up(VICTIM) == 1, timeout=4.5, message="account up within 3 x base after one burst")


# -- not an error: an unknown status value ----------------------------------------------------

def test_unknown_status_is_polled_at_its_cadence_and_logged_once(tmp_path, registry, caplog):
    value = f"teleporting-{uuid.uuid4().hex[:6]}"
    with caplog.at_level(logging.WARNING, logger="outbound_call_exporter.poller"), scene(tmp_path, registry) as s:
        s.victim.inject(faults.unknown_status(value), times=None)
        s.register()
        calls = len(s.victim_calls)
        wait_until(lambda: s.calls_in("unknown") == calls, timeout=5, message="every call in state unknown")
        start = s.requests_sent(VICTIM)
        s.keep_scraping(WINDOW)
        sent = s.requests_sent(VICTIM) - start
        per_call = WINDOW / 0.3  # the test cadence for `unknown`; not an error, so no backoff
        assert 0.5 * calls * per_call <= sent <= calls * (per_call + 2), f"{sent} polls of unknown calls"
        s.assert_bystander_unaffected()

        s.victim.clear_faults()
        records = s.assert_victims_recover()
        assert set(s.errors(VICTIM).values()) == {0.0}, "an unknown status was counted as an error"
        for record in records:
            assert {"state": "unknown", "provider_status": value} in \
                [{k: h[k] for k in ("state", "provider_status")} for h in record["history"]]
        warnings = [r for r in caplog.records if value in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_bystander_cadence_is_not_slowed_by_a_hanging_provider(tmp_path, registry):
    """With every victim request hanging to the deadline, the bystander still polls at its
    cadence (its own poller, client and connection pool)."""
    with scene(tmp_path, registry) as s:
        s.victim.inject(faults.hang(), times=None)
        s.register(bystanders=0)
        never = [s.bystander.add_call(steps=[Step("queued", 0)]) for _ in range(4)]
        response = s.svc.client.post("/api/v1/calls", json=[
            {"account": BYSTANDER, "call_id": c.call_id, "params": c.params} for c in never])
        assert response.status_code == 201
        before = s.bystander.requests["status"]
        s.keep_scraping(2.0)
        polled = s.bystander.requests["status"] - before
        expected = 4 * 2.0 / CADENCE
        assert polled >= 0.7 * expected, f"bystander polled {polled} times in 2 s; its cadence gives {expected:.0f}"
        s.victim.clear_faults()
        s.assert_victims_recover()
