"""Shared test harness: the real service and real fake providers on 127.0.0.1.

The service runs `serve()` in a background thread with its own event loop (exactly what
`outbound-call-exporter run` does, minus the process), fakes run in theirs, and tests talk to
both over real sockets with plain httpx clients. No sleeps: `wait_until` polls a condition.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

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
