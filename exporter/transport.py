"""The HTTP seam: the only place the host sends provider requests.

Plugins build `httpx.Request`s and parse `httpx.Response`s; everything between (connection
pool, overall deadline, response size cap, mapping network failures to error reasons) is here,
behind the small `Transport` protocol, so the client can be swapped for speed without touching
a plugin.

`Http11Transport` is the default: it writes the plugin's `httpx.Request` (method, exact encoded
target, headers, body) on a kept-alive connection of `http11.ConnectionPool` and hands back an
`httpx.Response`. Measured per status request on 2 cores (bench/README.md): httpx's own async
pool ~1.6 ms of CPU at 64 connections (it scans every connection for every request), aiohttp's
client behind this seam ~125 µs, this ~60 µs.
"""

from __future__ import annotations

import asyncio
import gc
import ssl
from typing import Any, Coroutine, Protocol, TypeVar

import httpx

from . import http11
from .errors import PollError
from .model import ErrorReason

T = TypeVar("T")

#: the body handed to the plugin is whole and decoded: these would describe it wrongly
_DROP_RAW = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, on uvloop when it is installed (a dependency where it has wheels).

    uvloop's socket transports and timers cost less CPU per request than asyncio's selector
    loop: ~20 % more polls per core in bench/run.py. Everything else is plain asyncio.

    The service process also collects its youngest GC generation every 10,000 allocations
    instead of 700: every poll allocates a few dozen short-lived containers, and with 100,000
    watched calls the collections cost ~6 % of a poll's CPU at the default.
    """
    gc.set_threshold(10_000, *gc.get_threshold()[1:])
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


class Transport(Protocol):
    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send and read the whole (capped) body; raise `PollError` on any network failure."""

    async def aclose(self) -> None: ...


class Http11Transport:
    """A keep-alive pool per account with an overall deadline and a body cap.

    No redirects, proxies or cookies; only the headers the plugin set (httpx adds Host); one
    deadline for the whole exchange (connect, send, the whole body); the decoded body capped at
    `max_bytes`; every failure a `PollError` with its reason.
    """

    def __init__(self, max_connections: int, timeout: float, max_bytes: int,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.pool = http11.ConnectionPool(max_connections, ssl_context)  # None: certifi's CAs

    async def send(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        try:
            key = _origin(url)
            method = request.method.encode()
            head = http11.request_head(method, url.raw_path, request.headers.raw, _content(request))
        except http11.HTTPError as exc:
            raise PollError(ErrorReason.CONNECTION_ERROR, f"{url.path}: {exc}") from None
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self.pool.request(method, key, head, self.max_bytes)
            headers, encodings = [], []
            for name, value in answer.headers:
                lower = name.lower()
                if lower in _DROP_RAW:  # the body handed over is whole and decoded
                    if lower == b"content-encoding":
                        encodings.append(value)
                else:
                    headers.append((name, value))
            body = http11.decode_body(answer.body, encodings, self.max_bytes) if encodings else answer.body
        except TimeoutError:
            raise PollError(ErrorReason.TIMEOUT, f"{url.path}: no complete answer within {self.timeout:g}s") from None
        except http11.BodyTooLarge:
            raise PollError(ErrorReason.INVALID_RESPONSE,
                            f"{url.path}: body larger than max_response_bytes ({self.max_bytes})") from None
        except http11.BodyNotDecodable:
            raise PollError(ErrorReason.INVALID_RESPONSE, f"{url.path}: body cannot be decoded") from None
        except http11.HTTPError as exc:
            raise PollError(ErrorReason.CONNECTION_ERROR, f"{url.path}: {exc}") from None
        return httpx.Response(answer.status, headers=headers, content=body, request=request,
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": answer.reason})

    async def aclose(self) -> None:
        self.pool.close()


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    scheme = url.scheme
    if scheme not in ("http", "https"):
        raise http11.HTTPError(f"unsupported URL scheme {scheme!r}")
    return scheme, url.host, url.port or (443 if scheme == "https" else 80)


def _content(request: httpx.Request) -> bytes:
    try:
        return request.content
    except httpx.RequestNotRead:
        return request.read()
