#!/usr/bin/env python3
"""Reproducible performance benchmark of outbound-call-exporter (issue 6). Run by hand, not in CI.

Everything runs on 127.0.0.1: Debian's nginx serves one fixed Telzino-shaped JSON body for any
path (the provider side, never the bottleneck), the exporter is the real `outbound-call-exporter
run` process (or `bench/probe.py`, the same plus a lag probe) pointed at it with `base_url`.
Every loop is bounded in count and time, every figure is measured in this run. Prints markdown.

    python3 bench/run.py            # full run, ~4 minutes on 2 cores
    python3 bench/run.py --quick    # smaller windows and sizes, for a smoke test

Needs `nginx` and `wrk` (Debian: `apt-get install nginx wrk`) and the exporter installed in the
interpreter that runs this script (`pip install -e .`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
TOKEN = "bench-token"
AGENT = "123e4567-e89b-12d3-a456-426614174000"
#: a Telzino record of a ringing call (the documented shape), so every poll is a real parse
BODY = json.dumps(
    {
        "id": "0fc6daf8-7251-4553-9488-867ba0b82d8e",
        "agent_id": AGENT,
        "to_number": "+18135551234",
        "status": "dialing",
        "call_context": "You are calling John to confirm his appointment tomorrow at 2pm.",
        "request_metadata": {"crm_id": "123"},
        "callback_url": "https://your-system.com/telzino/call-result",
        "callback_delivered": None,
        "transcript_id": None,
        "summary_text": None,
        "error": None,
        "sip_status_code": None,
        "created_at": "2026-06-11T12:49:28.898751+00:00",
        "answered_at": None,
        "ended_at": None,
        "duration": None,
    },
    separators=(",", ":"),
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- small process and HTTP helpers -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def counter_sum(text: str, name: str) -> float:
    """Sum of every sample of `name` in an exposition text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in "{ ":
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class Proc:
    """A child process we started; ended by its own pid only."""

    popen: subprocess.Popen
    log: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 60.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)

    def tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""


def spawn(cmd: list[str], log: Path, **kw: Any) -> Proc:
    fh = open(log, "wb")
    try:
        return Proc(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw), log)
    finally:
        fh.close()


# -- the provider side: nginx --------------------------------------------------------------------


