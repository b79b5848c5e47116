"""`demo`: the service against every installed fake provider, with synthetic traffic.

Each fake runs in this process on 127.0.0.1; one account per fake points at it; a generator
creates calls at the fake (with a realistic outcome mix) and registers them with the service
through the same path as the REST API. The normal mix is a normal campaign (most calls not
answered); `failure_spike_at` switches it to ~35 % technical failures, `answer_drop_at` to a
collapsed answer rate (whichever began last applies).

Each run starts on a fresh temporary store unless one is given. A kept store (`--store`, the
compose stack's volume) holds calls of an earlier run that this run's fresh fakes never heard
of: they would answer 404 and every such call would end `expired`, so the fakes adopt them
first and carry each on from its stored state.
"""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from .config import Config
from .errors import RequestError
from .model import State
from .plugins import Registry
from .server import serve
from .service import Service
from .store import SQLiteStore
from .testing import ANSWER_DROP_MIX, DEFAULT_MIX, SPIKE_MIX, FakeProvider

log = logging.getLogger(__name__)

#: fake time runs this much faster than wall time, so demo calls end within a minute
DEMO_SPEED = 2.0
#: fake calls always end; one resumed from a store kept while the stack was down must not expire
DEMO_MAX_WATCH_SECONDS = 10 * 365 * 86400.0
ACCOUNT_PREFIX = "demo-"
FRESH_PREFIX = "oce-demo-"


def demo_config(fakes: dict[str, FakeProvider], listen: str, store: Path) -> Config:
    accounts = [
        {
            "name": f"{ACCOUNT_PREFIX}{name}",
            "provider": name,
            "base_url": fake.url,
            "settings": fake.demo_settings(),
            "max_concurrency": 16,
            "max_requests_per_second": 200,
            "poll_interval_seconds": {"queued": 1, "dialing": 1, "in_progress": 3, "unknown": 3},
        }
        for name, fake in fakes.items()
    ]
    return Config(listen_address=listen, store_path=store, accounts=accounts, max_watch_seconds=DEMO_MAX_WATCH_SECONDS)


async def adopt_stored_calls(store_path: Path, fakes: dict[str, FakeProvider], registry: Registry) -> int:
    """Give every fake the watched calls of its demo account from a kept store; their count."""
    if not store_path.exists():
        return 0
    store = SQLiteStore(store_path)
    await store.open()
    adopted = 0
    try:
        async for chunk in store.iter_active():
            for row in chunk:
                name = row.account.removeprefix(ACCOUNT_PREFIX)
                if row.account.startswith(ACCOUNT_PREFIX) and name in fakes:
                    adopt(fakes[name], registry.providers[name].status_map, row.call_id, row.params, State(row.state))
                    adopted += 1
    finally:
        await store.close()
    return adopted


def adopt(
    fake: FakeProvider, status_map: Mapping[str, State], call_id: str, params: dict[str, Any], state: State
) -> None:
    """Script a call the fake never created, its clock set where the call shows `state` (as the
    plugin reads the raw statuses), ending in an outcome of the usual mix."""
    outcomes = [s for s in DEFAULT_MIX if s in fake.raw_status]
    outcome = fake.rng.choices(outcomes, [DEFAULT_MIX[s] for s in outcomes])[0]
    if state is State.IN_PROGRESS:
        outcome = State.COMPLETED  # the only lifecycle that connects
    call = fake.add_call(call_id, params={k: str(v) for k, v in params.items() if v is not None}, outcome=outcome)
    at = next((step.after for step in call.steps if status_map.get(step.status) is state), 0.0)
    call.created = time.time() - at / fake.speed


async def run_demo(
    registry: Registry,
    listen: str,
    store: Path | None,
    duration: float | None,
    calls_per_second: float,
    failure_spike_at: float | None,
    max_calls: int | None = None,
    answer_drop_at: float | None = None,
) -> None:
    if store is None:
        with tempfile.TemporaryDirectory(prefix=FRESH_PREFIX) as tmp:
            return await run_demo(
                registry,
                listen,
                Path(tmp) / "demo.db",
                duration,
                calls_per_second,
                failure_spike_at,
                max_calls,
                answer_drop_at,
            )
    fakes: dict[str, FakeProvider] = {}
    for name, fake_cls in sorted(registry.fakes.items()):
        if name in registry.providers:
            fakes[name] = fake_cls(speed=DEMO_SPEED)
            await fakes[name].start()
    if not fakes:
        raise RuntimeError("no fake providers are installed; `outbound-call-exporter plugins` lists plugins")
    fresh = not store.exists()
    adopted = await adopt_stored_calls(store, fakes, registry)
    if adopted:
        log.info("demo: %d unfinished calls of an earlier run in %s carry on with this run's fakes", adopted, store)
    service = Service(demo_config(fakes, listen, store), registry)
    stop = asyncio.Event()
    started = time.monotonic()

    async def traffic(url: str) -> None:
        print(
            f"demo: {len(fakes)} fake provider(s) ({', '.join(fakes)}) on 127.0.0.1; "
            f"metrics at {url}/metrics, calls at {url}/api/v1/calls; "
            f"store {store} ({'new' if fresh else 'kept from an earlier run'})",
            flush=True,
        )
        mixes = {
            at: mix for at, mix in ((failure_spike_at, SPIKE_MIX), (answer_drop_at, ANSWER_DROP_MIX)) if at is not None
        }
        asyncio.create_task(_generate(service, fakes, calls_per_second, started, mixes, stop, max_calls))
        if duration is not None:
            asyncio.get_running_loop().call_later(duration, stop.set)

    try:
        await serve(service, stop, on_ready=traffic)
    finally:
        for fake in fakes.values():
            await fake.stop()


async def _generate(
    service: Service,
    fakes: dict[str, FakeProvider],
    rate: float,
    started: float,
    mixes: dict[float, Mapping[State, float]],
    stop: asyncio.Event,
    max_calls: int | None,
) -> None:
    """Create calls at the fakes and register them, `rate` per second in all (Poisson arrivals).

    `mixes`: seconds after start -> the outcome mix from then on (DEFAULT_MIX before any).
    """
    rng = random.Random()
    names = list(fakes)
    count = 0
    while not stop.is_set() and (max_calls is None or count < max_calls):
        count += 1
        elapsed = time.monotonic() - started
        mix = max(((at, m) for at, m in mixes.items() if at <= elapsed), default=(0.0, DEFAULT_MIX))[1]
        name = rng.choice(names)
        call = fakes[name].demo_call(mix)
        body: dict[str, Any] = {"account": f"demo-{name}", "call_id": call.call_id, "params": call.params}
        try:
            await service.register([body])
        except RequestError as exc:
            log.warning("demo registration refused: %s", exc)
        try:
            await asyncio.wait_for(stop.wait(), rng.expovariate(rate))
        except TimeoutError:
            pass
