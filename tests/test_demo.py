"""`demo` starts clean: a fresh store per run unless --store is given, and a kept store's
unfinished calls carry on with the new run's fakes instead of ending `expired`."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path

from outbound_call_exporter import demo

TERMINAL = ("completed", "failed", "busy", "no_answer", "cancelled", "expired")


def run(registry, store: Path | None, **kwargs) -> None:
    args = {"duration": 0.5, "calls_per_second": 50.0, "failure_spike_at": None, "max_calls": 5, **kwargs}
    asyncio.run(demo.run_demo(registry, "127.0.0.1:0", store, args["duration"], args["calls_per_second"],
                              args["failure_spike_at"], args["max_calls"]))


def states(store: Path) -> dict[str, int]:
    with sqlite3.connect(store) as db:
        return dict(db.execute("SELECT state, count(*) FROM calls GROUP BY state"))


def test_each_run_uses_a_fresh_store_unless_one_is_given(registry, capsys):
    stores = []
    for _ in range(2):
        run(registry, None)
        [path] = re.findall(r"store (\S+) \(new\)", capsys.readouterr().out)
        stores.append(Path(path))
    assert stores[0] != stores[1]
    assert not any(p.exists() or p.parent.exists() for p in stores), "a fresh store is removed at exit"


def test_a_kept_store_resumes_without_a_single_expiry(registry, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "DEMO_SPEED", 20.0)  # lifecycles of a few seconds
    store = tmp_path / "demo.db"
    run(registry, store, max_calls=40, calls_per_second=400.0, duration=0.3)
    unfinished = sum(n for s, n in states(store).items() if s not in TERMINAL)
    assert unfinished >= 5, states(store)
    assert "(new)" in capsys.readouterr().out

    run(registry, store, max_calls=0, duration=10)  # new fakes; no new calls
    assert "(kept from an earlier run)" in capsys.readouterr().out
    after = states(store)
    assert sum(after.values()) == 40 and set(after) <= set(TERMINAL) - {"expired"}, after
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT sum(poll_errors) FROM calls").fetchone()[0] == 0, "no 404 for an adopted call"