@contextlib.contextmanager
def nginx(work: Path) -> Iterator[int]:
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    root = work.resolve() / "nginx"
    root.mkdir(exist_ok=True)
    body = BODY.replace("\\", "\\\\").replace("'", "\\'")
    temp = "\n".join(f"  {k}_temp_path {root}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (root / "nginx.conf").write_text(f"""
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
{temp}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      default_type application/json;
      return 200 '{body}';
    }}
  }}
}}
""")
    proc = spawn(
        [exe, "-p", str(root), "-e", str(root / "error.log"), "-c", str(root / "nginx.conf")], root / "stdout.log"
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                status, got = get(port, f"/v1/agents/{AGENT}/outbound-calls/{uuid.uuid4()}")
                if status == 200 and json.loads(got)["status"] == "dialing":
                    break
            except OSError:
                pass
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"nginx did not start:\n{proc.tail()}\n"
                    f"{(root / 'error.log').read_text(errors='replace') if (root / 'error.log').exists() else ''}"
                )
            time.sleep(0.05)
        yield port
    finally:
        proc.stop(10)


# -- the exporter ----------------------------------------------------------------------------------


@dataclass
class Exporter:
    proc: Proc
    port: int
    listening_after: float | None = None
    ready_after: float | None = None

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = self.proc.started + timeout
        while time.monotonic() < deadline:
            if self.proc.popen.poll() is not None:
                raise SystemExit(f"exporter exited with {self.proc.popen.returncode}:\n{self.proc.tail()}")
            try:
                status, _ = get(self.port, "/-/ready", timeout=2)
            except OSError:
                time.sleep(0.005)
                continue
            now = time.monotonic() - self.proc.started
            if self.listening_after is None:
                self.listening_after = now
            if status == 200:
                self.ready_after = now
                return
            time.sleep(0.005)
        raise SystemExit(f"exporter not ready within {timeout}s:\n{self.proc.tail()}")

    def metrics(self) -> str:
        return get(self.port, "/metrics", timeout=30)[1].decode()

    def polls(self) -> tuple[float, float]:
        text = self.metrics()
        return (
            counter_sum(text, "outbound_call_status_requests_total"),
            counter_sum(text, "outbound_call_status_request_errors_total"),
        )


def write_config(path: Path, port: int, store: Path, nginx_port: int, **account: Any) -> None:
    acc = {
        "name": "bench",
        "provider": "telzino",
        "base_url": f"http://127.0.0.1:{nginx_port}",
        "settings": {"token": TOKEN, "agent_id": AGENT},
        **account,
    }
    path.write_text(
        json.dumps(
            {"listen_address": f"127.0.0.1:{port}", "store_path": str(store), "log_level": "warning", "accounts": [acc]}
        )
    )  # JSON is YAML


def start_exporter(
    work: Path, name: str, store: Path, nginx_port: int, probe: Path | None = None, **account: Any
) -> Exporter:
    port = free_port()
    config = work / f"{name}.yaml"
    write_config(config, port, store, nginx_port, **account)
    if probe is None:
        cmd = [sys.executable, "-m", "outbound_call_exporter.cli", "run", "--config", str(config)]
    else:
        cmd = [sys.executable, str(HERE / "probe.py"), "--config", str(config), "--out", str(probe)]
    exporter = Exporter(spawn(cmd, work / f"{name}.log"), port)
    exporter.wait_ready()
    return exporter


FAST = {
    "max_concurrency": 64,
    "max_requests_per_second": 100_000,
    "poll_interval_seconds": {s: 0.1 for s in ("queued", "dialing", "in_progress", "unknown")},
}


async def fill(store: Any, n: int) -> None:
    """`n` watched calls written through an open store of the exporter's own (either backend)."""
    from outbound_call_exporter.store import NewCall

    now = time.time()
    for i in range(0, n, 5000):
        await store.register(
            [NewCall("bench", str(uuid.uuid4()), "telzino", {"agent_id": AGENT}, now) for _ in range(min(5000, n - i))],
            "queued",
        )


def prefill(store: Path, n: int) -> None:
    """A SQLite store with `n` watched calls."""
    from outbound_call_exporter.store import SQLiteStore

    async def run() -> None:
        s = SQLiteStore(store)
        await s.open()
        await fill(s, n)
        await s.close()

    asyncio.run(run())


# -- measurements ----------------------------------------------------------------------------------


def per_second_rates(sample: Any, window: float) -> tuple[list[float], float, float]:
    """Sample a monotonically growing count once a second; (rates, total count, seconds)."""
    rates, t0 = [], time.monotonic()
    c0 = last_c = sample()
    last_t = t0
    while time.monotonic() - t0 < window:
        time.sleep(max(0.0, 1.0 - (time.monotonic() - last_t)))
        c, t = sample(), time.monotonic()
        rates.append((c - last_c) / (t - last_t))
        last_c, last_t = c, t
    return rates, last_c - c0, last_t - t0


def measure_wrk(url: str, connections: int, window: float) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(window))}s", "-H", f"Authorization: Bearer {TOKEN}", url],
        capture_output=True,
        text=True,
        timeout=window + 60,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match or "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk run failed:\n{out}")
    return float(match.group(1))


def measure_aioloop(url: str, connections: int, window: float, use_uvloop: bool) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(HERE / "aioloop.py"),
        url,
        "--token",
        TOKEN,
        "--concurrency",
        str(connections),
        "--duration",
        str(window),
    ] + (["--uvloop"] if use_uvloop else [])
    result = json.loads(subprocess.run(cmd, capture_output=True, text=True, timeout=window + 60, check=True).stdout)
    if result["errors"]:
        raise SystemExit(f"plain aiohttp loop saw {result['errors']} errors")
    return result


