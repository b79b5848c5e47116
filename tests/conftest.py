"""Shared test harness: the real service and real fake providers on 127.0.0.1.

The service runs `serve()` in a background thread with its own event loop (exactly what
`outbound-call-exporter run` does, minus the process), fakes run in theirs, and tests talk to
both over real sockets with plain httpx clients. No sleeps: `wait_until` polls a condition.

Both store backends. `make_config` gives a test the SQLite file `tmp_path / "calls.db"`; in a
module marked `pytestmark = pytest.mark.both_stores` every test runs twice, `[sqlite]` and
`[postgresql]`, and under `[postgresql]` `make_config` sets `store_url` to a database of its
own per `tmp_path` instead (a copy of a template the schema was migrated into once, emptied
when the test ends and handed to the next: no state leaks, and far faster than a new one). No test's signature changes: the autouse fixture `store_backend` is
what the marker parametrizes (module scope, so a module-scoped service is built once per
backend; such a fixture names `store_backend` so it is built after it). The service is then one
replica that holds its leases before `serve` reports it ready, so `running_service` waits for
that. Where a test looks into the store, `store_rows`, `stored_text`, `break_store` and
`repair_store` speak to either backend.

On both backends: test_api, test_api_fuzz, test_lifecycle_e2e, test_discovery (scopes,
webhooks; the batch scope's per-call baseline on SQLite only), test_trillet_e2e, test_privacy's
webhook and prune-while-running, test_secrets' stored failure reason, and test_store_contract
(the CallStore interface on both stores directly). SQLite only, by nature or for CI's time:
- test_store_batch: SQLite's two write-behind paths (json_each vs executemany);
- test_crash_safety, test_restart, test_soak, test_demo: a SIGKILL, restart or soak on the same
  file, its WAL and crash safety, the demo's own SQLite store; PostgreSQL's drills (SIGKILL,
  SIGSTOP, a database restart, rolling restarts) are test_scaleout's, its store test_pg_store's;
- test_privacy's checks of the store's files (zeroed pages after prune, the WAL), and its
  per-plugin policy and scope-listing tests (the policy applies before any store);
- tests whose store is beside their point (config, plugins, docs, metric shapes, TLS, proxy,
  logs, CLI): CI's 20 minutes are better spent where the store is the subject.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from outbound_call_exporter.config import Config
from outbound_call_exporter.plugins import Registry, load_registry
from outbound_call_exporter.server import serve
from outbound_call_exporter.service import Service

IN_CI = os.environ.get("CI") == "true"


def require_tool(name: str, package: str = "prometheus") -> str:
    """Path of an external program; fail under CI=true when it is missing, skip elsewhere."""
    path = shutil.which(name)
    if path:
        return path
    message = f"`{name}` not found on PATH (install Debian's `{package}` package)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class RunningService:
    def __init__(self, service: Service, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.service = service
        self.url = url
        self.loop = loop
        self.client = httpx.Client(base_url=url, timeout=10, trust_env=False)

    def run(self, coro: Any, timeout: float = 10) -> Any:
        """Await `coro` on the service's own event loop (the store and pollers live there)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def metrics_text(self) -> str:
        response = self.client.get("/metrics")
        response.raise_for_status()
        return response.text

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        out = {}
        for family in text_string_to_metric_families(self.metrics_text()):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample's value from a real scrape (None when the series is absent)."""
        return self.samples().get((name, frozenset(labels.items())))

    def call(self, account: str, call_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/calls/{account}/{call_id}")
        response.raise_for_status()
        return response.json()


@contextmanager
def running_service(config: Config, registry: Registry | None = None) -> Iterator[RunningService]:
    """Run the service on 127.0.0.1 (port from the config, 0 for any) until the block exits."""
    service = Service(config, registry or load_registry())
    ready = threading.Event()
    url: list[str] = []
    errors: list[BaseException] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def on_ready(u: str) -> None:
        url.append(u)
        ready.set()

    def main() -> None:
        try:
            loop.run_until_complete(serve(service, stop, on_ready=on_ready))
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=main, name="service", daemon=True)
    thread.start()
    if not ready.wait(30) or errors:
        raise RuntimeError(f"service did not start: {errors[:1]}")
    running = RunningService(service, url[0], loop)
    try:
        yield running
    finally:
        running.client.close()
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
        if errors:
            raise errors[0]


