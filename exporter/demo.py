"""`demo`: the service against every installed fake provider, with synthetic traffic.

Each fake runs in this process on 127.0.0.1; one account per fake points at it; a generator
creates calls at the fake (with a realistic outcome mix) and registers them with the service
through the same path as the REST API. `failure_spike_at` switches the mix to mostly failures.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path
from typing import Any

from .config import Config
from .errors import RequestError
from .plugins import Registry
from .server import serve
from .service import Service
from .testing import DEFAULT_MIX, SPIKE_MIX, FakeProvider

log = logging.getLogger(__name__)

#: fake time runs this much faster than wall time, so demo calls end within a minute
DEMO_SPEED = 2.0


def demo_config(fakes: dict[str, FakeProvider], listen: str, store: Path) -> Config:
    accounts = [{
        "name": f"demo-{name}", "provider": name, "base_url": fake.url, "settings": fake.demo_settings(),
        "max_concurrency": 16, "max_requests_per_second": 200,
        "poll_interval_seconds": {"queued": 1, "dialing": 1, "in_progress": 3, "unknown": 3},
    } for name, fake in fakes.items()]
    return Config(listen_address=listen, store_path=store, accounts=accounts)


async def run_demo(registry: Registry, listen: str, store: Path, duration: float | None,
                   calls_per_second: float, failure_spike_at: float | None, max_calls: int | None = None) -> None:
    fakes: dict[str, FakeProvider] = {}
    for name, fake_cls in sorted(registry.fakes.items()):
        if name in registry.providers:
            fakes[name] = fake_cls(speed=DEMO_SPEED)
            await fakes[name].start()
    if not fakes:
        raise RuntimeError("no fake providers are installed; `outbound-call-exporter plugins` lists plugins")
    service = Service(demo_config(fakes, listen, store), registry)
    stop = asyncio.Event()
    started = time.monotonic()

    async def traffic(url: str) -> None:
        print(f"demo: {len(fakes)} fake provider(s) ({', '.join(fakes)}) on 127.0.0.1; "
              f"metrics at {url}/metrics, calls at {url}/api/v1/calls", flush=True)
        asyncio.create_task(_generate(service, fakes, calls_per_second, started, failure_spike_at, stop, max_calls))
        if duration is not None:
            asyncio.get_running_loop().call_later(duration, stop.set)

    try:
        await serve(service, stop, on_ready=traffic)
    finally:
        for fake in fakes.values():
            await fake.stop()


async def _generate(service: Service, fakes: dict[str, FakeProvider], rate: float, started: float,
                    spike_at: float | None, stop: asyncio.Event, max_calls: int | None) -> None:
    """Create calls at the fakes and register them, `rate` per second in all (Poisson arrivals)."""
    rng = random.Random()
    names = list(fakes)
    count = 0
    while not stop.is_set() and (max_calls is None or count < max_calls):
        count += 1
        spiking = spike_at is not None and time.monotonic() - started >= spike_at
        name = rng.choice(names)
        call = fakes[name].demo_call(SPIKE_MIX if spiking else DEFAULT_MIX)
        body: dict[str, Any] = {"account": f"demo-{name}", "call_id": call.call_id, "params": call.params}
        try:
            await service.register([body])
        except RequestError as exc:
            log.warning("demo registration refused: %s", exc)
        try:
            await asyncio.wait_for(stop.wait(), rng.expovariate(rate))
        except TimeoutError:
            pass
