"""The provider transport (`AiohttpTransport`) against raw loopback servers that send exactly
the bytes each test scripts: body framings, encodings, what goes on the wire, keep-alive reuse,
stale connections, the connection limit and what must be refused. Provider-level faults
(timeouts, resets, huge bodies, error statuses) run against the fakes in `faults/`; TLS and
proxies in test_http_client.py and test_proxy.py."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from typing import Awaitable, Callable

import httpx
import pytest

from outbound_call_exporter import ErrorReason, PollError
from outbound_call_exporter._version import __version__
from outbound_call_exporter.httpclient import HTTPClient
from outbound_call_exporter.transport import AiohttpTransport

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Server:
    """Runs `script(reader, writer, connection_number)` for every connection; records requests."""

    def __init__(self, script: Script, ssl_context: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.ssl = ssl_context
        self.connections = 0
        self.open = 0
        self.max_open = 0

    async def __aenter__(self) -> "Server":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.ssl else 'http'}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.script(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()


def run(coro: Awaitable[object]) -> object:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def get(transport: AiohttpTransport, url: str, **kw: object) -> httpx.Response:
    return await transport.send(httpx.Request("GET", url, **kw))


def serve_forever(*payloads: bytes) -> Script:
    """Answer each request on the connection with the next payload (the last one repeats)."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        i = 0
        while True:
            await read_request(reader)
            writer.write(payloads[min(i, len(payloads) - 1)])
            await writer.drain()
            i += 1
    return script


@pytest.mark.parametrize("payload, body", [
    (answer(b'{"a": 1}'), b'{"a": 1}'),
    (answer(b"", "Transfer-Encoding: chunked") + b"4\r\n{\"a\"\r\n5\r\n: 1}\n\r\n0\r\n\r\n",
     b'{"a": 1}\n'),
    (answer(gzip.compress(b'{"gz": true}'), "Content-Encoding: gzip"), b'{"gz": true}'),
    (answer(zlib.compress(b'{"deflate": 1}'), "Content-Encoding: deflate"), b'{"deflate": 1}'),
    (b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"{}"), b"{}"),
    (answer(b"", status="204 No Content"), b""),
], ids=["content-length", "chunked", "gzip", "deflate", "100-continue", "204"])
def test_body_framings_and_encodings(payload, body):
    async def main():
        async with Server(serve_forever(payload)) as server:
            t = AiohttpTransport(4, 5, 1024)
            for _ in range(3):  # the same kept-alive connection each time
                response = await get(t, server.url + "/x")
                assert response.content == body
                assert "content-encoding" not in response.headers
            await t.aclose()
            assert server.connections == 1
    run(main())


def test_body_delimited_by_the_end_of_the_connection():
    async def script(reader, writer, n):
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"until": "close"}')
        await writer.drain()
        writer.close()

    async def main():
        async with Server(script) as server:
            t = AiohttpTransport(4, 5, 1024)
            for _ in range(2):
                assert (await get(t, server.url + "/x")).json() == {"until": "close"}
            await t.aclose()
            assert server.connections == 2
    run(main())


def test_request_bytes_are_the_plugins_request():
    seen = []

    async def script(reader, writer, n):
        seen.append(await read_request(reader))
        writer.write(answer(b"{}"))
        await writer.drain()

    async def main():
        async with Server(script) as server:
            t = AiohttpTransport(4, 5, 1024)
            await get(t, server.url + "/v1/a%2Fb/c?x=1%202", headers={"Authorization": "Bearer t"})
            await t.aclose()
    run(main())
    lines = seen[0].decode().split("\r\n")
    assert lines[0] == "GET /v1/a%2Fb/c?x=1%202 HTTP/1.1"
    names = sorted(line.split(":", 1)[0].lower() for line in lines[1:] if line)
    assert names == ["authorization", "host", "user-agent"]  # no Accept, Accept-Encoding, Cookie
    assert "Authorization: Bearer t" in lines
    assert f"User-Agent: outbound-call-exporter/{__version__}" in lines
    assert any(line.lower().startswith("host: 127.0.0.1:") for line in lines)


def test_a_post_body_and_no_cookies_kept():
    seen = []

    async def script(reader, writer, n):
        while True:
            head = await read_request(reader)
            length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
            seen.append((head, await reader.readexactly(length)))
            writer.write(answer(b"{}", "Set-Cookie: session=abc; Path=/"))
            await writer.drain()

    async def main():
        async with Server(script) as server:
            t = AiohttpTransport(4, 5, 1024)
            for _ in range(2):
                await t.send(httpx.Request("POST", server.url + "/x", json={"a": 1}))
            await t.aclose()
    run(main())
    assert [body for _, body in seen] == [b'{"a":1}', b'{"a":1}']  # httpx's encoding, byte for byte
    assert b"cookie" not in seen[1][0].lower()
    assert b"content-type: application/json" in seen[0][0].lower()


def test_redirects_are_answers_unless_follow_redirects():
    async def script(reader, writer, n):
        while True:
            head = await read_request(reader)
            if head.startswith(b"GET /old"):
                writer.write(answer(b"", "Location: /new", status="302 Found"))
            else:
                writer.write(answer(b'{"moved": true}'))
            await writer.drain()

    async def main():
        async with Server(script) as server:
            plain = AiohttpTransport(4, 5, 1024)
            following = AiohttpTransport(4, 5, 1024, HTTPClient(follow_redirects=True))
            try:
                return (await get(plain, server.url + "/old")).status_code, \
                    (await get(following, server.url + "/old")).json()
            finally:
                await plain.aclose()
                await following.aclose()
    assert run(main()) == (302, {"moved": True})


