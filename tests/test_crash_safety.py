"""Crash safety of the real process (`outbound-call-exporter run`) and its store.

- The kill loop: SIGKILL at random points (including during start-up) while a bulk
  registration stream and polling run, `OCE_KILL_ROUNDS` times (default 16, about 25 s),
  restarting on the same store each time. After every kill: `PRAGMA integrity_check` is ok,
  every acknowledged registration is stored, refused ones are not, an unanswered batch is all
  there or not at all, and no terminal outcome is lost, changed or recorded twice. At the end
  every call reaches its true terminal state with exactly one terminal history row.
- A read-only store path, or a disk that fills up, gives a clear error, never silent loss.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
import yaml

from outbound_call_exporter import State
from outbound_call_exporter.testing import FakeCall, Step
from outbound_call_exporter_plugins.telzino import STATUS_MAP
from outbound_call_exporter_plugins.telzino.fake import TelzinoFake

from conftest import wait_until

# popped, not just read: the service takes every OCE_* variable as config (and refuses unknown
# keys), and the processes these tests start inherit the environment
KILL_ROUNDS = int(os.environ.pop("OCE_KILL_ROUNDS", "16"))
SEED = int(os.environ.pop("OCE_KILL_SEED", "11"))
TERMINAL = tuple(s.value for s in State if s.terminal)
OUTCOMES = (State.COMPLETED, State.BUSY, State.NO_ANSWER, State.FAILED, State.COMPLETED)


# -- the process ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, port: int, store: Path, fake_url: str, settings: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({
        "listen_address": f"127.0.0.1:{port}", "store_path": str(store),
        "accounts": [{"name": "tz", "provider": "telzino", "base_url": fake_url, "settings": settings,
                      "max_requests_per_second": 1000,
                      "poll_interval_seconds": {"queued": 0.3, "dialing": 0.3, "in_progress": 0.3}}]}))
    return path


def start(config: Path, log: Path, preexec: Callable[[], None] | None = None,
          prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([*prefix, sys.executable, "-m", "outbound_call_exporter.cli", "run", "--config",
                             str(config)], stdout=log.open("ab"), stderr=subprocess.STDOUT, preexec_fn=preexec)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def steps(outcome: State, end: float) -> list[Step]:
    out = [Step("queued", 0.0), Step("dialing", end * 0.2)]
    if outcome is State.COMPLETED:
        out.append(Step("in_progress", end * 0.5))
    return out + [Step(outcome.value, end)]


# -- the store, read directly ---------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    state: str
    watching: bool
    ended_at: float | None
    registrations: int  # history rows of the registration itself (provider_status NULL, first)
    first_is_registration: bool
    terminal_rows: int


def snapshot(store: Path) -> dict[str, Row]:
    with closing(sqlite3.connect(store)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        history: dict[int, list[tuple[str, str | None]]] = {}
        for seq, state, status in db.execute("SELECT call_seq, state, provider_status FROM history ORDER BY id"):
            history.setdefault(seq, []).append((state, status))
        out = {}
        for seq, call_id, state, watching, ended in db.execute(
                "SELECT seq, call_id, state, watching, ended_at FROM calls"):
            rows = history.get(seq, [])
            out[call_id] = Row(state, bool(watching), ended,
                               sum(1 for s, p in rows if p is None and s == "queued"),
                               bool(rows) and rows[0] == ("queued", None),
                               sum(1 for s, _ in rows if s in TERMINAL))
    return out


# -- the registration stream ----------------------------------------------------------------------

@dataclass
class Registrar:
    """Posts batches of new calls continuously; sorts each batch by what the API said."""

    url: str
    fake: TelzinoFake
    rng: random.Random
    acked: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # an error answer, or never connected
    uncertain: list[list[str]] = field(default_factory=list)  # sent, no answer: all or nothing
    calls: dict[str, FakeCall] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5, trust_env=False) as client:
            while not self.stop.is_set():
                batch = []
                for _ in range(10):
                    outcome = self.rng.choice(OUTCOMES)
                    call = self.fake.add_call(steps=steps(outcome, self.rng.uniform(0.3, 4.0)), outcome=outcome)
                    self.calls[call.call_id] = call
                    batch.append(call.call_id)
                try:
                    response = client.post("/api/v1/calls", json=[{"account": "tz", "call_id": c} for c in batch])
                except httpx.ConnectError:
                    self.refused += batch
                    time.sleep(0.05)
                    continue
                except httpx.HTTPError:
                    self.uncertain.append(batch)
                    continue
                if response.status_code in (200, 201):
                    self.acked += batch
                else:
                    assert response.status_code == 503, response.text  # starting up (store loading)
                    assert "error" in response.json()
                    self.refused += batch
                time.sleep(0.2)


def test_sigkill_at_random_points_loses_nothing(tmp_path):
    rng = random.Random(SEED)
    fake = TelzinoFake(seed=SEED)
    with fake.running():
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        store = tmp_path / "calls.db"
        config = write_config(tmp_path / "config.yml", port, store, fake.url, fake.demo_settings())
        log = tmp_path / "service.log"
        registrar = Registrar(url, fake, random.Random(SEED + 1))
        thread = threading.Thread(target=registrar.run, name="registrar", daemon=True)
        thread.start()
        terminal_seen: dict[str, Row] = {}
        killed_before_ready = 0
        try:
            for _ in range(KILL_ROUNDS):
                proc = start(config, log)
                # the random point: a quarter during start-up (imports, opening and loading the store),
                # the rest while registrations and polls stream
                time.sleep(rng.uniform(0.05, 0.5) if rng.random() < 0.25 else rng.uniform(0.5, 2.5))
                killed_before_ready += not ready(url)
                kill(proc)
                terminal_seen = check_after_kill(store, registrar, terminal_seen)
        finally:
            registrar.stop.set()
            thread.join(10)

        assert len(registrar.acked) >= 10 * KILL_ROUNDS, "too few registrations acknowledged to test anything"
        assert terminal_seen, "no call ever became terminal before a kill"
        proc = start(config, log)
        try:
            wait_until(lambda: ready(url), message="service ready after the last kill")
            wait_until(lambda: not any(r.watching for r in snapshot(store).values()), timeout=60,
                       message="every stored call finishes")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()[-3000:]

        final = check_after_kill(store, registrar, terminal_seen)
        for call_id, row in final.items():
            call = registrar.calls[call_id]
            assert row.state == STATUS_MAP[call.steps[-1].status].value, (call_id, row)
            assert row.terminal_rows == 1, (call_id, row)
            assert row.ended_at is not None and abs(row.ended_at - call.ended_at(fake.speed)) < 1.0, row
        print(f"kill loop: {KILL_ROUNDS} kills ({killed_before_ready} before ready), {len(registrar.acked)} acked, "
              f"{len(registrar.refused)} refused, {len(registrar.uncertain)} unanswered batches, "
              f"{len(final)} stored")


def check_after_kill(store: Path, registrar: Registrar, terminal_before: dict[str, Row]) -> dict[str, Row]:
    """The invariants that must hold whenever the process is dead; returns the terminal calls."""
    if not store.exists():
        return terminal_before
    rows = snapshot(store)
    missing = [c for c in registrar.acked if c not in rows]
    assert not missing, f"{len(missing)} acknowledged registrations lost, e.g. {missing[:3]}"
    stored_refused = [c for c in registrar.refused if c in rows]
    assert not stored_refused, f"refused registrations stored: {stored_refused[:3]}"
    for batch in registrar.uncertain:
        present = sum(1 for c in batch if c in rows)
        assert present in (0, len(batch)), f"a batch was stored in part: {present}/{len(batch)}"
    for call_id, row in rows.items():
        assert row.registrations == 1 and row.first_is_registration, (call_id, row)
        if row.state in TERMINAL:
            assert row.terminal_rows == 1 and not row.watching, (call_id, row)
        else:
            assert row.terminal_rows == 0 and row.watching, (call_id, row)
    for call_id, before in terminal_before.items():
        after = rows[call_id]
        assert (after.state, after.ended_at, after.terminal_rows) == (before.state, before.ended_at, 1), \
            f"terminal outcome of {call_id} changed after a restart: {before} -> {after}"
    return {c: r for c, r in rows.items() if r.state in TERMINAL}


# -- read-only store path -----------------------------------------------------------------------------

def run_once(config: Path, prefix: tuple[str, ...] = (), timeout: float = 4) -> subprocess.CompletedProcess:
    """Run the service expecting it to give up at once; a service still running after `timeout`
    fails the test (it started on a store it cannot write)."""
    try:
        return subprocess.run([*prefix, sys.executable, "-m", "outbound_call_exporter.cli", "run", "--config",
                               str(config)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the service started and kept running on an unusable store: {exc.stderr!r}")


@pytest.mark.parametrize("store_path", [
    pytest.param("/proc/calls.db", id="read-only-filesystem"),
    pytest.param("/proc/no-such-dir/calls.db", id="cannot-create-directory"),
    pytest.param("{tmp}/a-file/calls.db", id="parent-is-a-file"),
    pytest.param("{tmp}", id="path-is-a-directory"),
])
def test_unusable_store_path_exits_non_zero_naming_it(tmp_path, store_path):
    (tmp_path / "a-file").write_text("not a directory")
    store_path = store_path.format(tmp=tmp_path)
    config = tmp_path / "config.yml"
    account = {"name": "a", "provider": "telzino", "settings": {"token": "t"}}  # a config without one is refused
    config.write_text(yaml.safe_dump({"listen_address": f"127.0.0.1:{free_port()}", "store_path": store_path,
                                      "accounts": [account]}))
    result = run_once(config)
    assert result.returncode != 0
    assert f"store {store_path}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def _read_only_bind_prefix(directory: Path) -> tuple[str, ...] | None:
    """A command prefix running the rest with `directory` bind-mounted read-only (its own mount
    namespace), or None where the sandbox does not allow that."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    flags = "-m" if os.geteuid() == 0 else "-rm"
    prefix = (unshare, flags, "sh", "-c", f'mount --bind -o ro "{directory}" "{directory}" && exec "$@"', "sh")
    probe = subprocess.run([*prefix, "sh", "-c", f'! touch "{directory}/.probe" 2>/dev/null'], capture_output=True)
    return prefix if probe.returncode == 0 else None