def account(name: str, provider: str, base_url: str, settings: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An account entry for tests: fast cadence by default so lifecycles finish in seconds."""
    return {"name": name, "provider": provider, "base_url": base_url, "settings": settings,
            "poll_interval_seconds": {"queued": 0.2, "dialing": 0.2, "in_progress": 0.3, "unknown": 0.3},
            "max_requests_per_second": 500, **extra}


def make_config(tmp_path: Path, accounts: list[dict[str, Any]], **extra: Any) -> Config:
    """A service config on 127.0.0.1 with the running test's store: the SQLite file in
    `tmp_path`, or (`[postgresql]`) a fresh database of its own for that `tmp_path`."""
    if (url := _backend.url_for(tmp_path)) is not None:
        extra.setdefault("store_url", url)
    return Config(listen_address="127.0.0.1:0", store_path=tmp_path / "calls.db", accounts=accounts, **extra)


@pytest.fixture(scope="session")
def registry() -> Registry:
    reg = load_registry()
    assert not reg.failures, reg.failures
    return reg


def expected_state(registry: Registry, fake: Any, call: Any) -> str:
    """The state a fake call's final record stands for, as its own plugin reads that record.

    The raw status alone does not say it for every platform: Vapi ends every call `ended` and
    says busy / no answer / failed in `endedReason`, Retell in `disconnection_reason`.
    """
    cls = registry.providers[fake.provider]
    provider = cls(cls.Settings(**fake.demo_settings()), "http://127.0.0.1")
    params = cls.Params(call_id=call.call_id, **call.params)
    record = fake.render(call, len(call.steps) - 1, call.ended_at(fake.speed))
    response = httpx.Response(200, json=record, request=provider.build_request(params))
    return provider.parse_response(params, response).state.value


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A throwaway PostgreSQL server for the whole run (Debian's `postgresql`), removed after."""
    from pgcluster import Cluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL's initdb/pg_ctl not found (install Debian's `postgresql` package)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    cluster = Cluster(bindir).init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


_databases = iter(range(1, 10_000))


@pytest.fixture
def pg_url(pg_cluster: Any) -> str:
    """A fresh empty database on the session's PostgreSQL server."""
    return pg_cluster.create_database(f"t{next(_databases)}")


# -- both store backends (see the module docstring) ---------------------------------------------

STORE_BACKENDS = ("sqlite", "postgresql")
_TABLES = {"sqlite": {"calls": "calls", "history": "history", "scopes": "scopes"},
           "postgresql": {"calls": "oce_calls", "history": "oce_history", "scopes": "oce_scopes"}}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_stores: run every test on the SQLite and on the PostgreSQL store")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("both_stores") and "store_backend" in metafunc.fixturenames:
        metafunc.parametrize("store_backend", STORE_BACKENDS, indirect=True, scope="module")


class StoreBackend:
    """The store `make_config` gives: SQLite (no cluster), or a PostgreSQL database per tmp_path.

    A test's databases are emptied when it ends (`recycle`) and given to the next test: far
    faster than a new database each. One made while no test runs (for a module-scoped
    service) is the module's, dropped with the backend.
    """

    def __init__(self, name: str, cluster: Any = None) -> None:
        self.name, self.cluster = name, cluster
        self.databases: dict[Path, str] = {}  # this test's (or the module's) databases
        self.kept: set[str] = set()  # module-lifetime databases
        self.free: list[str] = []  # emptied, ready for the next test
        self.in_test = False

    def url_for(self, tmp_path: Path) -> str | None:
        if self.cluster is None:
            return None
        if tmp_path not in self.databases:
            name = self.free.pop() if self.free else self._create()
            self.databases[tmp_path] = name
            if not self.in_test:
                self.kept.add(name)
        return self.cluster.url.rsplit("/", 1)[0] + "/" + self.databases[tmp_path]

    def _create(self) -> str:
        name = f"t{next(_databases)}"
        self.cluster.create_database(name, template=_template(self.cluster))
        return name

    def recycle(self) -> None:
        """Empty this test's databases for the next (a broken one, e.g. by `break_store`, is dropped)."""
        used = [(p, n) for p, n in self.databases.items() if n not in self.kept]
        for path, name in used:
            del self.databases[path]
            try:
                _pg_rows(self.cluster.url.rsplit("/", 1)[0] + "/" + name, _RESET)
            except asyncpg.PostgresError:
                self.cluster.drop_database(name)
            else:
                self.free.append(name)

    def drop(self) -> None:
        for name in {*self.databases.values(), *self.free}:
            self.cluster.drop_database(name)


