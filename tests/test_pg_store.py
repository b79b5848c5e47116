"""The PostgreSQL store on a real server: registrations, fenced write-behind, the inbox, reads."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator

import asyncpg
import pytest

from outbound_call_exporter.leases import partition_of
from outbound_call_exporter.store import CallQuery, NewCall, ScopeRow, StoreError, Update
from outbound_call_exporter.store.postgres import PostgresStore


async def lease_all(url: str, owner: uuid.UUID, epoch: int = 1) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("UPDATE oce_leases SET owner = $1, epoch = $2, expires_at = now() + interval '1 hour'",
                           owner, epoch)
    finally:
        await conn.close()


@asynccontextmanager
async def fenced_store(pg_url: str, epoch: int) -> AsyncIterator[tuple[PostgresStore, list[dict[int, int]]]]:
    """An open store owning every partition's lease at `epoch`, and the refusals it reports."""
    store = PostgresStore(pg_url)
    await store.open()
    refused: list[dict[int, int]] = []
    store.on_fenced = refused.append
    try:
        store.owner = uuid.uuid4()
        await lease_all(pg_url, store.owner, epoch=epoch)
        yield store, refused
    finally:
        await store.close()


def new(i: int) -> NewCall:
    return NewCall("acc", f"call-{i}", "telzino", {"agent_id": "a1"}, 1000.0 + i)


def run(coro):
    return asyncio.run(coro)


def test_register_is_idempotent_and_rewatches_unwatched(pg_url: str) -> None:
    async def main() -> None:
        store = PostgresStore(pg_url)
        await store.open()
        try:
            first = await store.register([new(1), new(2), new(1)], "queued")
            assert [r.inserted for r in first] == [True, True, False]
            assert first[0].seq == first[2].seq
            again = await store.register([new(2)], "queued")
            assert again[0].seq == first[1].seq and not again[0].inserted and not again[0].started
            record = await store.unwatch("acc", "call-2")
            assert record is not None and record.watching is False
            back = await store.register([new(2)], "queued")
            assert back[0].started and not back[0].inserted
            got = await store.get("acc", "call-1")
            assert got and got.params == {"agent_id": "a1"} and [h.state for h in got.history] == ["queued"]
            assert await store.take_inbox(range(256)) == []  # no lease held: nothing to take
            store.owner = uuid.uuid4()
            await lease_all(pg_url, store.owner)
            items = await store.take_inbox(range(256))
            kinds = [(k, s) for _, s, k, _ in items]
            assert kinds == [("watch", first[0].seq), ("watch", first[1].seq), ("unwatch", first[1].seq),
                             ("watch", first[1].seq)]
            assert await store.take_inbox(range(256)) == []  # taken once
        finally:
            await store.close()

    run(main())


def test_fenced_writes_pass_only_under_the_current_lease(pg_url: str) -> None:
    async def main() -> None:
        async with fenced_store(pg_url, epoch=3) as (store, refused):
            [a, b] = await store.register([new(1), new(2)], "queued")
            pa, pb = partition_of("acc", "call-1"), partition_of("acc", "call-2")
            written: list[int] = []
            store.queue(Update(a.seq, {"state": "completed", "extras": {"k": 1}, "ended_at": 5.0}, polls=1,
                               history=[("completed", "done", 5.0)], fence=(pa, 3), after=lambda: written.append(1)))
            store.queue(Update(b.seq, {"state": "dialing"}, polls=1, history=[("dialing", "ringing", 4.0)],
                               fence=(pb, 2), after=lambda: written.append(2)))  # a stale epoch
            await store.flush()
            assert written == [1] and refused == [{pb: 2}]
            ra, rb = await store.get_many([a.seq, b.seq])
            assert (ra.state, ra.polls, ra.extras, ra.ended_at) == ("completed", 1, {"k": 1}, 5.0)
            assert [h.state for h in ra.history] == ["queued", "completed"]
            assert (rb.state, rb.polls, [h.state for h in rb.history]) == ("queued", 0, ["queued"])
            active = [c.call_id async for chunk in store.iter_active(partitions={pa, pb}) for c in chunk]
            assert active == ["call-2"]

    run(main())