@pytest.mark.parametrize("how", [
    pytest.param("clean-shutdown", id="after-clean-shutdown"),
    pytest.param("sigkill", id="after-crash"),
])
def test_existing_store_on_read_only_mount_exits_non_zero_and_is_untouched(tmp_path, how):
    """A store written before, now on a read-only mount (e.g. a volume mounted `ro` by mistake)."""
    data = tmp_path / "data"
    data.mkdir()
    fake = TelzinoFake()
    port = free_port()
    config = write_config(tmp_path / "config.yml", port, data / "calls.db", "http://127.0.0.1:9", fake.demo_settings())
    log = tmp_path / "service.log"
    proc = start(config, log)
    try:
        wait_until(lambda: ready(f"http://127.0.0.1:{port}"), message="service ready")
        call = fake.add_call()
        assert httpx.post(f"http://127.0.0.1:{port}/api/v1/calls",
                          json={"account": "tz", "call_id": call.call_id}).status_code == 201
    finally:
        if how == "sigkill":
            kill(proc)
        else:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    if how == "sigkill":
        assert (data / "calls.db-wal").exists() and (data / "calls.db-shm").exists()
    shutil.copytree(data, tmp_path / "copy")  # read a copy: opening the store would checkpoint it
    before = snapshot(tmp_path / "copy" / "calls.db")
    prefix = _read_only_bind_prefix(data)
    if prefix is None:
        pytest.skip("cannot bind-mount read-only here (no unshare or no mount namespace)")
    result = run_once(config, prefix)
    assert result.returncode != 0, result.stderr
    assert f"store {data / 'calls.db'}" in result.stderr, result.stderr
    assert snapshot(data / "calls.db") == before