def measure_polls(exporter: Exporter, warmup: float, window: float) -> dict[str, Any]:
    time.sleep(warmup)
    p0, e0 = exporter.polls()
    cpu0 = cpu_seconds(exporter.proc.pid)
    rates, polls, seconds = per_second_rates(lambda: exporter.polls()[0], window)
    cpu = cpu_seconds(exporter.proc.pid) - cpu0
    p1, e1 = exporter.polls()
    return {
        "rate": statistics.median(rates),
        "mean": polls / seconds,
        "cpu_per_1k": cpu / (polls / 1000),
        "cores": cpu / seconds,
        "errors": e1 - e0,
        "polls": p1 - p0,
    }


def start_profile(exporter: Exporter, work: Path, window: float) -> subprocess.Popen | None:
    """py-spy (pip install py-spy) sampling the exporter for the measurement window."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        log("  --profile: py-spy not found (pip install py-spy); no profile")
        return None
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(exporter.proc.pid),
            "--duration",
            str(int(window + 3)),
            "--rate",
            "200",
            "--format",
            "raw",
            "--threads",
            "--nonblocking",
            "--output",
            str(work / "profile.txt"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


#: where a sample of the event loop's thread goes, first matching rule wins (frames joined by ";")
STAGES = [
    ("our /metrics and REST server (aiohttp.web)", lambda st: "(aiohttp/web" in st),
    ("socket writes (the send system call, in aiohttp's writer)", lambda st: "StreamWriter._write" in st),
    ("building the httpx.Response handed to the plugin", lambda st: "AiohttpTransport.send" in st and "(httpx/" in st),
    ("aiohttp's client: request, pool, response parsing, its tasks", lambda st: "(aiohttp/" in st),
    ("plugin builds the httpx.Request (httpx URL parsing included)", lambda st: "build_request" in st),
    ("plugin parses the answer", lambda st: "parse_response" in st),
    ("transport glue (exporter/transport.py: headers, URL, deadline, cap)", lambda st: "AiohttpTransport" in st),
    (
        "event loop, native (uvloop: epoll, socket reads, timers)",
        lambda st: st.endswith("Runner.run (asyncio/runners.py)"),
    ),
    ("scheduler, state machine, metrics, store queue", lambda st: "AccountPoller" in st or "(plugins/" in st),
]


def finish_profile(
    profiler: subprocess.Popen, work: Path, top: int = 15
) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    """Self time per function of the event loop's thread, and its samples by stage (STAGES),
    both as shares of its samples."""
    profiler.wait(120)
    own: dict[str, int] = {}
    stages: dict[str, int] = {}
    total = 0
    with contextlib.suppress(OSError):
        for line in (work / "profile.txt").read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            if "MainThread" not in frames[0]:
                continue
            leaf = frames[-1] if len(frames) > 1 else "(native: event loop, sockets)"
            name = re.sub(r"\s*\((.*?):\d+\)", r" (\1)", leaf)
            name = re.sub(r"\(/.*?site-packages/", "(", name)
            own[name] = own.get(name, 0) + int(count)
            joined = re.sub(r"\(/.*?site-packages/", "(", re.sub(r":\d+\)", ")", stack))
            stage = next((label for label, match in STAGES if match(joined)), "other (Python runtime, GC, logging)")
            stages[stage] = stages.get(stage, 0) + int(count)
            total += int(count)
    if not total:
        return [], []
    return (
        [(n / total, name) for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]],
        [(n / total, name) for name, n in sorted(stages.items(), key=lambda kv: -kv[1])],
    )


def scrape_ms(port: int, n: int) -> float:
    """Median wall time of `n` scrapes over one keep-alive connection, in ms."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            response.read()
            times.append((time.perf_counter() - t0) * 1000)
            if response.status != 200:
                raise SystemExit(f"/metrics answered {response.status}")
            time.sleep(0.02)
    finally:
        conn.close()
    return statistics.median(times)


