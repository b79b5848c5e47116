"""The HTTP seam: the only place the host sends provider requests.

Plugins build `httpx.Request`s and parse `httpx.Response`s; everything between (connection
pool, proxies, TLS, overall deadline, response size cap, mapping network failures to error
reasons) is here, behind the small `Transport` protocol, so no plugin knows the client.

`AiohttpTransport` is the default: one `aiohttp.ClientSession` per account, the well-kept
client that already serves our own API, configured by the account's `http_client`
(`exporter/httpclient.py`). The project keeps no HTTP client of its own: proxies (CONNECT
tunnels, absolute-form), private CAs and client certificates come with aiohttp.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import ssl
import time
from typing import Any, Coroutine, Protocol, TypeVar

import aiohttp
import httpx
from aiohttp.http_exceptions import ContentEncodingError
from yarl import URL

from .errors import PollError
from .httpclient import USER_AGENT, HTTPClient, Proxy
from .model import ErrorReason

log = logging.getLogger(__name__)

T = TypeVar("T")

#: the body handed to the plugin is whole and decoded: these would describe it wrongly
_DROP_RAW = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})
#: aiohttp writes these itself from the URL and the body (and after a redirect, anew)
_DROP_SENT = frozenset({b"host", b"content-length"})
#: a repeated connection failure is logged again after this long (the counters count every one)
LOG_EVERY_SECONDS = 60.0


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


class AiohttpTransport:
    """An `aiohttp.ClientSession` per account with an overall deadline and a body cap.

    A `TCPConnector` holds at most `max_connections` (kept alive 15 s idle; DNS answers cached
    10 s). No cookies; redirects only with `follow_redirects`; on the wire only the plugin's
    headers, Host, Content-Length and `User-Agent: outbound-call-exporter/<version>` (aiohttp's
    own Accept and Accept-Encoding are suppressed). One deadline covers the whole exchange
    (proxy, connect, TLS, send, the whole body); the decoded body is capped at `max_bytes`;
    every failure is a `PollError` with its reason and a message that names hosts, never
    credentials.
    """

    def __init__(
        self, max_connections: int, timeout: float, max_bytes: int, client: HTTPClient | None = None, name: str = ""
    ) -> None:
        self.max_connections = max_connections
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.client = client or HTTPClient()
        self.name = name
        self._session: aiohttp.ClientSession | None = None
        self._deadlines = _Deadlines(timeout)
        self._logged: dict[str, float] = {}
        if self.client.insecure:
            log.warning(
                "account %s: http_client.tls_config.insecure_skip_verify is true: provider certificates "
                "and host names are NOT verified",
                name or "?",
            )

    def _open(self) -> aiohttp.ClientSession:
        """Created on first use, inside the running loop (aiohttp requires it)."""
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            limit_per_host=0,
            ttl_dns_cache=10,
            keepalive_timeout=15,
            ssl=self.client.context(),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(),
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
            raise_for_status=False,
            headers={"User-Agent": USER_AGENT},
            skip_auto_headers=("Accept", "Accept-Encoding"),
        )
        return self._session

    async def send(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        url = request.url
        where = url.path
        proxy = self.client.proxy_for(url.scheme, url.host, url.port)
        task = self._deadlines.enter()
        try:
            status, raw_headers, reason, body = await self._exchange(session, request, proxy, where)
        except BaseException as exc:
            if self._deadlines.leave(task):
                raise PollError(ErrorReason.TIMEOUT, f"{where}: no complete answer within {self.timeout:g}s") from None
            if isinstance(exc, (aiohttp.ClientError, OSError)):
                raise self._error(exc, where, url, proxy) from None
            raise
        self._deadlines.leave(task)
        if proxy is not None and status == 407:  # http through a proxy: the proxy's answer, not the provider's
            raise self._connection_error(where, url, proxy, "the proxy refused the request: 407")
        answer = httpx.Response(
            status,
            headers=[(k, v) for k, v in raw_headers if k.lower() not in _DROP_RAW],
            stream=httpx.ByteStream(body),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (reason or "").encode("latin-1", "replace")},
        )
        # what `answer.read()` would store, without running httpx's decoders again over a body
        # aiohttp has already decoded: ~15 µs of a poll's ~170 µs (bench/README.md)
        answer._content = body
        return answer

    async def _exchange(
        self, session: aiohttp.ClientSession, request: httpx.Request, proxy: Proxy | None, where: str
    ) -> tuple[int, Any, str | None, bytes]:
        headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw if k.lower() not in _DROP_SENT
        ]
        async with session.request(
            request.method,
            URL(str(request.url), encoded=True),
            headers=headers,
            data=_content(request) or None,
            allow_redirects=self.client.follow_redirects,
            server_hostname=self.client.server_name,
            proxy=proxy.url if proxy else None,
            proxy_headers=proxy.connect_headers if proxy else None,
        ) as response:
            body = await self._read_capped(response, where)
            return response.status, response.raw_headers, response.reason, body

    def _error(self, exc: BaseException, where: str, url: httpx.URL, proxy: Proxy | None) -> PollError:
        if isinstance(exc, aiohttp.TooManyRedirects):
            return PollError(ErrorReason.INVALID_RESPONSE, f"{where}: too many redirects")
        if isinstance(exc, aiohttp.ClientPayloadError):
            if _caused_by(exc, ContentEncodingError):
                return PollError(ErrorReason.INVALID_RESPONSE, f"{where}: body cannot be decoded")
            return self._connection_error(where, url, proxy, "connection lost during the answer")
        return self._connection_error(where, url, proxy, _describe(exc))

    async def _read_capped(self, response: aiohttp.ClientResponse, where: str) -> bytes:
        """The decoded body, or `invalid_response` as soon as it is known to be over the cap
        (then the connection is closed: nothing more is read)."""
        length = response.content_length
        encoded = "Content-Encoding" in response.headers
        if length is not None and not encoded:
            if length > self.max_bytes:
                response.close()
                raise self._too_large(where)
            return await response.read()  # the common case: a small body of known, checked size
        chunks, size = [], 0
        while chunk := await response.content.readany():
            size += len(chunk)
            if size > self.max_bytes:
                response.close()
                raise self._too_large(where)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, where: str) -> PollError:
        return PollError(
            ErrorReason.INVALID_RESPONSE, f"{where}: body larger than max_response_bytes ({self.max_bytes})"
        )

    def _connection_error(self, where: str, url: httpx.URL, proxy: Proxy | None, what: str) -> PollError:
        """One log line per distinct failure (again after `LOG_EVERY_SECONDS`), naming the
        provider host and the proxy host; the request path (call ids) stays out of the log."""
        origin = f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
        via = f" via proxy {proxy.host}" if proxy else ""
        line = f"{origin}{via}: {what}"
        now = time.monotonic()
        if now - self._logged.get(line, -LOG_EVERY_SECONDS) >= LOG_EVERY_SECONDS:
            if len(self._logged) >= 256:  # lines differ by host and cause only; bounded all the same
                self._logged.clear()
            self._logged[line] = now
            log.warning("account %s: cannot reach %s", self.name or "?", line)
        return PollError(ErrorReason.CONNECTION_ERROR, f"{where}: {line}")

    async def aclose(self) -> None:
        self._deadlines.close()
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Deadlines:
    """The overall deadline of each in-flight request, enforced by one timer per transport.

    A timer per request (`asyncio.timeout`) costs ~10 µs of a poll's ~170 µs; one callback every
    `tick` seconds cancels the requests past their deadline instead, at most a tick late (0.1 s,
    or a tenth of the deadline when that is shorter). A task here is always suspended inside
    `send`, so the cancellation lands there, where `leave` turns it into a timeout.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.tick = min(0.1, seconds / 10)
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def enter(self) -> asyncio.Task[Any]:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._due[task] = loop.time() + self.seconds
        if self._timer is None:
            self._timer = loop.call_later(self.tick, self._check, loop)
        return task

    def leave(self, task: asyncio.Task[Any]) -> bool:
        """Done with the request; True if its deadline cancelled it."""
        self._due.pop(task, None)
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, due in list(self._due.items()):  # at most max_concurrency requests in flight
            if due <= now:
                del self._due[task]
                self._expired.add(task)
                task.cancel()
        self._timer = loop.call_later(self.tick, self._check, loop) if self._due else None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _os_reason(exc: aiohttp.ClientConnectorError) -> str:
    """ "Connection refused", not asyncio's "Connect call failed ('10.0.0.1', 443)"."""
    errno = exc.os_error.errno
    return os.strerror(errno) if errno else (exc.strerror or type(exc.os_error).__name__)


