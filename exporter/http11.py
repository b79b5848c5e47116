"""A small HTTP/1.1 client for status polling: keep-alive connections on asyncio protocols.

Status polling is many tiny GETs to one host over a few dozen kept-alive connections. General
clients spend most of their CPU on features this never uses (cookies, redirects, proxies,
streaming, middleware): aiohttp ~100 µs per request here, httpx's pool ~1.5 ms at 64
connections. This client writes each request in one `write`, parses the answer with
`httptools` (llhttp, the parser of Node.js) in the protocol's `data_received`, and costs
~35 µs per request on uvloop (bench/README.md).

It does exactly what the host needs and no more: http and https (certifi's CA bundle, as
httpx), Content-Length, chunked and close-delimited bodies, gzip/deflate decoding, a body cap,
a connection limit with waiting, idle connections reused for `KEEPALIVE_SECONDS`, and one
retry on a fresh connection when a reused one turns out to be closed before any byte of the
answer (idempotent methods only). No redirects, proxies, cookies or HTTP/2. The caller holds
the deadline (`asyncio.timeout`): a cancelled exchange closes its connection.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque

import httptools

#: idle connections older than this are closed rather than reused (servers drop them too)
KEEPALIVE_SECONDS = 15.0
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


class HTTPError(Exception):
    """The exchange failed at the HTTP or socket level (connection error)."""


class BodyTooLarge(Exception):
    """The (decoded) body is larger than the cap."""


class BodyNotDecodable(Exception):
    """The body's Content-Encoding cannot be decoded."""


class _Stale(HTTPError):
    """A reused connection was closed before any byte of the answer arrived."""