async def post_batches(ports: list[int], total: int, batch: int, parallel: int) -> tuple[float, list[float]]:
    """POST `total` new calls in batches of `batch`, `parallel` requests at a time (worker k
    posting to `ports[k % len(ports)]`); (wall seconds, each batch's seconds)."""
    import aiohttp

    batches = [
        [{"account": "bench", "call_id": str(uuid.uuid4())} for _ in range(min(batch, total - i))]
        for i in range(0, total, batch)
    ]
    bodies = [json.dumps(b).encode() for b in batches]
    queue = list(range(len(bodies)))
    times: list[float] = []

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def worker(k: int) -> None:
            url = f"http://127.0.0.1:{ports[k % len(ports)]}/api/v1/calls"
            while queue:
                i = queue.pop()
                t = time.perf_counter()
                async with session.post(url, data=bodies[i], headers={"Content-Type": "application/json"}) as r:
                    answer = await r.read()
                    if r.status != 201 or json.loads(answer)["created"] != len(batches[i]):
                        raise SystemExit(f"batch registration answered {r.status}: {answer[:300]!r}")
                times.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(parallel)))
        return time.perf_counter() - t0, times


async def register_batches(port: int, total: int, batch: int, parallel: int) -> float:
    """POST `total` new calls in batches of `batch`, `parallel` requests at a time; calls/s."""
    seconds, _ = await post_batches([port], total, batch, parallel)
    return total / seconds


# -- the run -----------------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import aiohttp
    import httpx

    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1:2]
    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio"
    return (
        f"{os.cpu_count()} × {cpu}, {mem:.0f} GiB RAM, Linux {platform.release()}; "
        f"Python {platform.python_version()}, event loop {loop}, aiohttp {aiohttp.__version__}, "
        f"httpx {httpx.__version__}; nginx {nginx_v} (1 worker), wrk {' '.join(wrk_v)}"
    )


def fmt(x: float, unit: str = "") -> str:
    return f"{x:,.0f}{unit}" if x >= 100 else f"{x:.3g}{unit}"


