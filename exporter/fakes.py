"""Fake provider servers: the shared machinery behind every plugin's fake.

A plugin's fake subclasses `FakeProvider` and only says what is provider-specific: its routes,
how it authenticates, its raw status names and how a call record looks. This module supplies
the rest: scripted lifecycles on a (speed-scaled) clock, retention expiry (404 after it),
fault injection, request counting, and a real aiohttp server on 127.0.0.1 — in the caller's
event loop (`demo`) or in a background thread (tests).
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import socket
import struct
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any, Callable, ClassVar, Iterator, Mapping

from aiohttp import web

from .model import State

#: the outcomes a demo or test lifecycle can end in: a normal outbound campaign, where most calls
#: are not answered (docs/design.md, "What counts as failure"): 40 % answered, 45 % no answer, 10 % busy,
#: 5 % failed (cancelled calls, someone's choice, count nowhere)
DEFAULT_MIX: Mapping[State, float] = {
    State.COMPLETED: 0.39, State.NO_ANSWER: 0.44, State.BUSY: 0.10, State.FAILED: 0.05, State.CANCELLED: 0.02,
}
#: about 35 % technical failures: the critical OutboundCallTechnicalFailuresHigh alert fires in the demo
SPIKE_MIX: Mapping[State, float] = {
    State.COMPLETED: 0.26, State.NO_ANSWER: 0.30, State.BUSY: 0.07, State.FAILED: 0.35, State.CANCELLED: 0.02,
}
#: the answer rate collapses (caller id flagged as spam, a blocked trunk); calls keep finishing
ANSWER_DROP_MIX: Mapping[State, float] = {
    State.COMPLETED: 0.04, State.NO_ANSWER: 0.77, State.BUSY: 0.12, State.FAILED: 0.05, State.CANCELLED: 0.02,
}


def reportable_mix(mix: Mapping[State, float], raw_status: Mapping[State, str]) -> dict[State, float]:
    """`mix` restricted to the outcomes a provider can report, its failure share kept.

    An API that only says success or failure (PolyAI agents, platform) cannot show a busy or
    unanswered call: the demo counts those shares as answered rather than inflating `failed`.
    """
    out = {s: w for s, w in mix.items() if s in raw_status}
    if State.COMPLETED in out:
        out[State.COMPLETED] += sum(w for s, w in mix.items() if s not in raw_status)
    return out


@dataclass
class Step:
    """The call shows raw status `status` from `after` seconds (fake time) past creation."""

    status: str
    after: float


@dataclass
class FakeCall:
    call_id: str
    params: dict[str, str]
    steps: list[Step]
    fields: dict[str, Any] = field(default_factory=dict)  # extra record fields (error, sip code, ...)
    created: float = field(default_factory=time.time)
    outcome: State | None = None
    callback_url: str | None = None  # the fake POSTs its result webhook here once it ends
    callback_headers: dict[str, str] = field(default_factory=dict)
    webhook_sent: bool = False

    def elapsed(self, now: float, speed: float) -> float:
        return (now - self.created) * speed

    def step_index(self, now: float, speed: float) -> int:
        t = self.elapsed(now, speed)
        index = 0
        for i, step in enumerate(self.steps):
            if step.after <= t:
                index = i
        return index

    def ended_at(self, speed: float) -> float:
        """Wall time at which the last step (the terminal one) began."""
        return self.created + self.steps[-1].after / speed


@dataclass
class Fault:
    """One injected misbehaviour of the status endpoint.

    Kinds:
      - `status`: answer `status` (with `body`, and `Retry-After: retry_after` when given; a
        callable `retry_after` is evaluated per response, e.g. `http_date_in(3)`)
      - `timeout`: answer (504) only after `delay` seconds
      - `hang`: accept and read the request, never answer (until the client gives up, or `delay`)
      - `stall`: send 200 headers and the start of the body, then nothing more (a read timeout)
      - `malformed`: 200 with truncated JSON
      - `wrong_shape`: 200 with valid JSON of the wrong shape (`body`, default an array)
      - `unknown_status`: the call's real record, its status field replaced by `value`
      - `reset`: 200 headers and part of the body, then a TCP reset (RST)
      - `huge`: 200 with a streamed body of `size` bytes
      - `drip`: 200 with a body of `size` bytes sent one byte every `delay` seconds

    `latency` delays any kind's answer (e.g. slow 401s, so that many are in flight at once).
    """

    kind: str = "status"
    status: int = 500
    retry_after: str | Callable[[], str] | None = None
    delay: float = 30.0
    size: int = 8 * 1024 * 1024
    body: bytes | None = None
    value: str = "teleporting"
    latency: float = 0.0


def http_date_in(seconds: float) -> Callable[[], str]:
    """A `Retry-After` value computed at response time: the HTTP date `seconds` from then."""
    return lambda: format_datetime(datetime.now(timezone.utc) + timedelta(seconds=seconds), usegmt=True)


class FakeProvider:
    """Base of every fake provider API server."""

    provider: ClassVar[str]
    #: normalized outcome/phase -> the raw status the provider uses for it
    raw_status: ClassVar[Mapping[State, str]]
    #: statuses shown before dialing (e.g. Telzino's dispatching/dispatched)
    pre_dial: ClassVar[tuple[str, ...]] = ()
    #: the record field holding the raw status (what an `unknown_status` fault replaces)
    status_field: ClassVar[str] = "status"

    def __init__(self, *, speed: float = 1.0, retention_seconds: float = 7200.0,
                 credentials: Mapping[str, str] | None = None, seed: int | None = None) -> None:
        self.speed = speed
        self.retention_seconds = retention_seconds
        self.credentials = dict(credentials or self.default_credentials())
        self.rng = random.Random(seed)
        self.calls: dict[tuple[str, ...], FakeCall] = {}
        #: "status", "status:<call id>", "fault", "fault:<kind>" -> count of requests
        self.requests: collections.Counter[str] = collections.Counter()
        #: (wall time answered, path, HTTP status) of every status request answered
        self.log: collections.deque[tuple[float, str, int]] = collections.deque(maxlen=100_000)
        #: (wall time received, call id) of every status request, answered or not
        self.arrivals: collections.deque[tuple[float, str]] = collections.deque(maxlen=100_000)
        #: body bytes written by `huge` and `drip` faults (how much a client let through)
        self.fault_bytes_sent = 0
        self._faults: collections.deque[list[Any]] = collections.deque()
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.url = ""
        self.port = 0

    # -- provider-specific: subclasses override -------------------------------------------------

    def default_credentials(self) -> dict[str, str]:
        raise NotImplementedError

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def authorized(self, request: web.Request) -> bool:
        raise NotImplementedError

    def key(self, call_id: str, params: Mapping[str, str]) -> tuple[str, ...]:
        """How the fake indexes a call (the path parameters that identify it)."""
        return (call_id,)

    def new_params(self) -> dict[str, str]:
        """Per-call params for a generated call (e.g. an agent id)."""
        return {}

    def render(self, call: FakeCall, index: int, now: float) -> dict[str, Any]:
        raise NotImplementedError

    def not_found(self) -> web.Response:
        return web.json_response({"error": "Not found"}, status=404)

    def unauthorized(self) -> web.Response:
        return web.json_response({"error": "Unauthorized"}, status=401)

    def terminal_fields(self, outcome: State) -> dict[str, Any]:
        """Extra record fields a call ending in `outcome` carries (error text, SIP code, ...)."""
        return {}

    def demo_settings(self) -> dict[str, Any]:
        """Account `settings` that work against this fake (credentials and defaults)."""
        return dict(self.credentials)

    # -- calls and lifecycles ---------------------------------------------------------------------

    def add_call(self, call_id: str | None = None, steps: list[Step] | None = None,
                 params: Mapping[str, str] | None = None, outcome: State = State.COMPLETED,
                 **fields: Any) -> FakeCall:
        """Create a call; by default it walks a lifecycle ending in `outcome`."""
        params = dict(params if params is not None else self.new_params())
        call = FakeCall(call_id or str(uuid.uuid4()), params, steps or self.lifecycle(outcome),
                        {**self.terminal_fields(outcome), **fields}, outcome=outcome)
        with self._lock:
            self.calls[self.key(call.call_id, params)] = call
        return call

    def lifecycle(self, outcome: State, rng: random.Random | None = None) -> list[Step]:
        """A plausible raw-status script ending in `outcome` (times in fake seconds)."""
        rng = rng or self.rng
        raw = self.raw_status
        steps = [Step(raw[State.QUEUED], 0.0)]
        t = 0.0
        for status in self.pre_dial:
            t += rng.uniform(0.2, 1.0)
            steps.append(Step(status, t))
        if outcome is State.CANCELLED:
            return steps + [Step(raw[State.CANCELLED], t + rng.uniform(0.5, 2))]
        if State.DIALING in raw:
            t += rng.uniform(0.5, 2)
            steps.append(Step(raw[State.DIALING], t))
        if outcome is State.COMPLETED:
            t += rng.uniform(3, 10)
            steps.append(Step(raw[State.IN_PROGRESS], t))
            return steps + [Step(raw[State.COMPLETED], t + rng.uniform(8, 40))]
        ring = {State.NO_ANSWER: (20, 45), State.BUSY: (1, 5), State.FAILED: (0.5, 4)}.get(outcome, (1, 5))
        return steps + [Step(raw[outcome], t + rng.uniform(*ring))]

    def demo_call(self, mix: Mapping[State, float] = DEFAULT_MIX) -> FakeCall:
        """A new call whose outcome is drawn from `mix` (only outcomes this provider can show)."""
        weights = reportable_mix(mix, self.raw_status)
        outcome = self.rng.choices(list(weights), list(weights.values()))[0]
        return self.add_call(outcome=outcome)

    def inject(self, fault: Fault, times: int | None = 1) -> None:
        """Answer the next `times` status requests (None: all, until `clear_faults`) with `fault`."""
        with self._lock:
            self._faults.append([fault, times])

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self) -> Fault | None:
        with self._lock:
            if not self._faults:
                return None
            entry = self._faults[0]
            if entry[1] is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    self._faults.popleft()
            return entry[0]

    # -- the generic status handler subclasses route to ----------------------------------------------

    async def serve_status(self, request: web.Request, call_id: str, params: Mapping[str, str]) -> web.StreamResponse:
        """Faults first, then auth, then the call's current record (404 when unknown or expired)."""
        self.requests["status"] += 1
        self.requests[f"status:{call_id}"] += 1
        self.arrivals.append((time.time(), call_id))
        response = await self._respond(request, call_id, params)
        self.log.append((time.time(), request.path, response.status))
        return response

    async def _respond(self, request: web.Request, call_id: str, params: Mapping[str, str]) -> web.StreamResponse:
        fault = self._take_fault()
        if fault is not None:
            self.requests["fault"] += 1
            self.requests[f"fault:{fault.kind}"] += 1
            if fault.kind != "unknown_status":
                return await self._apply_fault(request, fault)
        if not self.authorized(request):
            return self.unauthorized()
        call = self.calls.get(self.key(call_id, params))
        now = time.time()
        if call is None or self._expired(call, now):
            return self.not_found()
        record = self.render(call, call.step_index(now, self.speed), now)
        if fault is not None:
            record[self.status_field] = fault.value
        return web.json_response(record)

    def _expired(self, call: FakeCall, now: float) -> bool:
        last = call.steps[-1]
        return call.elapsed(now, self.speed) >= last.after and \
            now - call.ended_at(self.speed) > self.retention_seconds / self.speed

    async def _apply_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.latency:
            await asyncio.sleep(fault.latency)
        if fault.kind == "status":
            retry_after = fault.retry_after() if callable(fault.retry_after) else fault.retry_after
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            body = fault.body if fault.body is not None else json.dumps({"error": f"injected {fault.status}"}).encode()
            return web.Response(status=fault.status, body=body, headers=headers, content_type="application/json")
        if fault.kind == "timeout":
            await asyncio.sleep(fault.delay)
            return web.json_response({"error": "too late"}, status=504)
        if fault.kind == "hang":
            await self._until_client_leaves(request, fault.delay)
            return web.json_response({"error": "too late"}, status=504)
        if fault.kind == "malformed":
            return web.Response(body=fault.body or b'{"status": "compl', content_type="application/json")
        if fault.kind == "wrong_shape":
            return web.Response(body=fault.body or b'[{"status": 1}]', content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if fault.kind in ("reset", "stall"):
            response.content_length = 4096
            await response.prepare(request)
            await response.write(b'{"id": "')
            if fault.kind == "stall":
                await self._until_client_leaves(request, fault.delay)
            else:
                _reset(request)
            return response
        if fault.kind in ("huge", "drip"):
            await response.prepare(request)
            chunk = b" " * 65536 if fault.kind == "huge" else b" "
            sent = 0
            try:
                while sent < fault.size:
                    await response.write(chunk)
                    sent += len(chunk)
                    self.fault_bytes_sent += len(chunk)
                    if fault.kind == "drip":
                        await asyncio.sleep(fault.delay)
            except ConnectionError:  # the client stopped reading: that is the point
                pass
            return response
        raise ValueError(f"unknown fault kind {fault.kind!r}")

    @staticmethod
    async def _until_client_leaves(request: web.Request, limit: float) -> None:
        """Say nothing until the client closes the connection (or `limit` seconds pass)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            await asyncio.sleep(0.05)

    # -- serving ------------------------------------------------------------------------------------

    # -- list endpoints, batch progress and result webhooks (discovery) ---------------------

    def matching(self, scope: Mapping[str, str], status: str | None, now: float) -> list[FakeCall]:
        """Known, unexpired calls whose params match `scope` (and show `status`), newest first."""
        calls = [c for c in list(self.calls.values())
                 if all(c.params.get(k) == v for k, v in scope.items()) and not self._expired(c, now)]
        if status is not None:
            calls = [c for c in calls if c.steps[c.step_index(now, self.speed)].status == status]
        return sorted(calls, key=lambda c: c.created, reverse=True)

    async def gate(self, request: web.Request, kind: str) -> web.StreamResponse | None:
        """Count and log a request of `kind`; answer it here if a fault is due or auth fails."""
        self.requests[kind] += 1
        self.log.append((time.time(), request.path, 0))
        fault = self._take_fault()
        if fault is not None:
            return await self._apply_fault(request, fault)
        return None if self.authorized(request) else self.unauthorized()

    async def serve_list(self, request: web.Request, scope: Mapping[str, str], status: str | None,
                         page: int, limit: int) -> web.StreamResponse:
        """Faults first, then auth, then page `page` of the matching calls via `render_list`."""
        refused = await self.gate(request, "list")
        if refused is not None:
            return refused
        now = time.time()
        calls = self.matching(scope, status, now)
        chunk = calls[(page - 1) * limit: page * limit]
        items = [self.render(c, c.step_index(now, self.speed), now) for c in chunk]
        return web.json_response(self.render_list(items, pagination(page, limit, len(calls)), calls, now))

    def render_list(self, items: list[dict[str, Any]], paging: dict[str, Any], calls: list[FakeCall],
                    now: float) -> dict[str, Any]:
        """A list response's body (subclasses with a list endpoint)."""
        raise NotImplementedError

    def webhook_body(self, call: FakeCall, now: float) -> dict[str, Any] | None:
        """The result webhook a finished call sends to its `callback_url` (None: no webhooks)."""
        return None

    async def _webhook_loop(self) -> None:
        """POST each finished call's result webhook once, as the provider would."""
        import aiohttp

        async with aiohttp.ClientSession() as session:
            while True:
                now = time.time()
                for call in list(self.calls.values()):
                    if call.callback_url is None or call.webhook_sent or \
                            call.step_index(now, self.speed) < len(call.steps) - 1:
                        continue
                    call.webhook_sent = True
                    body = self.webhook_body(call, now)
                    if body is None:
                        continue
                    try:
                        async with session.post(call.callback_url, json=body, headers=call.callback_headers) as r:
                            self.requests[f"webhook:{r.status}"] += 1
                    except aiohttp.ClientError:
                        self.requests["webhook:failed"] += 1
                await asyncio.sleep(0.05)

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(self.routes())
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.port = sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self._webhooks = asyncio.create_task(self._webhook_loop(), name=f"fake-{self.provider}-webhooks")
        return self.url

    async def stop(self) -> None:
        if getattr(self, "_webhooks", None) is not None:
            self._webhooks.cancel()
            await asyncio.gather(self._webhooks, return_exceptions=True)
            self._webhooks = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _shutdown(self) -> None:
        """Stop serving and cancel handlers still running (e.g. an injected hang)."""
        await self.stop()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    @contextmanager
    def running(self, port: int = 0) -> Iterator["FakeProvider"]:
        """Serve on 127.0.0.1 from a background thread (for tests driving a separate service).

        `port` 0 picks a free one; give a fixed port to have the service configured (and
        refused) before the fake first comes up, see `up`.
        """
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start(port=port))
            except BaseException as exc:  # surfaced below
                failed.append(exc)
            started.set()
            if not failed:
                loop.run_forever()

        thread = threading.Thread(target=serve, name=f"fake-{self.provider}", daemon=True)
        thread.start()
        if not started.wait(10) or failed:
            raise RuntimeError(f"fake provider did not start: {failed[:1]}")
        self._loop = loop
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
            self._loop = None

    def down(self) -> None:
        """Go away completely (from `running`): stop listening and drop every open connection,
        so clients get connection refused until `up`."""
        self._in_loop(self.stop())

    def up(self) -> None:
        """Listen again on the same port after `down`."""
        if self._runner is None:
            self._in_loop(self.start(port=self.port))

    @property
    def is_up(self) -> bool:
        return self._runner is not None

    def _in_loop(self, coro: Any) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("down()/up() need the fake to be `running()`")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)


def pagination(page: int, limit: int, total: int) -> dict[str, Any]:
    """The `pagination` object both Telzino's and Trillet's list endpoints return."""
    pages = max(1, -(-total // limit))
    return {"page": page, "limit": limit, "total": total, "totalPages": pages,
            "hasNext": page < pages, "hasPrev": page > 1}


def _reset(request: web.Request) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0), as a crashing peer or middlebox does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()
