"""The HTTP seam: the only place the host sends provider requests.

Plugins build `httpx.Request`s and parse `httpx.Response`s; everything between (connection
pool, overall deadline, response size cap, mapping network failures to error reasons) is here,
behind the small `Transport` protocol, so the client library can be swapped for speed without
touching a plugin.

`AiohttpTransport` is the default: it sends the plugin's `httpx.Request` (method, exact encoded
URL, headers, body) through an aiohttp connection pool and hands back an `httpx.Response`.
httpx's own async pool costs ~1.5 ms of CPU per request at 64 connections (it scans every
connection for every request), aiohttp's ~0.1 ms (bench/README.md). `HttpxTransport` is kept
as the plain reference implementation of the same contract.
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, Protocol, TypeVar

import aiohttp
import httpx
from aiohttp.http_exceptions import ContentEncodingError
from yarl import URL

from .errors import PollError
from .model import ErrorReason

T = TypeVar("T")

_DROP_HEADERS = ("content-encoding", "content-length", "transfer-encoding")
_DROP_RAW = frozenset(h.encode() for h in _DROP_HEADERS)


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, on uvloop when it is installed (a dependency where it has wheels).

    uvloop's socket transports and timers cost less CPU per request than asyncio's selector
    loop: ~20 % more polls per core in bench/run.py. Everything else is plain asyncio.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


class Transport(Protocol):
    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send and read the whole (capped) body; raise `PollError` on any network failure."""

    async def aclose(self) -> None: ...


class HttpxTransport:
    """An `httpx.AsyncClient` per account with an overall deadline and a body cap."""

    def __init__(self, max_connections: int, timeout: float, max_bytes: int) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
        )

    async def send(self, request: httpx.Request) -> httpx.Response:
        where = request.url.path
        try:
            async with asyncio.timeout(self.timeout):
                response = await self.client.send(request, stream=True)
                try:
                    body = await self._read_capped(response, where)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise PollError(ErrorReason.TIMEOUT, f"{where}: no complete answer within {self.timeout:g}s") from None
        except httpx.TimeoutException:
            raise PollError(ErrorReason.TIMEOUT, f"{where}: timed out") from None
        except httpx.DecodingError:
            raise PollError(ErrorReason.INVALID_RESPONSE, f"{where}: body cannot be decoded") from None
        except httpx.TransportError as exc:
            raise PollError(ErrorReason.CONNECTION_ERROR, f"{where}: {type(exc).__name__}") from None
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _DROP_HEADERS]
        return httpx.Response(response.status_code, headers=headers, content=body, request=request)

    async def _read_capped(self, response: httpx.Response, where: str) -> bytes:
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise PollError(ErrorReason.INVALID_RESPONSE,
                                f"{where}: body larger than max_response_bytes ({self.max_bytes})")
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self.client.aclose()


class AiohttpTransport:
    """An aiohttp connection pool per account with an overall deadline and a body cap.

    Same contract as `HttpxTransport`: no redirects, no proxies from the environment, no
    cookies, only the headers the plugin set (plus Host), one deadline for the whole exchange,
    the decoded body capped at `max_bytes`, every failure a `PollError` with its reason.
    """

    def __init__(self, max_connections: int, timeout: float, max_bytes: int) -> None:
        self.max_connections = max_connections
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        """Created on first use, inside the running loop (aiohttp requires it)."""
        connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None), trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=True, raise_for_status=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"))
        return self._session

    async def send(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        url = request.url
        where = url.path
        try:
            async with asyncio.timeout(self.timeout):
                async with session.request(request.method, URL(str(url), encoded=True),
                                           headers=request.headers.multi_items(), data=request.content or None,
                                           allow_redirects=False) as response:
                    status, raw_headers = response.status, response.raw_headers
                    body = await self._read_capped(response, where)
        except TimeoutError:
            raise PollError(ErrorReason.TIMEOUT, f"{where}: no complete answer within {self.timeout:g}s") from None
        except aiohttp.ClientPayloadError as exc:
            if _caused_by(exc, ContentEncodingError):
                raise PollError(ErrorReason.INVALID_RESPONSE, f"{where}: body cannot be decoded") from None
            raise PollError(ErrorReason.CONNECTION_ERROR, f"{where}: {type(exc).__name__}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise PollError(ErrorReason.CONNECTION_ERROR, f"{where}: {type(exc).__name__}") from None
        headers = [(k, v) for k, v in raw_headers if k.lower() not in _DROP_RAW]
        return httpx.Response(status, headers=headers, content=body, request=request)

    async def _read_capped(self, response: aiohttp.ClientResponse, where: str) -> bytes:
        length = response.content_length
        if length is not None and length > self.max_bytes:
            raise PollError(ErrorReason.INVALID_RESPONSE,
                            f"{where}: body larger than max_response_bytes ({self.max_bytes})")
        if length is not None and "Content-Encoding" not in response.headers:
            return await response.read()  # the common case: a small body of known, checked size
        chunks, size = [], 0
        while chunk := await response.content.readany():
            size += len(chunk)
            if size > self.max_bytes:
                raise PollError(ErrorReason.INVALID_RESPONSE,
                                f"{where}: body larger than max_response_bytes ({self.max_bytes})")
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
