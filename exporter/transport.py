"""The HTTP seam: the only place the host sends provider requests.

Plugins build `httpx.Request`s and parse `httpx.Response`s; everything between (connection
pool, overall deadline, response size cap, mapping network failures to error reasons) is here,
behind the small `Transport` protocol, so the client library can be swapped for speed without
touching a plugin.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import httpx

from .errors import PollError
from .model import ErrorReason

_DROP_HEADERS = ("content-encoding", "content-length", "transfer-encoding")


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
