"""The CallStore contract (store/__init__.py), kept the same by SQLiteStore and PostgresStore.

Each test runs on both (`both_stores`): the store is the one `make_config` names, built by
`store_for` as the service and `prune` build it. PostgreSQL's writes are fenced, so there this
test holds every partition's lease and each update carries its (partition, epoch).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Callable, Coroutine

import pytest

from outbound_call_exporter.leases import partition_of
from outbound_call_exporter.store import CallQuery, NewCall, ScopeRow, StoreError, Update, store_for

from conftest import break_store, make_config, repair_store, store_rows

pytestmark = pytest.mark.both_stores

EPOCH = 4
Body = Callable[[Any, Callable[..., Update]], Coroutine[Any, Any, None]]


def new(i: int, at: float = 1000.0, account: str = "acc") -> NewCall:
    return NewCall(account, f"call-{i}", "telzino", {"agent_id": "a1"}, at + i)


def with_store(tmp_path, body: Body) -> None:
    """`body(store, update)` on an open store; `update(seq, call_id, fields, ...)` makes an
    Update the store accepts (fenced under this test's leases on PostgreSQL)."""
    config = make_config(tmp_path, [])
    store = store_for(config.store_url, config.store_path)
    fenced = config.store_url is not None
    if fenced:
        store.owner = uuid.uuid4()
        store_rows(config, "UPDATE oce_leases SET owner = ?::uuid, epoch = ?, expires_at = now() + interval '1 hour'",
                   str(store.owner), EPOCH)

    def update(seq: int, call_id: str, fields: dict[str, Any], account: str = "acc", **kw: Any) -> Update:
        fence = (partition_of(account, call_id), EPOCH) if fenced else None
        return Update(seq, fields, fence=fence, **kw)

    async def main() -> None:
        await store.open()
        try:
            await body(store, update)
        finally:
            await store.close()

    asyncio.run(main())


def test_register_is_idempotent_in_one_transaction(tmp_path):
    async def body(store, update):
        first = await store.register([new(1), new(2), new(1)], "queued")
        assert [(r.inserted, r.started) for r in first] == [(True, True), (True, True), (False, False)]
        assert first[0].seq == first[2].seq != first[1].seq and first[0].state == "queued"
        again = await store.register([new(2)], "queued")
        assert (again[0].seq, again[0].inserted, again[0].started) == (first[1].seq, False, False)
        record = await store.get("acc", "call-1")
        assert record.params == {"agent_id": "a1"} and record.watching and record.first_seen_at == 1001.0
        assert [h.state for h in record.history] == ["queued"] and record.polls == 0
        assert await store.get("acc", "nope") is None and await store.get("other", "call-1") is None

    with_store(tmp_path, body)


def test_unwatch_and_watch_again_but_never_a_finished_call(tmp_path):
    async def body(store, update):
        [a, b] = await store.register([new(1), new(2)], "queued")
        record = await store.unwatch("acc", "call-1")
        assert record.watching is False and record.state == "queued"
        assert await store.unwatch("acc", "nope") is None
        active = [c.call_id async for chunk in store.iter_active() for c in chunk]
        assert active == ["call-2"]
        back = await store.register([new(1)], "queued")
        assert (back[0].seq, back[0].inserted, back[0].started) == (a.seq, False, True)
        store.queue(update(b.seq, "call-2", {"state": "completed", "watching": 0, "ended_at": 5.0}, polls=1))
        await store.flush()
        done = await store.register([new(2)], "queued")
        assert (done[0].started, done[0].state) == (False, "completed")  # terminal: stays unwatched
        active = sorted([c.call_id async for chunk in store.iter_active() for c in chunk])
        assert active == ["call-1"]

    with_store(tmp_path, body)


def test_poll_results_are_written_behind_and_read_back_at_once(tmp_path):
    async def body(store, update):
        [a, b] = await store.register([new(1), new(2)], "queued")
        written: list[int] = []
        extras = {"to_number": "+18135551234", "note": 'é \u202e "quoted"', "n": [1, 2.5, None]}
        store.queue(update(a.seq, "call-1", {"state": "dialing", "provider_status": "ringing", "seen": 1,
                                             "created_at": 1764000000.25, "last_polled_at": 1764000001.5,
                                             "extras": extras},
                           polls=1, history=[("dialing", "ringing", 1764000001.0)], after=lambda: written.append(1)))
        store.queue(update(b.seq, "call-2", {"last_polled_at": 2.0}, polls=1, poll_errors=1))
        store.queue(update(a.seq, "call-1", {"state": "completed", "provider_status": "done", "watching": 0,
                                             "ended_at": 1764000300.0, "duration_seconds": 251.0},
                           polls=1, history=[("completed", "done", 1764000300.0)]))
        ra = await store.get("acc", "call-1")  # no flush asked: a read applies what is queued
        assert (ra.state, ra.provider_status, ra.watching, ra.polls) == ("completed", "done", False, 2)
        assert (ra.created_at, ra.ended_at, ra.duration_seconds, ra.extras) == (1764000000.25, 1764000300.0,
                                                                                251.0, extras)
        assert [(h.state, h.provider_status) for h in ra.history] == [("queued", None), ("dialing", "ringing"),
                                                                      ("completed", "done")]
        [rb] = await store.get_many([b.seq])
        assert (rb.state, rb.polls, rb.poll_errors, rb.last_polled_at) == ("queued", 1, 1, 2.0)
        assert store.write_errors == 0
        # `after` (the metrics of a fenced write) runs once the fence let it through; SQLite's
        # writes are not fenced and its poller counts at once, so SQLite never calls it
        assert written == ([1] if getattr(store, "owner", None) else [])

    with_store(tmp_path, body)


def test_list_calls_pages_newest_first_with_filters(tmp_path):
    async def body(store, update):
        regs = await store.register([new(i) for i in range(5)] + [new(9, account="other")], "queued")
        store.queue(update(regs[1].seq, "call-1", {"state": "failed", "watching": 0}))
        seen, before = [], None
        while True:
            page, before = await store.list_calls(CallQuery(account="acc", limit=2, before=before))
            seen += [r.call_id for r in page]
            if before is None:
                break
        assert seen == ["call-4", "call-3", "call-2", "call-1", "call-0"]
        everyone, _ = await store.list_calls(CallQuery(limit=10))
        assert [r.call_id for r in everyone][:2] == ["call-9", "call-4"] and len(everyone) == 6
        failed, _ = await store.list_calls(CallQuery(state="failed", limit=10))
        assert [r.call_id for r in failed] == ["call-1"]
        recent, _ = await store.list_calls(CallQuery(account="acc", since=1003.0, limit=10))
        assert [r.call_id for r in recent] == ["call-4", "call-3"]
        assert await store.list_calls(CallQuery(account="nobody", limit=10)) == ([], None)

    with_store(tmp_path, body)


def test_scopes_are_stored_once_per_account_and_scope(tmp_path):
    async def body(store, update):
        row = await store.add_scope(ScopeRow("s1", "acc", {"agent_id": "a"}, 1.0, "api"))
        assert (await store.add_scope(ScopeRow("s2", "acc", {"agent_id": "a"}, 2.0, "config"))).id == row.id
        other = await store.add_scope(ScopeRow("s3", "acc", {"agent_id": "b"}, 3.0, "config"))
        await store.update_scope("s1", True, 7)
        scopes = await store.scopes()
        assert [(s.id, s.complete, s.discovered, dict(s.scope), s.origin) for s in scopes] == [
            ("s1", True, 7, {"agent_id": "a"}, "api"), (other.id, False, 0, {"agent_id": "b"}, "config")]
        assert await store.delete_scope("s1") and not await store.delete_scope("s1")
        assert [s.id for s in await store.scopes()] == ["s3"]

    with_store(tmp_path, body)


def test_prune_deletes_old_unwatched_records_with_their_history(tmp_path):
    now, day = time.time(), 86400.0

    async def body(store, update):
        regs = await store.register([new(i, at=now - 90 * day) for i in range(3)] + [new(3, at=now - day)], "queued")
        done = {"state": "completed", "watching": 0}
        store.queue(update(regs[0].seq, "call-0", {**done, "ended_at": now - 89 * day},
                           history=[("completed", "done", now - 89 * day)]))
        store.queue(update(regs[1].seq, "call-1", {**done, "ended_at": now - 5 * day}))  # ended recently: kept
        # call-2: registered 90 days ago and still watched: kept; call-3: recent
        store.queue(update(regs[3].seq, "call-3", {**done, "ended_at": now - day}))
        never = await store.register([new(4, at=now - 60 * day)], "queued")  # never polled, unwatched
        await store.unwatch("acc", "call-4")
        assert await store.prune(now - 30 * day) == (2, True)
        left, _ = await store.list_calls(CallQuery(limit=10))
        assert sorted(r.call_id for r in left) == ["call-1", "call-2", "call-3"]
        assert await store.get_many([regs[1].seq]) and await store.get("acc", "call-0") is None
        assert never[0].seq not in {r.seq for r in left}
        assert await store.prune(now - 30 * day) == (0, True)

    with_store(tmp_path, body)
    config = make_config(tmp_path, [])
    assert store_rows(config, "SELECT count(*) FROM {history} WHERE call_seq = 1") == [(0,)]


def test_a_key_no_store_can_hold_is_not_found(tmp_path):
    async def body(store, update):
        await store.register([new(1)], "queued")
        assert await store.get("acc", "call-1\x00") is None
        assert await store.unwatch("acc", "call-1\x00") is None

    with_store(tmp_path, body)


def test_every_failure_is_a_store_error_and_a_failed_flush_is_kept(tmp_path):
    config = make_config(tmp_path, [])

    async def body(store, update):
        [a] = await store.register([new(1)], "queued")
        break_store(config)
        for attempt in (lambda: store.get("acc", "call-1"), lambda: store.register([new(2)], "queued"),
                        lambda: store.list_calls(CallQuery(limit=5)), lambda: store.scopes(),
                        lambda: store.unwatch("acc", "call-1"), lambda: store.prune(time.time())):
            with pytest.raises(StoreError):
                await attempt()
        store.queue(update(a.seq, "call-1", {"last_polled_at": 2.0}, polls=1))
        with pytest.raises(StoreError):
            await store.flush()
        assert store.write_errors == 1
        repair_store(config)  # the kept update is written now
        await store.flush()
        assert (await store.get("acc", "call-1")).polls == 1

    with_store(tmp_path, body)


def test_a_nul_in_a_provider_string_does_not_stop_the_writes(tmp_path):
    """A provider's answer may carry a NUL (PostgreSQL's text and jsonb cannot): the write and
    every other write of its batch still land, never a flush failing for ever."""
    async def body(store, update):
        [a, b] = await store.register([new(1), new(2)], "queued")
        store.queue(update(a.seq, "call-1", {"provider_status": "ring\x00ing", "reason": "r\x00",
                                             "extras": {"note\x00": "a\x00b", "n": ["\x00"]}},
                           polls=1, history=[("dialing", "ring\x00ing", 3.0)]))
        store.queue(update(b.seq, "call-2", {"state": "dialing"}, polls=1))
        await store.flush()
        assert store.write_errors == 0
        ra, rb = await store.get_many([a.seq, b.seq])
        assert ra.polls == 1 and rb.state == "dialing"
        assert ra.provider_status.startswith("ring") and ra.extras["n"][0] in ("\x00", "\ufffd")

    with_store(tmp_path, body)
