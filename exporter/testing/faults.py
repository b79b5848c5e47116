"""Faults a fake provider injects into its answers, built from small pieces.

A `Fault` is a few pieces run in order on one request: `Sleep`, `Answer` (a whole response),
`Head` (200 headers and the start of a body), `Body` (more body bytes, optionally dripped),
`Silence` (say nothing until the client gives up), `Reset` (a TCP reset) and `RawStatus` (the
call's real record, its raw status replaced). A fault that leaves no response lets the fake
answer normally. The functions below build the usual misbehaviours; compose pieces for others:

    fake.inject(faults.status(429, retry_after="2"), times=3)
    fake.inject(faults.slow(0.4, faults.status(401)))
    fake.inject(Fault(Head(b'{"status": "'), Sleep(1), Reset(), name="late-reset"))
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Callable, Protocol

from aiohttp import web

MIB = 1024 * 1024


@dataclass
class Act:
    """One faulty answer in the making: what the pieces have sent so far."""

    request: web.Request
    count_bytes: Callable[[int], None] = lambda n: None
    response: web.StreamResponse | None = None
    raw_status: str | None = None  # set by `RawStatus`: the record is served with this status


class Piece(Protocol):
    async def __call__(self, act: Act) -> None: ...


@dataclass(frozen=True)
class Sleep:
    """Wait before the next piece (e.g. a slow 401, so that many are in flight at once)."""

    seconds: float

    async def __call__(self, act: Act) -> None:
        await asyncio.sleep(self.seconds)


@dataclass(frozen=True)
class Answer:
    """A whole response; `retry_after` may be a callable evaluated per answer (`http_date_in`)."""

    status: int = 500
    body: bytes | None = None
    retry_after: str | Callable[[], str] | None = None

    async def __call__(self, act: Act) -> None:
        retry_after = self.retry_after() if callable(self.retry_after) else self.retry_after
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        body = self.body if self.body is not None else json.dumps({"error": f"injected {self.status}"}).encode()
        act.response = web.Response(status=self.status, body=body, headers=headers, content_type="application/json")


@dataclass(frozen=True)
class Head:
    """200 headers (announcing `content_length` when given) and the first bytes of the body."""

    start: bytes = b""
    content_length: int | None = None

    async def __call__(self, act: Act) -> None:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if self.content_length is not None:
            response.content_length = self.content_length
        await response.prepare(act.request)
        if self.start:
            await response.write(self.start)
        act.response = response


@dataclass(frozen=True)
class Body:
    """`size` more body bytes after `Head`, `chunk` at a time, `every` seconds apart."""

    size: int
    chunk: int = 65536
    every: float = 0.0

    async def __call__(self, act: Act) -> None:
        assert act.response is not None, "Body follows Head"
        data, sent = b" " * self.chunk, 0
        try:
            while sent < self.size:
                await act.response.write(data)
                sent += len(data)
                act.count_bytes(len(data))
                if self.every:
                    await asyncio.sleep(self.every)
        except ConnectionError:  # the client stopped reading: that is the point
            pass


@dataclass(frozen=True)
class Silence:
    """Say nothing until the client closes the connection (or `limit` seconds pass)."""

    limit: float = 30.0

    async def __call__(self, act: Act) -> None:
        deadline = time.monotonic() + self.limit
        while time.monotonic() < deadline:
            transport = act.request.transport
            if transport is None or transport.is_closing():
                return
            await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Reset:
    """Abort the connection with a TCP RST (SO_LINGER 0), as a crashing peer or middlebox does."""

    async def __call__(self, act: Act) -> None:
        transport = act.request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        transport.abort()


@dataclass(frozen=True)
class RawStatus:
    """Serve the call's real record with its raw status replaced (a status the plugin does not know)."""

    value: str

    async def __call__(self, act: Act) -> None:
        act.raw_status = self.value


class Fault:
    """Pieces run in order on one request; `name` is what the fake counts it under."""

    __slots__ = ("pieces", "name")

    def __init__(self, *pieces: Piece, name: str = "fault") -> None:
        self.pieces = pieces
        self.name = name

    def __repr__(self) -> str:
        return f"Fault({', '.join(map(repr, self.pieces))}, name={self.name!r})"

    async def run(self, act: Act) -> Act:
        for piece in self.pieces:
            await piece(act)
        return act


def status(code: int = 500, body: bytes | None = None, retry_after: str | Callable[[], str] | None = None) -> Fault:
    """Answer `code` (with `body`, and `Retry-After` when given)."""
    return Fault(Answer(code, body, retry_after), name=f"status-{code}")


def timeout(delay: float = 30.0) -> Fault:
    """Answer (504) only after `delay` seconds."""
    return Fault(Sleep(delay), Answer(504, b'{"error": "too late"}'), name="timeout")


def hang(limit: float = 30.0) -> Fault:
    """Accept and read the request, never answer (until the client gives up, or `limit`)."""
    return Fault(Silence(limit), Answer(504, b'{"error": "too late"}'), name="hang")


def stall(limit: float = 30.0) -> Fault:
    """200 headers and the start of the body, then nothing more (a read timeout)."""
    return Fault(Head(b'{"id": "', content_length=4096), Silence(limit), name="stall")


def reset() -> Fault:
    """200 headers and part of the body, then a TCP reset."""
    return Fault(Head(b'{"id": "', content_length=4096), Reset(), name="reset")


def malformed(body: bytes | None = None) -> Fault:
    """200 with truncated JSON."""
    return Fault(Answer(200, body or b'{"status": "compl'), name="malformed")


def wrong_shape(body: bytes | None = None) -> Fault:
    """200 with valid JSON of the wrong shape (default: an array)."""
    return Fault(Answer(200, body or b'[{"status": 1}]'), name="wrong_shape")


def huge(size: int = 8 * MIB) -> Fault:
    """200 with a streamed body of `size` bytes."""
    return Fault(Head(), Body(size), name="huge")


def drip(size: int = 8 * MIB, every: float = 30.0) -> Fault:
    """200 with a body of `size` bytes sent one byte every `every` seconds."""
    return Fault(Head(), Body(size, chunk=1, every=every), name="drip")


def unknown_status(value: str = "teleporting") -> Fault:
    """The call's real record, its raw status replaced by `value`."""
    return Fault(RawStatus(value), name="unknown_status")


def slow(seconds: float, fault: Fault) -> Fault:
    """`fault`, answered `seconds` later."""
    return Fault(Sleep(seconds), *fault.pieces, name=fault.name)


def http_date_in(seconds: float) -> Callable[[], str]:
    """A `Retry-After` value computed at response time: the HTTP date `seconds` from then."""
    return lambda: format_datetime(datetime.now(timezone.utc) + timedelta(seconds=seconds), usegmt=True)


__all__ = [
    "Act",
    "Answer",
    "Body",
    "Fault",
    "Head",
    "Piece",
    "RawStatus",
    "Reset",
    "Silence",
    "Sleep",
    "drip",
    "hang",
    "http_date_in",
    "huge",
    "malformed",
    "reset",
    "slow",
    "stall",
    "status",
    "timeout",
    "unknown_status",
    "wrong_shape",
]