def test_an_older_epochs_update_in_the_same_batch_is_refused_not_merged(pg_url: str) -> None:
    """A copy polled before its partition was lost and taken again: its update, kept since a
    failed flush, sits beside the new copy's in one batch. Only the newest epoch's is written."""
    async def main() -> None:
        async with fenced_store(pg_url, epoch=5) as (store, refused):
            [a] = await store.register([new(1)], "queued")
            pa = partition_of("acc", "call-1")
            counted: list[int] = []
            for epoch, status in ((4, "busy"), (5, "no-answer")):
                store.queue(Update(a.seq, {"state": "busy" if epoch == 4 else "no_answer"}, polls=1,
                                   history=[("busy" if epoch == 4 else "no_answer", status, float(epoch))],
                                   fence=(pa, epoch), after=lambda e=epoch: counted.append(e)))
            await store.flush()
            assert counted == [5] and refused == [{pa: 4}]
            [record] = await store.get_many([a.seq])
            assert (record.state, record.polls) == ("no_answer", 1)
            assert [h.state for h in record.history] == ["queued", "no_answer"]

    run(main())


def test_list_pages_newest_first_and_scopes(pg_url: str) -> None:
    async def main() -> None:
        store = PostgresStore(pg_url)
        await store.open()
        try:
            await store.register([new(i) for i in range(5)], "queued")
            page, before = await store.list_calls(CallQuery(account="acc", limit=2))
            assert [r.call_id for r in page] == ["call-4", "call-3"] and before is not None
            page, before = await store.list_calls(CallQuery(account="acc", limit=2, before=before))
            assert [r.call_id for r in page] == ["call-2", "call-1"]
            row = await store.add_scope(ScopeRow("s1", "acc", {"agent_id": "a"}, 1.0, "api"))
            assert (await store.add_scope(ScopeRow("s2", "acc", {"agent_id": "a"}, 2.0, "api"))).id == row.id
            await store.update_scope("s1", True, 7)
            [scope] = await store.scopes()
            assert (scope.complete, scope.discovered, dict(scope.scope)) == (True, 7, {"agent_id": "a"})
            assert await store.delete_scope("s1") and not await store.delete_scope("s1")
        finally:
            await store.close()

    run(main())


def test_an_unreachable_database_is_a_store_error_without_the_password(pg_cluster) -> None:
    url = f"postgresql://oce:s3cret-pw@127.0.0.1:{pg_cluster.port + 1}/oce"

    async def main() -> None:
        with pytest.raises(StoreError) as caught:
            await PostgresStore(url).open()
        assert "s3cret-pw" not in str(caught.value) and "127.0.0.1" in str(caught.value)

    run(main())


def test_store_url_from_a_file_or_the_environment_selects_postgresql(tmp_path, pg_url):
    from outbound_call_exporter.config import load_config
    from outbound_call_exporter.plugins import load_registry
    from outbound_call_exporter.service import Service

    secret = tmp_path / "store_url"
    secret.write_text(pg_url + "\n")
    path = tmp_path / "config.yml"
    path.write_text(f"store_url_file: {secret}\naccounts:\n  - {{name: tz, provider: telzino, settings: {{token: t}}}}\n")
    config = load_config(path, environ={})
    assert config.store_url is not None and config.store_url.get_secret_value() == pg_url
    assert pg_url not in repr(config) and pg_url not in str(config.model_dump())
    from_env = load_config(_plain(tmp_path), environ={"OCE_STORE_URL": pg_url})
    assert from_env.store_url is not None and from_env.store_url.get_secret_value() == pg_url
    service = Service(config, load_registry())
    assert isinstance(service.store, PostgresStore) and "oce@" not in service.where


def _plain(tmp_path):
    path = tmp_path / "plain.yml"
    path.write_text("accounts:\n  - {name: tz, provider: telzino, settings: {token: t}}\n")
    return path
