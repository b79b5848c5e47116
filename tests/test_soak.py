"""Bounded soak: continuous register -> finish churn against every plugin's fake, on the real
process, while its memory (RSS) and open file descriptors are sampled.

`OCE_SOAK_SECONDS` sets the churn time: 60 s by default (CI), `OCE_SOAK_SECONDS=300` for the
five-minute run. After a warm-up (the first 30 %), the middle steady-state window is compared
with the last one: RSS may not grow by more than 10 % + 8 MiB, descriptors by more than 8. Then
nothing is lost: every acknowledged call is stored once, ended in its true state, counted once.

What to expect: RSS rises by ~3 MiB over the first ~100 s while SQLite's page cache fills, then
stays flat (measured over 300 s: 65.0 -> 65.1 MiB between the steady windows, 33 -> 33 fds).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, closing
from pathlib import Path

import httpx
import pytest
import yaml

from outbound_call_exporter import State
from outbound_call_exporter.testing import FakeCall, FakeProvider, Step
from outbound_call_exporter.plugins import load_registry

from conftest import expected_state, wait_until

# popped, not just read: the service takes every OCE_* variable as config (and refuses unknown
# keys), and the processes these tests start inherit the environment
SOAK_SECONDS = float(os.environ.pop("OCE_SOAK_SECONDS", "60"))
RSS_GROWTH, RSS_SLACK = 0.10, 8 * 1024 * 1024
POOL = 4  # max_concurrency per account: each account's keep-alive pool holds at most this many sockets
#: the pools may fill up late (a burst on a loaded machine): at most POOL more per account. A leak
#: per call would be thousands (CALLS_PER_SECOND x SOAK_SECONDS calls)
FD_SLACK_PER_ACCOUNT = POOL
CALLS_PER_SECOND = 40  # over all accounts

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def steps(fake: FakeProvider, outcome: State, end: float) -> list[Step]:
    raw = fake.raw_status
    out = [Step(raw[State.QUEUED], 0.0)]
    if outcome is State.COMPLETED:
        out.append(Step(raw[State.IN_PROGRESS], end / 2))
    return out + [Step(raw[outcome], end)]


@pytest.mark.timeout(SOAK_SECONDS + 240)
def test_churn_keeps_memory_and_descriptors_flat_and_loses_nothing(tmp_path):
    registry = load_registry()
    fakes = {f"soak-{name}": cls(seed=i) for i, (name, cls) in enumerate(sorted(registry.fakes.items()))}
    rng = random.Random(21)
    with ExitStack() as stack:
        for fake in fakes.values():
            stack.enter_context(fake.running())
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        store = tmp_path / "calls.db"
        config = tmp_path / "config.yml"
        config.write_text(yaml.safe_dump({
            "listen_address": f"127.0.0.1:{port}", "store_path": str(store), "log_level": "warning",
            "accounts": [{"name": name, "provider": f.provider, "base_url": f.url, "settings": f.demo_settings(),
                          "max_requests_per_second": 1000, "max_concurrency": POOL,
                          "poll_interval_seconds": {"queued": 0.2, "dialing": 0.2, "in_progress": 0.2}}
                         for name, f in fakes.items()]}))
        log = tmp_path / "service.log"
        proc = subprocess.Popen([sys.executable, "-m", "outbound_call_exporter.cli", "run", "--config", str(config)],
                                stdout=log.open("wb"), stderr=subprocess.STDOUT)
        acked: dict[str, tuple[str, FakeCall, FakeProvider]] = {}
        try:
            wait_until(lambda: _ready(url), message="service ready")
            samples = churn(url, proc.pid, fakes, rng, acked)
            wait_until(lambda: _watched(url) == 0, timeout=60, message="every churned call finishes")
            metrics = httpx.get(f"{url}/metrics").text
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
        assert code == 0, log.read_text()[-3000:]

    assert_flat(samples, fd_slack=FD_SLACK_PER_ACCOUNT * len(fakes))
    assert_nothing_lost(store, acked, metrics, registry)


def churn(url: str, pid: int, fakes: dict[str, FakeProvider], rng: random.Random,
          acked: dict[str, tuple[str, FakeCall, FakeProvider]]) -> list[tuple[float, int, int]]:
    """Register calls for SOAK_SECONDS (each finishes within 1.5 s); sample (t, rss, fds) each second."""
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        start = time.monotonic()
        while not stop.wait(1.0):
            samples.append((time.monotonic() - start, rss_bytes(pid), open_fds(pid)))

    sampler = threading.Thread(target=sample, name="sampler", daemon=True)
    sampler.start()
    names = list(fakes)
    outcomes = (State.COMPLETED, State.FAILED, State.BUSY, State.NO_ANSWER, State.CANCELLED)
    per_tick = max(1, round(CALLS_PER_SECOND / 5))
    try:
        with httpx.Client(base_url=url, timeout=10, trust_env=False) as client:
            start = time.monotonic()
            while time.monotonic() - start < SOAK_SECONDS:
                tick = time.monotonic()
                batch = []
                for _ in range(per_tick):
                    name = rng.choice(names)
                    fake = fakes[name]
                    outcome = rng.choice([o for o in outcomes if o in fake.raw_status])
                    call = fake.add_call(steps=steps(fake, outcome, rng.uniform(0.3, 1.5)), outcome=outcome)
                    batch.append((name, call, fake))
                response = client.post("/api/v1/calls", json=[
                    {"account": n, "call_id": c.call_id, "params": c.params} for n, c, _ in batch])
                assert response.status_code == 201, response.text
                acked.update({f"{n}/{c.call_id}": (n, c, f) for n, c, f in batch})
                time.sleep(max(0.0, 0.2 - (time.monotonic() - tick)))
    finally:
        stop.set()
        sampler.join(5)
    return samples


def assert_flat(samples: list[tuple[float, int, int]], fd_slack: int) -> None:
    assert len(samples) >= 10, "too few samples"
    n = len(samples)
    first = samples[int(n * 0.30):int(n * 0.55)]
    last = samples[int(n * 0.75):]
    rss_first = statistics.median(s[1] for s in first)
    rss_last = statistics.median(s[1] for s in last)
    fds_first = max(s[2] for s in first)
    fds_last = max(s[2] for s in last)
    summary = (f"RSS {rss_first / 2**20:.1f} -> {rss_last / 2**20:.1f} MiB, fds {fds_first} -> {fds_last} "
               f"over {samples[-1][0]:.0f}s")
    print(f"soak: {summary}")
    assert rss_last <= rss_first * (1 + RSS_GROWTH) + RSS_SLACK, f"memory grows under churn: {summary}"
    assert fds_last <= fds_first + fd_slack, f"descriptors leak under churn: {summary}"


def assert_nothing_lost(store: Path, acked: dict[str, tuple[str, FakeCall, FakeProvider]], metrics: str,
                        registry) -> None:
    assert len(acked) >= SOAK_SECONDS * CALLS_PER_SECOND * 0.5, f"only {len(acked)} calls churned"
    with closing(sqlite3.connect(store)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = {f"{a}/{c}": (state, watching) for a, c, state, watching in
                db.execute("SELECT account, call_id, state, watching FROM calls")}
        terminal_rows = dict(db.execute(
            "SELECT c.account || '/' || c.call_id, count(*) FROM history h JOIN calls c ON c.seq = h.call_seq"
            " WHERE h.state IN ('completed', 'failed', 'busy', 'no_answer', 'cancelled', 'expired')"
            " GROUP BY h.call_seq").fetchall())
    assert set(rows) == set(acked)
    for key, (name, call, fake) in acked.items():
        expected = expected_state(registry, fake, call)
        assert rows[key] == (expected, 0), (key, rows[key], expected)
        assert terminal_rows.get(key) == 1, (key, terminal_rows.get(key))
    registered = finished = 0.0
    for line in metrics.splitlines():
        if line.startswith("outbound_calls_registered_total{"):
            registered += float(line.rsplit(" ", 1)[1])
        if line.startswith("outbound_calls_finished_total{"):
            finished += float(line.rsplit(" ", 1)[1])
    assert registered == finished == len(acked), (registered, finished, len(acked))


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _watched(url: str) -> float:
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("outbound_calls{"):
            total += float(line.rsplit(" ", 1)[1])
    return total
