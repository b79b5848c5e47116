"""The PostgreSQL store's write-behind: poll results queued in memory, written in batches,
each write fenced on its partition's lease.

Every queued `Update` carries the (partition, epoch) it was polled under. A batch is merged
per call and written with one statement per shape of changed columns, joined with
`oce_leases` on (partition, owner, epoch) while the lease rows are locked until commit: rows
the fence refuses are not written, their partitions are reported to `on_fenced`, and their
`after` callbacks (the metrics) never run. One flush at a time, in order; a batch that fails
is kept, in order, for the next.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg

from . import pgsql
from .rows import StoreError, Update

if TYPE_CHECKING:
    from .postgres import PostgresStore

log = logging.getLogger(__name__)


class FencedWrites:
    """The queue of one store's poll results, and its flushes."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.pending: list[Update] = []
        self.errors = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def queue(self, update: Update) -> None:
        self.pending.append(update)
        if len(self.pending) >= self.store.max_pending:
            self._wake.set()

    async def flush(self) -> None:
        """Write what is queued. One flush at a time, in order: two batches written at once on
        two connections could commit out of order and put a call's older state back."""
        async with self._lock:
            batch, self.pending = self.pending, []
            if not batch:
                return
            fresh = _newest_epochs(batch)
            try:
                written = await self.store.transaction(
                    "write poll results", lambda conn: write_fenced(conn, fresh, self.store.owner)
                )
            except StoreError:
                self.pending[:0] = batch  # kept, in order, for the next flush
                self.errors += 1
                raise
        refused: dict[int, int] = {}
        kept = {id(up) for up in fresh}
        for up in batch:
            if up.seq in written and id(up) in kept:
                if up.after is not None:
                    up.after()
            elif up.fence is not None:
                refused[up.fence[0]] = up.fence[1]
        if refused:
            self.store.on_fenced(refused)

    async def run(self) -> None:
        """Flush every `flush_interval`, or at once when `max_pending` results wait."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.store.flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except StoreError as exc:
                if self.errors == 1 or self.errors % 100 == 0:
                    log.error("%s (kept in memory and retried; %d failed flushes)", exc, self.errors)


def _newest_epochs(batch: list[Update]) -> list[Update]:
    """The updates carrying their call's newest epoch in this batch. An older one (polled by a
    copy loaded before the partition was lost and taken again, kept since a failed flush) would
    be refused on its own; merged with the newer ones it would slip through under their fence,
    and its terminal history row and metrics would count a second time."""
    newest: dict[int, int] = {}
    for up in batch:
        if up.fence is not None and up.fence[1] > newest.get(up.seq, -1):
            newest[up.seq] = up.fence[1]
    return [up for up in batch if up.fence is None or up.fence[1] == newest[up.seq]]


async def write_fenced(conn: asyncpg.Connection, batch: list[Update], owner: uuid.UUID | None) -> set[int]:
    """Merge the batch per call and write it in one statement per shape of changed columns,
    joined with the lease rows (locked until commit): the seqs the fence let through."""
    merged: dict[int, list[Any]] = {}
    history: list[tuple[int, str, str | None, float]] = []
    for up in batch:
        entry = merged.setdefault(up.seq, [{}, 0, 0, up.fence])
        entry[0].update(up.fields)
        entry[1] += up.polls
        entry[2] += up.poll_errors
        entry[3] = up.fence
        history += [(up.seq, state, pgsql.text_value(status), at) for state, status, at in up.history]
    shapes: dict[tuple[str, ...], list[tuple[int, list[Any]]]] = {}
    for seq, entry in merged.items():
        if entry[3] is None:
            raise StoreError("a poll result without its partition lease cannot be written to PostgreSQL")
        shapes.setdefault(tuple(sorted(k for k in entry[0] if k in pgsql.COLUMN_TYPES)), []).append((seq, entry))
    # the fence holds until commit: the lease rows are locked (KEY SHARE) so no replica can
    # take a partition over between this check and the commit (a paused writer's open
    # transaction is ended by idle_in_transaction_session_timeout, and its write refused)
    await conn.execute(pgsql.LOCK_LEASES, sorted({e[3][0] for e in merged.values()}))
    written: set[int] = set()
    for cols, rows in shapes.items():
        arrays = [
            [s for s, _ in rows],
            [e[3][0] for _, e in rows],
            [e[3][1] for _, e in rows],
            [e[1] for _, e in rows],
            [e[2] for _, e in rows],
            *pgsql.column_values(cols, [e[0] for _, e in rows]),
        ]
        written.update(r[0] for r in await conn.fetch(pgsql.fenced_update(cols), *arrays, owner))
    if history:
        await conn.execute(pgsql.HISTORY_FENCED, *map(list, zip(*history)), sorted(written))
    return written
