"""The Python limit: a plain aiohttp request loop against the same endpoint the exporter polls.

`concurrency` workers share one `ClientSession` (a keep-alive pool of that size) and each does
GET, read the body, `json.loads` it — the least any Python poller must do per status request.
Bounded by `--duration` seconds and `--max-requests`. Prints one JSON line:
`{"requests", "errors", "seconds", "cpu_seconds", "loop"}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

import aiohttp


async def drive(url: str, token: str, concurrency: int, duration: float, max_requests: int) -> dict:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    done = errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.monotonic() + duration

        async def worker() -> None:
            nonlocal done, errors
            while time.monotonic() < deadline and done + errors < max_requests:
                try:
                    async with session.get(url, headers=headers) as response:
                        json.loads(await response.read())
                        if response.status == 200:
                            done += 1
                        else:
                            errors += 1
                except (aiohttp.ClientError, ValueError):
                    errors += 1

        cpu0, t0 = _cpu(), time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds, cpu = time.monotonic() - t0, _cpu() - cpu0
    return {
        "requests": done,
        "errors": errors,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--token", default="bench-token")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (as the exporter does when installed)")
    args = parser.parse_args()
    coro = drive(args.url, args.token, args.concurrency, args.duration, args.max_requests)
    if args.uvloop:
        import uvloop

        result = uvloop.run(coro)
    else:
        result = asyncio.run(coro)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
