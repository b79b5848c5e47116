"""Write-behind batches land the same whether SQLite takes them as one statement (json_each)
or row by row (`executemany`, the fallback for old SQLite and values JSON cannot carry)."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from pathlib import Path

import pytest

from outbound_call_exporter.store import NewCall, SQLiteStore, Update
from outbound_call_exporter.store import writebehind as store_module


def _batch() -> list[Update]:
    return [
        Update(1, {"state": "dialing", "provider_status": "dialing", "reason": None, "seen": 1,
                   "created_at": 1764000000.123456, "answered_at": None, "ended_at": None,
                   "duration_seconds": None, "last_polled_at": 1764000001.5,
                   "extras": {"to_number": "+18135551234", "note": "é \u202e \"quoted\"", "n": [1, 2.5, None]}},
               polls=1, history=[("dialing", "dialing", 1764000001.0)]),
        Update(2, {"last_polled_at": 1764000002.25}, polls=1, poll_errors=1),
        Update(1, {"state": "completed", "provider_status": "completed", "watching": 0,
                   "duration_seconds": 251.0, "ended_at": 1764000300.0, "extras": {}},
               polls=1, history=[("completed", "completed", 1764000300.0), ("completed", "done", 1764000301.0)]),
        Update(3, {"last_polled_at": 1764000003.0, "duration_seconds": 7}, polls=2),
    ]


def _written(tmp: Path, one_statement: bool, batch: list[Update], monkeypatch: pytest.MonkeyPatch) -> tuple:
    monkeypatch.setattr(store_module, "_ONE_STATEMENT", one_statement)

    async def run() -> None:
        s = SQLiteStore(tmp / f"{one_statement}.db")
        await s.open()
        await s.register([NewCall("a", f"c{i}", "p", {}, 1764000000.0) for i in range(1, 4)], "queued")
        for up in batch:
            s.queue(up)
        await s.flush()
        await s.close()

    asyncio.run(run())
    db = sqlite3.connect(tmp / f"{one_statement}.db")
    try:
        calls = db.execute("SELECT seq, state, provider_status, reason, watching, seen, created_at, answered_at,"
                           " ended_at, duration_seconds, last_polled_at, polls, poll_errors, extras,"
                           " typeof(duration_seconds) FROM calls ORDER BY seq").fetchall()
        history = db.execute("SELECT call_seq, state, provider_status, at FROM history ORDER BY id").fetchall()
    finally:
        db.close()
    return calls, history


@pytest.mark.skipif(not store_module._ONE_STATEMENT, reason="this SQLite has no UPDATE ... FROM / json_each")
def test_one_statement_and_executemany_write_the_same(tmp_path, monkeypatch):
    fast = _written(tmp_path, True, _batch(), monkeypatch)
    slow = _written(tmp_path, False, _batch(), monkeypatch)
    assert fast == slow
    calls, history = fast
    assert calls[0][1:3] == ("completed", "completed") and calls[0][11] == 2
    assert [h[2] for h in history if h[0] == 1] == [None, "dialing", "completed", "done"]


def test_a_value_json_cannot_carry_falls_back_to_executemany(tmp_path, monkeypatch):
    batch = [Update(1, {"duration_seconds": math.nan, "last_polled_at": 1.0}, polls=1)]
    calls, _ = _written(tmp_path, store_module._ONE_STATEMENT, batch, monkeypatch)
    assert calls[0][11] == 1  # written, not stuck in the queue
