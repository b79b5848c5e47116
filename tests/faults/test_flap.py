"""A provider that flaps between up and down, with calls registered all along.

Bounded: `OCE_FLAP_SECONDS` of flapping (default 40 s of wall time at the fast test cadence;
`OCE_FLAP_SECONDS=300` for the five-minute manual run). Down phases (1-3 s) rotate through
connection refused (nothing listening), 503, a hang to the deadline, a TCP reset and 502; up
phases last 1.5-3 s. Phase lengths come from a seeded RNG (`OCE_FLAP_SEED`).
"""

from __future__ import annotations

import os
import random
import time

from outbound_call_exporter import State
from outbound_call_exporter.testing import faults

from fault_harness import BYSTANDER, CADENCE, VICTIM, body, free_port, quick_steps, scene
from conftest import wait_until

# popped, not just read: the service takes every OCE_* variable as config (and refuses unknown
# keys), and the processes these tests start inherit the environment
FLAP_SECONDS = float(os.environ.pop("OCE_FLAP_SECONDS", "40"))
SEED = int(os.environ.pop("OCE_FLAP_SEED", "5"))
DOWN_KINDS = ("refused", "503", "hang", "reset", "502")
FAULTS = {"503": faults.status(503), "502": faults.status(502), "hang": faults.hang(),
          "reset": faults.reset()}
OUTCOMES = (State.COMPLETED, State.BUSY, State.NO_ANSWER, State.FAILED)


def test_flapping_provider_loses_nothing_and_backs_off(tmp_path, registry):
    rng = random.Random(SEED)
    with scene(tmp_path, registry, victim_port=free_port()) as s:
        victim_calls, bystander_calls = [], []
        down_time = down_allowed = down_sent = 0.0
        phases: list[tuple[str, float]] = []
        kinds = iter(DOWN_KINDS * 1000)
        next_register = 0.0
        start = time.monotonic()
        while time.monotonic() - start < FLAP_SECONDS - 4:  # a cycle lasts up to 6 s
            # -- an up phase: calls register and progress ---------------------------------------
            phase_end = time.monotonic() + rng.uniform(1.5, 3.0)
            before = s.svc.metric("outbound_call_last_successful_poll_timestamp_seconds",
                                  provider="telzino", account=VICTIM)
            while time.monotonic() < phase_end:
                next_register = _tick(s, rng, victim_calls, bystander_calls, next_register)
            phases.append(("up", 0.0))
            after = s.svc.metric("outbound_call_last_successful_poll_timestamp_seconds",
                                 provider="telzino", account=VICTIM)
            assert _watched(s) == 0 or after > before, "no successful poll during an up phase"

            # -- a down phase ---------------------------------------------------------------------
            kind, seconds = next(kinds), rng.uniform(1.0, 3.0)
            sent_before = s.requests_sent(VICTIM)
            if kind == "refused":
                s.victim.down()
            else:
                s.victim.inject(FAULTS[kind], times=None)
            phase_end = time.monotonic() + seconds
            while time.monotonic() < phase_end:
                tick = time.monotonic()
                next_register = _tick(s, rng, victim_calls, bystander_calls, next_register)
                # what the cadence alone would allow: every watched call polled each CADENCE
                down_allowed += _watched(s) * (time.monotonic() - tick) / CADENCE
            s.victim.up()
            s.victim.clear_faults()
            phases.append((kind, seconds))
            down_time += seconds
            down_sent += s.requests_sent(VICTIM) - sent_before
            # flapping down for seconds at a time is not "every request failed for 60 s": no alert flapping
            assert s.up(VICTIM) == 1, f"account_up dropped during a {seconds:.1f}s {kind} phase"

        # -- everything recovers, nothing is lost ------------------------------------------------
        print(f"flap: {time.monotonic() - start:.0f}s, {down_sent:.0f} requests in {down_time:.0f}s of down phases; the cadence allows "
              f"{down_allowed:.0f}; {len(victim_calls)} calls; phases {phases}")
        assert down_allowed > 0 and down_sent <= 0.6 * down_allowed, \
            f"{down_sent:.0f} requests in {down_time:.0f}s of down phases; the cadence allows {down_allowed:.0f}"
        s.victim_calls, s.bystander_calls = victim_calls, bystander_calls
        records = s.assert_victims_recover(timeout=60)
        print(f"flap: recovered {time.monotonic() - start:.0f}s after the start")
        errors = s.errors(VICTIM)
        for reason in ("connection_error", "server_error", "timeout"):
            assert errors[reason] > 0, f"{reason} never counted: {errors}"
        unexpected = {r: v for r, v in errors.items()
                      if r not in ("connection_error", "server_error", "timeout") and v}
        assert not unexpected, unexpected
        assert sum(r["poll_errors"] for r in records) == sum(errors.values())
        listed = s.svc.client.get("/api/v1/calls", params={"account": VICTIM, "limit": 1000}).json()["calls"]
        assert {c["call_id"] for c in listed} == {c.call_id for c in victim_calls}
        wait_until(lambda: all(not s.svc.call(BYSTANDER, c.call_id)["watching"] for c in bystander_calls),
                   timeout=10, message="bystander calls finish")
        s.assert_bystander_unaffected()
        assert len(victim_calls) >= FLAP_SECONDS, f"only {len(victim_calls)} calls exercised the flapping"
        assert {k for k, _ in phases} >= set(DOWN_KINDS) | {"up"}, phases


def _watched(s) -> float:
    samples = s.svc.samples()
    return sum(v for (name, labels), v in samples.items()
               if name == "outbound_calls" and ("account", VICTIM) in labels)


def _tick(s, rng: random.Random, victim_calls: list, bystander_calls: list, next_register: float) -> float:
    """One 0.25 s step: scrape (the service must answer), and register new calls each second."""
    response = s.svc.client.get("/metrics")
    assert response.status_code == 200
    now = time.monotonic()
    if now >= next_register:
        new_victims = [s.victim.add_call(steps=quick_steps(s.victim, o, rng.uniform(0.5, 3.0)), outcome=o)
                       for o in rng.sample(OUTCOMES, 2)]
        new_bystander = [s.bystander.add_call(steps=quick_steps(s.bystander, o, rng.uniform(0.5, 3.0)), outcome=o)
                         for o in rng.sample(OUTCOMES, 1)]
        items = [body(c, VICTIM) for c in new_victims] + [body(c, BYSTANDER) for c in new_bystander]
        assert s.svc.client.post("/api/v1/calls", json=items).status_code == 201
        victim_calls += new_victims
        bystander_calls += new_bystander
        next_register = now + 1.0
    time.sleep(0.25)
    return next_register