def _describe(exc: BaseException) -> str:
    """What went wrong, from the exception's parts (never its text: aiohttp's may hold URLs)."""
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return f"the proxy refused CONNECT: {exc.status} {exc.message}"[:160]
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert = exc.certificate_error
        return f"TLS certificate not trusted: {getattr(cert, 'verify_message', None) or _ssl_reason(cert)}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup of {exc.host} failed"
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return f"cannot connect to the proxy: {_os_reason(exc)}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"TLS handshake failed: {_ssl_reason(exc.os_error)}"
    tls = _caused_by(exc, ssl.SSLError)
    if tls:
        return f"TLS error: {_ssl_reason(tls)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if exc.ssl and isinstance(exc.os_error, (ConnectionResetError, BrokenPipeError)):  # TCP was up: TLS refused
            return "TLS handshake failed: the server reset the connection"
        return f"cannot connect: {_os_reason(exc)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the connection closed before a complete answer"
    if isinstance(exc, aiohttp.ClientResponseError):  # aiohttp's parser refused the answer
        return f"malformed HTTP answer ({exc.status})"
    if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return "unsupported URL"
    return f"connection failed: {type(exc).__name__}"


def _ssl_reason(exc: BaseException | None) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__


def _caused_by(exc: BaseException, kind: type[T]) -> T | None:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _content(request: httpx.Request) -> bytes:
    try:
        return request.content
    except httpx.RequestNotRead:
        return request.read()
