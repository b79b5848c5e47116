"""The exporter exactly as `outbound-call-exporter run` starts it, plus a scheduling-lag probe.

The probe wraps each account's transport (the `Transport` seam, so nothing in the exporter
changes). A poll's next due time is set in the same synchronous step that follows the response
(`_poll` schedules `now + cadence` right after parsing), so for a call whose state does not change

    lag = (time the next request is sent) - (time the previous response came back + cadence)

measured on the event loop's clock. The first poll of each call (jittered by design) is not a
sample. Samples taken in the first `--warmup` seconds after start-up are dropped; on SIGTERM the
process writes `{"samples", "p50", "p90", "p99", "max"}` to `--out` and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from typing import Any

import httpx

from outbound_call_exporter import cli
from outbound_call_exporter.config import Account, Config, load_config
from outbound_call_exporter.model import State
from outbound_call_exporter.plugins import load_registry
from outbound_call_exporter.server import serve
from outbound_call_exporter.service import Service, default_transport
from outbound_call_exporter.transport import run_event_loop


class LagProbe:
    def __init__(self, inner: Any, cadence: float, warmup: float, samples: list[float]) -> None:
        self.inner = inner
        self.cadence = cadence
        self.samples = samples
        self.returned: dict[str, float] = {}
        self.loop = asyncio.get_running_loop()
        self.record_after = self.loop.time() + warmup

    async def send(self, request: httpx.Request) -> httpx.Response:
        key = request.url.raw_path
        sent = self.loop.time()
        previous = self.returned.get(key)
        if previous is not None and sent >= self.record_after:
            self.samples.append(sent - (previous + self.cadence))
        try:
            return await self.inner.send(request)
        finally:
            self.returned[key] = self.loop.time()

    async def aclose(self) -> None:
        await self.inner.aclose()


def summary(samples: list[float]) -> dict[str, float | int]:
    if len(samples) < 100:
        return {"samples": len(samples)}
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"samples": len(samples), "p50": q[49], "p90": q[89], "p99": q[98], "max": max(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--state", default="dialing", help="the state the fixed provider body maps to")
    args = parser.parse_args()
    config = load_config(args.config)
    cli.setup_logging(config.log_level)
    samples: list[float] = []

    def factory(account: Account, cfg: Config) -> LagProbe:
        cadence = account.cadence[State(args.state)]
        return LagProbe(default_transport(account, cfg), cadence, args.warmup, samples)

    service = Service(config, load_registry(), transport_factory=factory)
    run_event_loop(serve(service))  # the event loop `run` uses
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(summary(samples), fh)


if __name__ == "__main__":
    main()