#: the template's state again: every table emptied, sequences restarted, leases unowned at epoch
#: 0 (a check fails it when a migration adds a table this does not know)
_RESET = """
DO $$ BEGIN
    IF (SELECT array_agg(tablename::text ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public')
       <> ARRAY['oce_calls', 'oce_history', 'oce_inbox', 'oce_leases', 'oce_replicas', 'oce_schema', 'oce_scopes']
    THEN RAISE EXCEPTION 'the schema has tables the test reset does not know'; END IF;
    TRUNCATE oce_history, oce_inbox, oce_calls, oce_scopes, oce_replicas RESTART IDENTITY;
    UPDATE oce_leases SET owner = NULL, epoch = 0, expires_at = now();
END $$
"""

_backend = StoreBackend("sqlite")


@pytest.fixture(scope="module", autouse=True)
def store_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """"sqlite" unless the test's module is marked `both_stores` (then each in turn)."""
    global _backend
    name = getattr(request, "param", "sqlite")
    if name == "sqlite":
        yield name
        return
    _backend = StoreBackend(name, request.getfixturevalue("pg_cluster"))
    try:
        yield name
    finally:
        backend, _backend = _backend, StoreBackend("sqlite")
        backend.drop()


@pytest.fixture(autouse=True)
def _store_per_test(store_backend: str) -> Iterator[None]:
    """Under `[postgresql]`: the databases a test made are emptied when it ends."""
    _backend.in_test = True
    try:
        yield
    finally:
        _backend.in_test = False
        _backend.recycle()


def _template(cluster: Any) -> str:
    """A database with the exporter's schema migrated once; new ones are copies (fast)."""
    if getattr(cluster, "template", None) is None:
        from outbound_call_exporter.pgschema import migrate

        url = cluster.create_database("oce_template")

        async def run() -> None:
            conn = await asyncpg.connect(url)
            try:
                await migrate(conn)
            finally:
                await conn.close()

        asyncio.run(run())
        cluster.template = "oce_template"
    return cluster.template


def store_rows(config: Config, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of `sql` run on the config's store, either backend: tables named `{calls}`,
    `{history}`, `{scopes}`; parameters as `?` (rewritten to $1.. for PostgreSQL)."""
    if config.store_url is None:
        with sqlite3.connect(config.store_path) as db:
            return db.execute(sql.format(**_TABLES["sqlite"]), args).fetchall()
    parts = sql.format(**_TABLES["postgresql"]).split("?")
    query = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))
    return _pg_rows(config.store_url.get_secret_value(), query, *args)


def _pg_rows(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """On a connection of its own, from a thread of its own (the caller may be inside a loop)."""
    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result(60)


def stored_text(config: Config) -> str:
    """Everything the store holds, as text (to look for what must never be stored): the SQLite
    files' bytes (with `-wal`, as latin-1), or every row of every PostgreSQL table."""
    if config.store_url is None:
        files = sorted(config.store_path.parent.glob(config.store_path.name + "*"))
        return b"".join(f.read_bytes() for f in files).decode("latin-1")
    tables = [t for (t,) in store_rows(config, "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")]
    dumps = [store_rows(config, f"SELECT string_agg(t::text, E'\\n') FROM {t} t")[0][0] for t in tables]
    return "\n".join(d or "" for d in dumps)


def break_store(config: Config) -> None:
    """Rename the store's tables away under the running service (a broken restore or a wrong
    migration would): every read and write of calls and scopes then fails in the store."""
    for table in ("calls", "history", "scopes"):
        store_rows(config, f"ALTER TABLE {{{table}}} RENAME TO {{{table}}}_gone")


def repair_store(config: Config) -> None:
    """Undo `break_store` (so the service's stop can write what waited)."""
    for table in ("calls", "history", "scopes"):
        store_rows(config, f"ALTER TABLE {{{table}}}_gone RENAME TO {{{table}}}")