def ok(met: bool) -> str:
    return "met" if met else "**missed**"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s windows and 1k/10k/20k calls (smoke test)")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per throughput measurement")
    parser.add_argument(
        "--connections",
        type=int,
        default=64,
        help="connections for wrk, the aiohttp loop and the exporter's max_concurrency",
    )
    parser.add_argument("--sizes", default="1000,10000,100000", help="watched calls for the polls/s runs")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, stores)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also sample the exporter with py-spy during the 10,000-call run; print the hot spots",
    )
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"error: `{tool}` not found; install it (Debian: apt-get install nginx wrk)", file=sys.stderr)
            return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    window = args.window
    if args.quick:
        window, sizes = 3.0, [1000, 10000, 20000]
    big = max(sizes)
    conns = args.connections
    FAST["max_concurrency"] = conns
    try:
        import uvloop  # noqa: F401

        use_uvloop = True
    except ImportError:
        use_uvloop = False

    work = Path(tempfile.mkdtemp(prefix="oce-bench-"))
    rows: dict[str, Any] = {}
    started = time.monotonic()
    try:
        with nginx(work) as nginx_port:
            url = f"http://127.0.0.1:{nginx_port}/v1/agents/{AGENT}/outbound-calls/{uuid.uuid4()}"
            log(f"nginx on :{nginx_port}; wrk for {window:g}s")
            rows["wrk"] = measure_wrk(url, conns, window)
            log(f"  wrk {rows['wrk']:,.0f}/s; plain aiohttp loop for {window:g}s")
            rows["aio"] = measure_aioloop(url, conns, window, use_uvloop)
            rows["aio_rate"] = rows["aio"]["requests"] / rows["aio"]["seconds"]
            log(f"  aiohttp loop {rows['aio_rate']:,.0f}/s")

            # registrations through the REST batch API; /metrics at 100 and at `big` calls; RSS
            store = work / "big.db"
            exp = start_exporter(work, "register", store, nginx_port)  # documented defaults
            rss0 = rss_bytes(exp.proc.pid)
            asyncio.run(register_batches(exp.port, 100, 100, 1))
            rows["scrape_small"] = scrape_ms(exp.port, 50)
            log(f"registering {big - 100:,} calls in batches of 1000")
            rows["reg_rate"] = asyncio.run(register_batches(exp.port, big - 100, 1000, 4))
            log(f"  {rows['reg_rate']:,.0f}/s")
            rows["scrape_big"] = scrape_ms(exp.port, 50)
            exp.proc.stop()
            if exp.proc.popen.returncode != 0:
                raise SystemExit(f"exporter exited with {exp.proc.popen.returncode}:\n{exp.proc.tail()}")

            # polls/s at each size, flat out; the largest is a restart on the registered store
            rows["polls"] = {}
            for n in sizes:
                path = store if n == big else work / f"s{n}.db"
                if n != big:
                    prefill(path, n)
                log(f"polls/s with {n:,} calls ({window:g}s)")
                exp = start_exporter(work, f"polls{n}", path, nginx_port, **FAST)
                if n == big:
                    rows["ready"], rows["listening"] = exp.ready_after, exp.listening_after
                profiler = start_profile(exp, work, window) if args.profile and n == 10_000 else None
                rows["polls"][n] = measure_polls(exp, 3.0, window)
                if profiler is not None:
                    rows["profile"], rows["stages"] = finish_profile(profiler, work)
                log(f"  {rows['polls'][n]['rate']:,.0f}/s")
                if n == big:
                    rows["rss_per_call"] = (rss_bytes(exp.proc.pid) - rss0) / n
                    rows["scrape_busy"] = scrape_ms(exp.port, 30)
                exp.proc.stop()

            # scheduling lag at the documented cadence (Telzino: 3 s while dialing)
            lag_calls = 10_000
            lag_store = work / "lag.db"
            prefill(lag_store, lag_calls)
            out = work / "lag.json"
            lag_window = max(15.0, window)
            log(f"scheduling lag with {lag_calls:,} calls at the documented cadence ({lag_window:g}s)")
            exp = start_exporter(
                work, "lag", lag_store, nginx_port, probe=out, max_concurrency=conns, max_requests_per_second=5000
            )
            cpu0 = cpu_seconds(exp.proc.pid)
            lag_polls = measure_polls(exp, 5.0, lag_window)
            rows["lag_cores"] = (cpu_seconds(exp.proc.pid) - cpu0) / (lag_window + 5.0)
            exp.proc.stop()
            rows["lag"] = json.loads(out.read_text())
            rows["lag_rate"] = lag_polls["rate"]
            errors = sum(p["errors"] for p in rows["polls"].values()) + lag_polls["errors"]
            rows["errors"] = errors
    finally:
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    rows["elapsed"] = time.monotonic() - started
    print(report(rows, sizes, conns, window, use_uvloop, " ".join(["python3", "bench/run.py", *sys.argv[1:]])))
    return 0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def report(r: dict[str, Any], sizes: list[int], conns: int, window: float, use_uvloop: bool, cmd: str) -> str:
    aio, wrk = r["aio_rate"], r["wrk"]
    loop = "uvloop" if use_uvloop else "asyncio"
    out = [
        f"Machine: {machine()}",
        f"Command: `{cmd}` ({r['elapsed']:.0f} s)",
        "",
        f"| driver ({conns} connections, same nginx endpoint) | watched calls | requests/s | CPU s per 1k |"
        " vs aiohttp loop | vs wrk |",
        "|---|--:|--:|--:|--:|--:|",
        f"| wrk -t1 (client-side limit) | – | {fmt(wrk)} | – | {wrk / aio:.1f}× | 100 % |",
        f"| plain aiohttp loop, {loop} (Python limit) | – | {fmt(aio)} |"
        f" {r['aio']['cpu_seconds'] / (r['aio']['requests'] / 1000):.3f} | 100 % | {aio / wrk:.0%} |",
    ]
    for n in sizes:
        p = r["polls"][n]
        out.append(
            f"| exporter, 0.1 s cadence | {n:,} | {fmt(p['rate'])} | {p['cpu_per_1k']:.3f} |"
            f" {p['rate'] / aio:.0%} | {p['rate'] / wrk:.0%} |"
        )
    big = max(sizes)
    lag, small, large = r["lag"], r["scrape_small"], r["scrape_big"]
    worst = min(r["polls"][n]["rate"] for n in sizes)
    rows = [
        ("polls/s, one process (lowest of the sizes above)", fmt(worst), "≥ 4,000", worst >= 4000),
        ("polls/s vs plain aiohttp loop (lowest)", f"{worst / aio:.0%}", "≥ 50 %", worst / aio >= 0.5),
        (
            f"scheduling lag p50 / p99, 10,000 calls at 3 s ({fmt(r['lag_rate'])} polls/s, "
            f"{r['lag_cores']:.0%} of a core)",
            f"{lag['p50'] * 1000:.1f} ms / {lag['p99'] * 1000:.1f} ms" if "p99" in lag else "no samples",
            "p99 ≤ 1 s",
            "p99" in lag and lag["p99"] <= 1.0,
        ),
        ("/metrics scrape, 100 calls (median of 50)", f"{small:.2f} ms", "–", True),
        (
            f"/metrics scrape, {big:,} calls (median of 50)",
            f"{large:.2f} ms ({large / small:.2f}×)",
            "≤ 20 ms, ≤ 1.5×",
            large <= 20 and large / small <= 1.5,
        ),
        (f"/metrics scrape, {big:,} calls while polling flat out", f"{r['scrape_busy']:.2f} ms", "–", True),
        (
            f"resident memory per watched call at {big:,}",
            f"{r['rss_per_call']:,.0f} B",
            "≤ 2,048 B",
            r["rss_per_call"] <= 2048,
        ),
        (
            "registrations/s, REST batches of 1,000 (4 in parallel, committed before the answer)",
            fmt(r["reg_rate"]),
            "≥ 5,000",
            r["reg_rate"] >= 5000,
        ),
        (
            f"restart to /-/ready with {big:,} calls stored (listening after {r['listening']:.2f} s)",
            f"{r['ready']:.2f} s",
            "≤ 3 s",
            r["ready"] <= 3.0,
        ),
    ]
    out += ["", "| figure | result | target | |", "|---|--:|---|---|"]
    out += [f"| {a} | {b} | {c} | {ok(d) if c != '–' else ''} |" for a, b, c, d in rows]
    if r.get("stages"):
        out += [
            "",
            "Where the event loop's thread spends its time, 10,000 calls at 0.1 s (py-spy samples by stage):",
            "",
            "| share | stage |",
            "|--:|---|",
        ]
        out += [f"| {share:.1%} | {name} |" for share, name in r["stages"]]
    if r.get("profile"):
        out += [
            "",
            "Hot spots of the event loop's thread, 10,000 calls at 0.1 s (py-spy, self time):",
            "",
            "| share | function (file) |",
            "|--:|---|",
        ]
        out += [f"| {share:.1%} | `{name}` |" for share, name in r["profile"]]
    if r["errors"]:
        out.append(f"\nWarning: {r['errors']:.0f} polls failed during the measurements (see the logs with --keep).")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