class Answer:
    __slots__ = ("status", "reason", "headers", "body")

    def __init__(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status, self.reason, self.headers, self.body = status, reason, headers, body


class _Connection(asyncio.Protocol):
    """One connection; one exchange at a time; callbacks from `httptools`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple[str, str, int]) -> None:
        self.loop = loop
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._reset(0)

    def _reset(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.got_bytes = False
        self.headers_done = False
        self.until_close = False
        self.no_body = False
        self.answer: Answer | None = None
        self.error: BaseException | None = None

    # -- the exchange -------------------------------------------------------------------------

    async def exchange(self, head: bytes, max_bytes: int, no_body: bool = False) -> Answer:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise _Stale("connection closed while idle")
        self._reset(max_bytes)
        self.no_body = no_body
        self.reusable = False
        waiter = self._waiter = self.loop.create_future()
        self.transport.write(head)
        try:
            await waiter
        finally:
            self._waiter = None
        if self.answer is None:  # HEAD, or a body delimited by the end of the connection
            self.answer = Answer(self.status, self.reason, self.headers, b"".join(self.body))
        return self.answer

    def _finish(self, error: BaseException | None = None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():  # nothing asked: the server misbehaves
            self.close()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HTTPError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(self.error or HTTPError(f"malformed HTTP response: {exc}"))
            if self.answer is not None:
                self.reusable = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if exc is None and self.until_close and self.error is None:
            self._finish()  # a body delimited by the end of the connection
        elif not self.got_bytes:
            self._finish(_Stale("connection closed before the answer"))
        else:
            self._finish(HTTPError(f"connection lost during the answer: {type(exc).__name__ if exc else 'EOF'}"))

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self.close()
        self._finish(error)

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.answer is not None or (self.no_body and self.headers_done):
            raise HTTPError("data after the answer")  # stops the parser; the connection is closed

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True
        if self.no_body and self.status >= 200:  # HEAD: llhttp cannot be told; done, not reused
            self._finish()
            return
        if self.status >= 200 and self.status not in (204, 304):
            names = {name.lower() for name, _ in self.headers}
            self.until_close = b"content-length" not in names and b"transfer-encoding" not in names

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_bytes:
            self.error = BodyTooLarge()
            raise BodyTooLarge()  # stops the parser; reported from data_received
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.status < 200:  # an informational answer (100 Continue): the real one follows
            self.headers, self.reason, self.headers_done = [], b"", False
            return
        self.reusable = self.parser.should_keep_alive() and not self.until_close
        self.answer = Answer(self.status, self.reason, self.headers, b"".join(self.body))
        self._finish()


class ConnectionPool:
    """Keep-alive connections per (scheme, host, port); at most `max_connections` open."""

    def __init__(self, max_connections: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_connections = max_connections
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._ssl = ssl_context

    async def request(self, method: bytes, key: tuple[str, str, int], head: bytes, max_bytes: int) -> Answer:
        """Send `head` (the whole request) and read the answer; raises HTTPError, BodyTooLarge."""
        for attempt in (0, 1):
            conn, reused = await self._acquire(key)
            try:
                answer = await conn.exchange(head, max_bytes, no_body=method == b"HEAD")
            except _Stale:
                self._discard(conn)
                if reused and attempt == 0 and method in IDEMPOTENT:
                    continue
                raise
            except BaseException:
                self._discard(conn)
                raise
            self._release(conn)
            return answer
        raise AssertionError("unreachable")

    async def _acquire(self, key: tuple[str, str, int]) -> tuple[_Connection, bool]:
        loop = asyncio.get_running_loop()
        while True:
            idle = self._idle.get(key)
            while idle:
                conn = idle.pop()
                if not conn.closed and loop.time() - conn.idle_since < KEEPALIVE_SECONDS:
                    return conn, True
                self._discard(conn)
            if self._open < self.max_connections:
                break
            if not self._close_one_idle():
                waiter = loop.create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                finally:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
        self._open += 1
        try:
            return await self._connect(loop, key), False
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    async def _connect(self, loop: asyncio.AbstractEventLoop, key: tuple[str, str, int]) -> _Connection:
        scheme, host, port = key
        context = self._ssl_context() if scheme == "https" else None
        try:
            _, conn = await loop.create_connection(lambda: _Connection(loop, key), host, port, ssl=context,
                                                   server_hostname=host if context else None)
        except ssl.SSLError as exc:
            raise HTTPError(f"TLS handshake failed: {exc.reason or type(exc).__name__}") from None
        except OSError as exc:
            raise HTTPError(f"cannot connect: {exc.strerror or type(exc).__name__}") from None
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            try:
                import certifi

                context = ssl.create_default_context(cafile=certifi.where())
            except ImportError:
                context = ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl = context
        return self._ssl

    def _release(self, conn: _Connection) -> None:
        if conn.reusable and not conn.closed:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(conn.key, []).append(conn)
            self._wake()
        else:
            self._discard(conn)

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._open -= 1
        self._wake()

    def _close_one_idle(self) -> bool:
        for idle in self._idle.values():
            if idle:
                self._discard(idle.pop(0))
                return True
        return False

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        self._open = 0


def decode_body(body: bytes, encodings: list[bytes], max_bytes: int) -> bytes:
    """Undo gzip/deflate Content-Encodings (others pass through, as httpx does), capped."""
    for encoding in reversed(encodings):
        encoding = encoding.strip().lower()
        if encoding in (b"gzip", b"x-gzip", b"deflate"):
            wbits = zlib.MAX_WBITS | 16 if encoding != b"deflate" else (zlib.MAX_WBITS if body[:1] == b"\x78"
                                                                           else -zlib.MAX_WBITS)
            decoder = zlib.decompressobj(wbits)
            try:
                out = decoder.decompress(body, max_bytes + 1)
                out += decoder.flush() if len(out) <= max_bytes else b""
            except zlib.error:
                raise BodyNotDecodable() from None
            if len(out) > max_bytes or decoder.unconsumed_tail:
                raise BodyTooLarge()
            body = out
    return body


def request_head(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The request as bytes; refuses header names or values that could split it."""
    lines = [b"%s: %s" % pair for pair in headers]
    block = b"\r\n".join(lines)
    if block.count(b"\r") != len(lines) - 1 or block.count(b"\n") != len(lines) - 1 \
            or any(b":" in name for name, _ in headers):
        if lines:
            raise HTTPError("a request header contains CR, LF or a colon in its name")
    return b"".join((method, b" ", target or b"/", b" HTTP/1.1\r\n", block, b"\r\n\r\n" if lines else b"\r\n",
                     body))