@pytest.mark.parametrize("method, retried", [("GET", True), ("POST", False)])
def test_a_reused_connection_closed_before_answering_is_retried_once_if_idempotent(method, retried):
    async def script(reader, writer, n):  # answers once per connection, then closes on the next request
        await read_request(reader)
        writer.write(answer(b'{"n": %d}' % n))
        await writer.drain()
        await read_request(reader)

    async def main():
        async with Server(script) as server:
            t = AiohttpTransport(4, 5, 1024)
            assert (await t.send(httpx.Request(method, server.url + "/x"))).json() == {"n": 1}
            try:
                return (await t.send(httpx.Request(method, server.url + "/x"))).json()
            except PollError as exc:
                return exc.reason
            finally:
                await t.aclose()
    assert run(main()) == ({"n": 2} if retried else ErrorReason.CONNECTION_ERROR)


def test_idle_connections_closed_by_the_server_are_not_reused():
    async def script(reader, writer, n):
        await read_request(reader)
        writer.write(answer(b'{"n": %d}' % n))
        await writer.drain()

    async def main():
        async with Server(script) as server:
            t = AiohttpTransport(4, 5, 1024)
            assert (await get(t, server.url + "/x")).json() == {"n": 1}
            await asyncio.sleep(0.1)  # the server has closed the idle connection
            assert (await get(t, server.url + "/x")).json() == {"n": 2}
            await t.aclose()
    run(main())


def test_connections_never_exceed_the_limit():
    async def script(reader, writer, n):
        while True:
            await read_request(reader)
            await asyncio.sleep(0.02)
            writer.write(answer(b"{}"))
            await writer.drain()

    async def main():
        async with Server(script) as server:
            t = AiohttpTransport(3, 5, 1024)
            responses = await asyncio.gather(*(get(t, server.url + f"/{i}") for i in range(30)))
            assert all(r.status_code == 200 for r in responses)
            await t.aclose()
            assert server.max_open <= 3
            assert server.connections == 3
    run(main())


@pytest.mark.parametrize("payload, reason", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b" " * 5000, ErrorReason.INVALID_RESPONSE),
    (answer(b"", "Transfer-Encoding: chunked") + b"1000\r\n" + b" " * 4096 + b"\r\n0\r\n\r\n",
     ErrorReason.INVALID_RESPONSE),
    (answer(gzip.compress(b" " * 100_000), "Content-Encoding: gzip"), ErrorReason.INVALID_RESPONSE),
    (answer(b"not gzip", "Content-Encoding: gzip"), ErrorReason.INVALID_RESPONSE),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", ErrorReason.CONNECTION_ERROR),
    (b"SMTP ready\r\n\r\n", ErrorReason.CONNECTION_ERROR),
    (b"", ErrorReason.CONNECTION_ERROR),
], ids=["over-cap-length", "over-cap-chunked", "gzip-bomb", "bad-gzip", "truncated", "not-http", "closed"])
def test_bad_answers_are_poll_errors(payload, reason):
    async def script(reader, writer, n):
        await read_request(reader)
        writer.write(payload)
        await writer.drain()

    async def main():
        async with Server(script) as server:
            t = AiohttpTransport(4, 5, 1024)
            with pytest.raises(PollError) as err:
                await get(t, server.url + "/secret-free-path")
            await t.aclose()
            return err.value
    error = run(main())
    assert error.reason is reason
    assert str(error).startswith("/secret-free-path: ")
    if reason is ErrorReason.CONNECTION_ERROR:
        assert "127.0.0.1:" in str(error)  # names the provider host


def test_deadline_covers_the_whole_exchange():
    async def script(reader, writer, n):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.05)

    async def main():
        async with Server(script) as server:
            t = AiohttpTransport(4, 0.5, 1024)
            with pytest.raises(PollError) as err:
                await get(t, server.url + "/x")
            await t.aclose()
            return err.value
    assert run(main()).reason is ErrorReason.TIMEOUT


def test_connection_refused_and_header_injection_are_connection_errors():
    async def main():
        t = AiohttpTransport(4, 5, 1024)
        with pytest.raises(PollError) as refused:
            await get(t, "http://127.0.0.1:9/x")
        with pytest.raises(PollError) as injected:
            await get(t, "http://127.0.0.1:9/x", headers={"X-Token": "a\r\nX-Evil: 1"})
        await t.aclose()
        return refused.value, injected.value
    try:
        refused, injected = run(main())
    except httpx.LocalProtocolError:  # httpx itself refused to build the header: fine too
        return
    assert refused.reason is injected.reason is ErrorReason.CONNECTION_ERROR
    assert "X-Evil" not in str(injected)


def test_deadline_leaves_the_task_usable_and_outside_cancellation_alone():
    """The deadline cancels only its own request: the same task goes on afterwards, and a
    cancellation from outside (shutdown) stays a cancellation, not a timeout."""
    async def script(reader, writer, n):
        await read_request(reader)
        await asyncio.sleep(5)

    async def main():
        async with Server(script) as server:
            t = AiohttpTransport(4, 0.3, 1024)
            started = asyncio.get_running_loop().time()
            with pytest.raises(PollError) as err:
                await get(t, server.url + "/slow")
            took = asyncio.get_running_loop().time() - started
            await asyncio.sleep(0.05)  # no cancellation left pending on this task
            outside = asyncio.create_task(get(t, server.url + "/slow"))
            await asyncio.sleep(0.1)
            outside.cancel()
            with pytest.raises(asyncio.CancelledError):
                await outside
            await t.aclose()
            return err.value, took
    error, took = run(main())
    assert error.reason is ErrorReason.TIMEOUT
    assert 0.3 <= took < 0.3 + 0.2, took  # at most a tick (a tenth of the deadline) late, plus slack