# -- a disk that fills up mid-run -------------------------------------------------------------------

def file_size_limit() -> None:
    """preexec for the service: a file-size limit it can hit (EFBIG, as ENOSPC on a full disk;
    SIGXFSZ ignored) whose soft value the test moves with `prlimit`, as space runs out or is freed."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


@dataclass
class FullDisk:
    url: str
    proc: subprocess.Popen
    fake: TelzinoFake
    store: Path
    log: Path
    acked: list[FakeCall] = field(default_factory=list)

    def post(self, n: int = 50, end: float = 0.5) -> httpx.Response:
        calls = [self.fake.add_call(steps=steps(State.COMPLETED, end), outcome=State.COMPLETED) for _ in range(n)]
        response = httpx.post(f"{self.url}/api/v1/calls", json=[{"account": "tz", "call_id": c.call_id} for c in calls],
                              timeout=10, trust_env=False)
        if response.status_code == 201:
            self.acked += calls
        return response

    def limit(self, size: int | None) -> None:
        """No file of the service may grow past `size` bytes from now on (None: unlimited)."""
        soft = resource.RLIM_INFINITY if size is None else size
        resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE, (soft, resource.RLIM_INFINITY))

    def freeze(self) -> None:
        """The disk is full now: no store file may grow any more."""
        self.limit(max(p.stat().st_size for p in self.store.parent.glob("calls.db*")))

    def fill(self) -> httpx.Response:
        """Register until the store refuses (bounded); returns the refusal."""
        self.limit(256 * 1024)
        for _ in range(200):
            response = self.post()
            if response.status_code != 201:
                return response
        pytest.fail("the store never filled up")

    def stored(self) -> dict[str, Row]:
        copy = self.store.parent / "copy"
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir()
        for p in self.store.parent.glob("calls.db*"):
            shutil.copy(p, copy / p.name)
        return snapshot(copy / "calls.db")


@pytest.fixture
def full_disk(tmp_path):
    fake = TelzinoFake()
    with fake.running():
        port = free_port()
        store = tmp_path / "store" / "calls.db"
        config = write_config(tmp_path / "config.yml", port, store, fake.url, fake.demo_settings())
        log = tmp_path / "service.log"
        proc = start(config, log, preexec=file_size_limit)
        try:
            wait_until(lambda: ready(f"http://127.0.0.1:{port}"), message="service ready")
            yield FullDisk(f"http://127.0.0.1:{port}", proc, fake, store, log)
        finally:
            if proc.poll() is None:
                kill(proc)


def test_full_disk_refuses_registrations_clearly_and_recovers_without_loss(full_disk):
    d = full_disk
    refusal = d.fill()
    assert refusal.status_code == 503, refusal.text
    assert "store" in refusal.json()["error"]
    assert d.acked, "nothing was stored before the disk filled"
    assert httpx.get(f"{d.url}/metrics").status_code == 200  # still serving while full
    assert str(d.store) in d.log.read_text(), "the log does not name the store that cannot be written"

    d.limit(None)
    wait_until(lambda: d.post(10).status_code == 201, timeout=10, message="registrations accepted again")
    wait_until(lambda: all(r["state"] == "completed" for r in _records(d)), timeout=20,
               message="every acknowledged call's outcome written once space is back")
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(30) == 0, d.log.read_text()[-2000:]
    rows = snapshot(d.store)
    assert all(rows[c.call_id].state == "completed" and rows[c.call_id].terminal_rows == 1 for c in d.acked)


def test_poll_results_wait_in_memory_while_the_disk_is_full(full_disk):
    """Write-behind results that cannot be written are kept, not dropped, and land once space returns."""
    d = full_disk
    assert d.post(50, end=1.0).status_code == 201
    d.freeze()
    wait_until(lambda: _finished(d) == 50, message="the exporter sees every call end while the disk is full")
    rows = d.stored()
    unwritten = sum(1 for c in d.acked if rows[c.call_id].state not in TERMINAL)
    assert unwritten > 0, "every outcome was written although the disk was full"
    response = httpx.get(f"{d.url}/api/v1/calls/tz/{d.acked[0].call_id}", timeout=5)
    assert response.status_code in (200, 503) and response.json(), response.text  # reads flush first
    d.limit(None)
    wait_until(lambda: all(r.state == "completed" and r.terminal_rows == 1 for r in d.stored().values()),
               timeout=10, message="the kept results written once space is back")


def test_shutdown_while_the_disk_is_full_exits_non_zero_naming_the_store(full_disk):
    d = full_disk
    assert d.post(50, end=0.3).status_code == 201
    d.freeze()
    time.sleep(1.5)  # poll results are queued that cannot be written
    d.proc.send_signal(signal.SIGTERM)
    code = d.proc.wait(30)
    output = d.log.read_text()
    assert code != 0, "exited 0 with poll results it could not write"
    assert str(d.store) in output.splitlines()[-1], output[-2000:]
    rows = snapshot(d.store)  # what was acknowledged is there; the unwritten results are re-polled later
    assert all(c.call_id in rows for c in d.acked)


def test_full_disk_is_visible_in_metrics_and_log(full_disk):
    d = full_disk
    assert d.post(50, end=0.3).status_code == 201
    d.freeze()
    time.sleep(1.5)  # poll results fail to be written (no registration fails: that path logs already)
    metrics = httpx.get(f"{d.url}/metrics").text
    errors = [ln for ln in metrics.splitlines() if ln.startswith("outbound_call_store_write_errors_total")]
    assert errors and float(errors[0].rsplit(" ", 1)[1]) > 0, "no outbound_call_store_write_errors_total"
    assert str(d.store) in d.log.read_text(), "write-behind failures are not logged"


def _finished(d: FullDisk) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in httpx.get(f"{d.url}/metrics", timeout=5).text.splitlines()
               if line.startswith("outbound_calls_finished_total{"))


def _records(d: FullDisk) -> list[dict[str, Any]]:
    return [httpx.get(f"{d.url}/api/v1/calls/tz/{c.call_id}", timeout=5).json() for c in d.acked]
