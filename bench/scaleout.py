#!/usr/bin/env python3
"""Scale-out benchmark (issue 13): N replicas on one PostgreSQL against one process on SQLite.

Run by hand, not in CI. Reuses bench/run.py (nginx as the provider, exporter processes, metric
rates, batch registrations) and tests/pgcluster.py (a throwaway PostgreSQL cluster under /tmp,
removed at the end). Everything stays on 127.0.0.1, every loop is bounded in count and time, every
figure is measured in this run. Prints markdown.

    python3 bench/scaleout.py            # full run, ~6 minutes on 2 cores
    python3 bench/scaleout.py --quick    # 3 s windows, fewer calls, one takeover round (~2 minutes)

1. polls/s: `--calls` calls at run.py's flat-out settings (0.1 s cadence), one SQLite process,
   then 1, 2 and 3 replicas on one PostgreSQL database (each joining replica is measured once the
   partitions are balanced again);
2. takeover: SIGKILL one of the 3 replicas; time until the survivors own all 256 partitions, and
   until every watched call has been polled and written again (`last_polled_at` in the store
   after the kill); a replacement joins and rebalances; `--rounds` rounds;
3. registrations/s on PostgreSQL: `--batches` batches of 1,000 (POST /api/v1/calls, 4 in flight)
   at one replica, with the account's documented rate limit (20 requests/s);
4. time to /-/ready on that store: a first replica, then a second joining (and its time until
   the partitions are balanced); the account's rate limit summed over 1 and 3 replicas;
5. the same registrations spread over 3 replicas (4 in flight at each).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from run import (
    CLK_TCK,
    FAST,
    Exporter,
    counter_sum,
    cpu_seconds,
    fill,
    fmt,
    free_port,
    log,
    machine,
    nginx,
    per_second_rates,
    post_batches,
    prefill,
    spawn,
    start_exporter,
    write_config,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pgcluster import Cluster, find_bindir  # noqa: E402

PARTITIONS = 256
LIMIT = 20  # Telzino's documented default max_requests_per_second, set explicitly


# -- replicas on PostgreSQL -------------------------------------------------------------------------


def start_replica(work: Path, name: str, url: str, nginx_port: int, wait: bool = True, **account: Any) -> Exporter:
    """`outbound-call-exporter run` on the PostgreSQL store at `url` (run.py's config, store_url)."""
    port = free_port()
    config = work / f"{name}.yaml"
    write_config(config, port, work / "unused.db", nginx_port, **account)
    settings = json.loads(config.read_text())
    del settings["store_path"]
    config.write_text(json.dumps({**settings, "store_url": url}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCE_")}
    cmd = [sys.executable, "-m", "outbound_call_exporter.cli", "run", "--config", str(config)]
    exporter = Exporter(spawn(cmd, work / f"{name}.log", env=env), port)
    if wait:
        exporter.wait_ready()
    return exporter


def owned(exporter: Exporter) -> float:
    return counter_sum(exporter.metrics(), "outbound_call_exporter_partitions_owned")


def wait_balanced(replicas: list[Exporter], timeout: float = 90.0) -> float:
    """Seconds until the replicas own every partition, none more than ⌈256 / N⌉."""
    target, t0 = math.ceil(PARTITIONS / len(replicas)), time.monotonic()
    while time.monotonic() - t0 < timeout:
        shares = [owned(r) for r in replicas]
        if sum(shares) == PARTITIONS and max(shares) <= target:
            return time.monotonic() - t0
        time.sleep(0.2)
    raise SystemExit(f"partitions not balanced within {timeout:g}s: {shares}")


def pg_cpu(cluster: Cluster) -> float:
    """CPU seconds of the PostgreSQL server: the postmaster and its live children (backends)."""
    pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
    total = cpu_seconds(pid)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                    total += cpu_seconds(int(entry.name))
            except (OSError, ValueError):
                pass  # ended meanwhile
    return total


def pg_fill(url: str, n: int) -> None:
    """`n` watched calls written through the exporter's own PostgresStore."""
    from outbound_call_exporter.store.postgres import PostgresStore

    async def run() -> None:
        store = PostgresStore(url)
        await store.open()
        await fill(store, n)
        await store.close()

    asyncio.run(run())


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores; /proc/stat), to show other load."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


# -- measurements ------------------------------------------------------------------------------------


def measure(replicas: list[Exporter], cluster: Cluster | None, warmup: float, window: float) -> dict[str, Any]:
    """polls/s summed over `replicas`: median of one-second rates; CPU per 1,000 polls (the
    exporters', and the PostgreSQL server's); each replica's mean rate; the cores busy with
    everything else on the machine (nginx, this script, other people's work)."""
    time.sleep(warmup)
    pids = [r.proc.pid for r in replicas]
    first = [r.polls() for r in replicas]
    cpu0, db0, all0 = sum(map(cpu_seconds, pids)), pg_cpu(cluster) if cluster else 0.0, busy_seconds()
    rates, polls, seconds = per_second_rates(lambda: sum(r.polls()[0] for r in replicas), window)
    cpu, db = sum(map(cpu_seconds, pids)) - cpu0, (pg_cpu(cluster) - db0) if cluster else 0.0
    others = max(0.0, busy_seconds() - all0 - cpu - db)
    last = [r.polls() for r in replicas]
    return {
        "rate": statistics.median(rates),
        "mean": polls / seconds,
        "each": [(b[0] - a[0]) / seconds for a, b in zip(first, last)],
        "cpu_per_1k": cpu / max(1e-9, polls / 1000),
        "db_per_1k": db / max(1e-9, polls / 1000),
        "cores": (cpu + db) / seconds,
        "others": others / seconds,
        "errors": sum(b[1] - a[1] for a, b in zip(first, last)),
    }


async def watch_takeover(survivors: list[Exporter], url: str, killed_at: float, t0: float, timeout: float) -> dict:
    """Seconds from the kill until the survivors own every partition, and until no watched call
    is left whose last poll (written to the store) is older than the kill."""
    import asyncpg

    conn = await asyncpg.connect(url)
    out: dict[str, float] = {}
    try:
        while time.monotonic() - t0 < timeout and len(out) < 2:
            if "owned" not in out:
                if sum([await asyncio.to_thread(owned, s) for s in survivors]) == PARTITIONS:
                    out["owned"] = time.monotonic() - t0
            if "polled" not in out:
                stale = await conn.fetchval(
                    "SELECT count(*) FROM oce_calls WHERE watching AND coalesce(last_polled_at, 0) < $1", killed_at
                )
                if stale == 0:
                    out["polled"] = time.monotonic() - t0
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    if len(out) < 2:
        raise SystemExit(f"takeover not complete within {timeout:g}s: {out}")
    return out


def takeover_rounds(work: Path, replicas: list[Exporter], url: str, nginx_port: int, rounds: int) -> list[dict]:
    results = []
    for i in range(rounds):
        victim = replicas[i % len(replicas)]
        survivors = [r for r in replicas if r is not victim]
        log(f"takeover round {i + 1}: SIGKILL replica on :{victim.port}")
        killed_at, t0 = time.time(), time.monotonic()
        victim.proc.popen.kill()
        victim.proc.popen.wait(10)
        results.append(asyncio.run(watch_takeover(survivors, url, killed_at, t0, 60.0)))
        got = results[-1]
        log(f"  all partitions owned after {got['owned']:.1f} s, every call polled again after {got['polled']:.1f} s")
        replicas[replicas.index(victim)] = start_replica(work, f"replacement{i}", url, nginx_port, **FAST)
        results[-1]["rebalanced"] = wait_balanced(replicas)
    return results


def registrations(ports: list[int], batches: int, parallel: int) -> dict[str, float]:
    seconds, times = asyncio.run(post_batches(ports, batches * 1000, 1000, parallel))
    return {"rate": batches * 1000 / seconds, "median_ms": statistics.median(times) * 1000}


# -- the run -------------------------------------------------------------------------------------------


def phase_polls(work: Path, cluster: Cluster, nginx_port: int, a: argparse.Namespace, rows: dict) -> list[Exporter]:
    """polls/s on SQLite, then 1, 2, 3 replicas on PostgreSQL; the 3 replicas are left running."""
    prefill(work / "polls.db", a.calls)
    log(f"polls/s, SQLite, one process, {a.calls:,} calls ({a.window:g}s)")
    exp = start_exporter(work, "sqlite", work / "polls.db", nginx_port, **FAST)
    rows["sqlite"] = measure([exp], None, 3.0, a.window)
    exp.proc.stop()
    url = cluster.create_database("polls")
    pg_fill(url, a.calls)
    replicas: list[Exporter] = []
    rows["pg"], rows["balance"] = {}, {}
    for n in (1, 2, 3):
        replicas.append(start_replica(work, f"polls{n}", url, nginx_port, **FAST))
        rows["balance"][n] = wait_balanced(replicas)
        log(f"polls/s, PostgreSQL, {n} replica(s) (balanced after {rows['balance'][n]:.1f} s)")
        rows["pg"][n] = measure(replicas, cluster, 3.0, a.window)
        log(f"  {rows['pg'][n]['rate']:,.0f}/s")
    rows["polls_url"] = url
    return replicas


def phase_registrations(work: Path, cluster: Cluster, nginx_port: int, a: argparse.Namespace, rows: dict) -> None:
    url = cluster.create_database("reg")
    calls = a.batches * 1000
    one = start_replica(work, "reg1", url, nginx_port, max_requests_per_second=LIMIT)
    asyncio.run(post_batches([one.port], 100, 100, 1))  # warm-up (connections, first statements)
    log(f"registrations on PostgreSQL: {a.batches} batches of 1,000 at one replica")
    rows["reg1"] = registrations([one.port], a.batches, 4)
    log(f"  {rows['reg1']['rate']:,.0f}/s; the rate limit at one replica")
    rows["limit1"] = measure([one], None, 2.0, a.window)
    one.proc.stop()

    log(f"time to ready with {calls + 100:,} calls on PostgreSQL; a second replica joins")
    first = start_replica(work, "ready1", url, nginx_port, max_requests_per_second=LIMIT)
    second = start_replica(work, "ready2", url, nginx_port, max_requests_per_second=LIMIT)
    rows["ready"] = (first.ready_after, first.listening_after, second.ready_after)
    rows["joined_balanced"] = second.ready_after + wait_balanced([first, second])
    third = start_replica(work, "ready3", url, nginx_port, max_requests_per_second=LIMIT)
    replicas = [first, second, third]
    wait_balanced(replicas)
    log("  the rate limit summed over 3 replicas")
    rows["limit3"] = measure(replicas, None, 2.0, a.window)
    log(f"registrations spread over 3 replicas: {a.batches} batches of 1,000")
    rows["reg3"] = registrations([r.port for r in replicas], a.batches, 12)
    log(f"  {rows['reg3']['rate']:,.0f}/s")
    for r in replicas:
        r.proc.stop()

    log(f"reference: SQLite restart to ready with {calls:,} calls")
    prefill(work / "ready.db", calls)
    exp = start_exporter(work, "sqlite-ready", work / "ready.db", nginx_port)
    rows["sqlite_ready"] = exp.ready_after
    exp.proc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s windows, 5,000 calls, 20 batches, 1 round")
    parser.add_argument("--calls", type=int, default=10_000, help="watched calls for polls/s and takeover")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per throughput measurement")
    parser.add_argument("--rounds", type=int, default=3, help="takeover rounds")
    parser.add_argument("--batches", type=int, default=100, help="registration batches of 1,000")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    args = parser.parse_args()
    if args.quick:
        args.window, args.calls, args.rounds, args.batches = 3.0, 5000, 1, 20
    bindir = find_bindir()
    if bindir is None or not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        print("error: needs nginx and PostgreSQL (Debian: apt-get install nginx postgresql)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="oce-scaleout-"))
    cluster = Cluster(bindir).init()
    rows: dict[str, Any] = {"load": os.getloadavg()[0]}
    started = time.monotonic()
    replicas: list[Exporter] = []
    try:
        cluster.start()
        with nginx(work) as nginx_port:
            replicas = phase_polls(work, cluster, nginx_port, args, rows)
            rows["takeover"] = takeover_rounds(work, replicas, rows["polls_url"], nginx_port, args.rounds)
            for r in replicas:
                r.proc.stop()
            phase_registrations(work, cluster, nginx_port, args, rows)
    finally:
        for r in replicas:
            if r.proc.popen.poll() is None:
                r.proc.popen.kill()
        cluster.destroy()
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    rows["elapsed"], rows["load_end"] = time.monotonic() - started, os.getloadavg()[0]
    print(report(rows, args, " ".join(["python3", "bench/scaleout.py", *sys.argv[1:]])))
    return 0


def report(r: dict[str, Any], a: argparse.Namespace, cmd: str) -> str:
    base = r["sqlite"]["rate"]
    out = [
        f"Machine: {machine()}",
        f"Command: `{cmd}` ({r['elapsed']:.0f} s; load average {r['load']:.1f} at the start,"
        f" {r['load_end']:.1f} at the end)",
        "",
        f"| {a.calls:,} calls, 0.1 s cadence, flat out | polls/s (median of 1 s rates) | per replica (mean) |"
        " exporter CPU s per 1k | PostgreSQL CPU s per 1k | cores: ours / rest of the machine | vs SQLite |",
        "|---|--:|--:|--:|--:|--:|--:|",
        f"| SQLite, 1 process | {fmt(base)} | – | {r['sqlite']['cpu_per_1k']:.3f} | – |"
        f" {r['sqlite']['cores']:.2f} / {r['sqlite']['others']:.2f} | 100 % |",
    ]
    for n, p in r["pg"].items():
        each = " / ".join(fmt(x) for x in p["each"])
        out.append(
            f"| PostgreSQL, {n} replica{'s' if n > 1 else ''} | {fmt(p['rate'])} | {each} | {p['cpu_per_1k']:.3f} |"
            f" {p['db_per_1k']:.3f} | {p['cores']:.2f} / {p['others']:.2f} | {p['rate'] / base:.0%} |"
        )
    out += ["", "| figure | result | target |", "|---|--:|---|"]
    out += [f"| {name} | {value} | {target} |" for name, value, target in figures(r, a)]
    errors = r["sqlite"]["errors"] + sum(p["errors"] for p in r["pg"].values())
    if errors:
        out.append(f"\nWarning: {errors:.0f} polls failed during the measurements (see the logs with --keep).")
    return "\n".join(out)


def figures(r: dict[str, Any], a: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(figure, result, target) rows of everything but polls/s."""
    take = r["takeover"]
    owned_s, polled_s = [t["owned"] for t in take], [t["polled"] for t in take]
    l1, l3 = r["limit1"], r["limit3"]
    ready1, listening1, ready2 = r["ready"]
    calls = a.batches * 1000
    return [
        (
            f"registrations/s, {a.batches} REST batches of 1,000 at 1 replica (4 in flight; median batch)",
            f"{fmt(r['reg1']['rate'])} ({r['reg1']['median_ms']:.0f} ms)",
            "≥ 5,000",
        ),
        (
            "registrations/s, the same spread over 3 replicas (4 in flight at each; median batch)",
            f"{fmt(r['reg3']['rate'])} ({r['reg3']['median_ms']:.0f} ms)",
            "≥ 5,000",
        ),
        (
            f"first replica to /-/ready, {calls + 100:,} calls stored (listening after {listening1:.2f} s)",
            f"{ready1:.2f} s",
            "–",
        ),
        (
            "second replica joining: to /-/ready / until the partitions are balanced (128 each)",
            f"{ready2:.2f} s / {r['joined_balanced']:.1f} s",
            "–",
        ),
        (f"reference: SQLite restart to /-/ready, {calls:,} calls", f"{r['sqlite_ready']:.2f} s", "–"),
        (
            "balanced after a 2nd / 3rd replica joined (polls/s runs)",
            f"{r['balance'][2]:.1f} / {r['balance'][3]:.1f} s",
            "–",
        ),
        (
            f"SIGKILL 1 of 3: survivors own all 256 partitions (median of {len(take)}: each)",
            f"{statistics.median(owned_s):.1f} s ({', '.join(f'{x:.1f}' for x in owned_s)})",
            "–",
        ),
        (
            f"SIGKILL 1 of 3: every call polled again (median of {len(take)}: each)",
            f"{statistics.median(polled_s):.1f} s ({', '.join(f'{x:.1f}' for x in polled_s)})",
            "≤ 15 s",
        ),
        (
            f"rate limit {LIMIT}/s for the account: polls/s with 1 replica / 3 replicas summed (each)",
            f"{l1['mean']:.1f} / {l3['mean']:.1f} ({' / '.join(f'{x:.1f}' for x in l3['each'])})",
            f"≤ {LIMIT}",
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
