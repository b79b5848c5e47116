"""A real forwarding HTTP proxy on 127.0.0.1 for the tests: CONNECT tunnels (https) and
absolute-form requests (http), optional basic auth, and host names only it can resolve.

Small on purpose (asyncio streams, one upstream per client connection; absolute-form
requests are sent upstream with `Connection: close`), but a real proxy on real sockets: the
client under test speaks the proxy protocol to it, not to a mock. It records every request
head it receives, so tests can check what went through it and that no secret did.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator


@dataclass
class ForwardProxy:
    #: name -> address the proxy connects to instead (the client cannot resolve these names)
    hosts: dict[str, str] = field(default_factory=dict)
    #: (user, password) required as Proxy-Authorization: Basic, else 407
    auth: tuple[str, str] | None = None
    #: every request head received, as bytes (CONNECT and absolute-form alike)
    heads: list[bytes] = field(default_factory=list)
    url: str = ""

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def url_with(self, user: str, password: str) -> str:
        return self.url.replace("http://", f"http://{user}:{password}@")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            self.heads.append(head)
            method, target, headers = _parse(head)
            if self.auth is not None and headers.get("proxy-authorization") != _basic(*self.auth):
                writer.write(b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="t"\r\n'
                             b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            if method == "CONNECT":
                await self._tunnel(target, reader, writer)
            elif target.startswith("http://"):
                await self._forward(method, target, head, reader, writer)
            else:
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            writer.close()

    async def _open(self, authority: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        host, _, port = authority.rpartition(":")
        try:
            return await asyncio.wait_for(asyncio.open_connection(self.hosts.get(host, host), int(port)), 5)
        except (OSError, TimeoutError, ValueError):
            return None

    async def _tunnel(self, authority: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._open(authority)
        if upstream is None:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _pipe_both(reader, writer, *upstream)

    async def _forward(self, method: str, target: str, head: bytes, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        rest = target[len("http://"):]
        authority, _, path = rest.partition("/")
        upstream = await self._open(authority if ":" in authority else authority + ":80")
        if upstream is None:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        up_reader, up_writer = upstream
        lines = head.split(b"\r\n")[1:-2]
        kept = [line for line in lines if not line.lower().startswith((b"proxy-", b"connection:"))]
        length = int(_parse(head)[2].get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
        up_writer.write(b"\r\n".join([f"{method} /{path} HTTP/1.1".encode(), *kept, b"Connection: close", b"", b""])
                        + body)
        await up_writer.drain()
        while chunk := await up_reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        up_writer.close()

    @contextmanager
    def running(self) -> Iterator["ForwardProxy"]:
        """Serve from a background thread (the service under test runs in its own)."""
        loop = asyncio.new_event_loop()
        started = threading.Event()

        async def start() -> asyncio.AbstractServer:
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            return server

        server = loop.run_until_complete(start())
        thread = threading.Thread(target=lambda: (started.set(), loop.run_forever()), daemon=True, name="proxy")
        thread.start()
        started.wait(5)
        try:
            yield self
        finally:
            async def stop() -> None:
                server.close()
                for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                    task.cancel()
            asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


def _parse(head: bytes) -> tuple[str, str, dict[str, str]]:
    first, *lines = head.decode("latin-1").split("\r\n")
    method, target, _ = first.split(" ", 2)
    headers = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _pipe_both(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while chunk := await src.read(65536):
                dst.write(chunk)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
