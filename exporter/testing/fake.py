"""`FakeProvider`: the shared machinery behind every plugin's fake provider API.

A plugin's fake subclasses it and only says what is provider-specific: its routes, how it
authenticates, its raw status names and how a call record looks. The base supplies the rest:
scripted lifecycles on a (speed-scaled) clock, retention expiry (404 after it), injected
faults (`faults.py`), request counting, list endpoints, result webhooks and a real server on
127.0.0.1 (`server.py`).
"""

from __future__ import annotations

import asyncio
import collections
import random
import threading
import time
import uuid
from typing import Any, ClassVar, Coroutine, Mapping

import aiohttp
from aiohttp import web

from ..model import State
from .calls import DEFAULT_MIX, FakeCall, Step, pagination, reportable_mix
from .faults import Act, Fault
from .server import FakeServer


class FakeProvider(FakeServer):
    """Base of every fake provider API server."""

    provider: ClassVar[str]
    #: normalized outcome/phase -> the raw status the provider uses for it
    raw_status: ClassVar[Mapping[State, str]]
    #: statuses shown before dialing (e.g. Telzino's dispatching/dispatched)
    pre_dial: ClassVar[tuple[str, ...]] = ()
    #: the record field holding the raw status (what a `RawStatus` fault replaces)
    status_field: ClassVar[str] = "status"

    def __init__(
        self,
        *,
        speed: float = 1.0,
        retention_seconds: float = 7200.0,
        credentials: Mapping[str, str] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.speed = speed
        self.retention_seconds = retention_seconds
        self.credentials = dict(credentials or self.default_credentials())
        self.rng = random.Random(seed)
        self.calls: dict[tuple[str, ...], FakeCall] = {}
        #: "status", "status:<call id>", "fault", "fault:<name>", "list", ... -> count of requests
        self.requests: collections.Counter[str] = collections.Counter()
        #: (wall time answered, path, HTTP status) of every status request answered
        self.log: collections.deque[tuple[float, str, int]] = collections.deque(maxlen=100_000)
        #: (wall time received, call id) of every status request, answered or not
        self.arrivals: collections.deque[tuple[float, str]] = collections.deque(maxlen=100_000)
        #: body bytes written by faults that stream a body (how much a client let through)
        self.fault_bytes_sent = 0
        self._faults: collections.deque[list[Any]] = collections.deque()
        self._lock = threading.Lock()

    # -- provider-specific: subclasses override -------------------------------------------------

    def default_credentials(self) -> dict[str, str]:
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

    def render_list(
        self, items: list[dict[str, Any]], paging: dict[str, Any], calls: list[FakeCall], now: float
    ) -> dict[str, Any]:
        """A list response's body (subclasses with a list endpoint)."""
        raise NotImplementedError

    def webhook_body(self, call: FakeCall, now: float) -> dict[str, Any] | None:
        """The result webhook a finished call sends to its `callback_url` (None: no webhooks)."""
        return None

    # -- calls and lifecycles ---------------------------------------------------------------------

    def add_call(
        self,
        call_id: str | None = None,
        steps: list[Step] | None = None,
        params: Mapping[str, str] | None = None,
        outcome: State = State.COMPLETED,
        **fields: Any,
    ) -> FakeCall:
        """Create a call; by default it walks a lifecycle ending in `outcome`."""
        params = dict(params if params is not None else self.new_params())
        call = FakeCall(
            call_id or str(uuid.uuid4()),
            params,
            steps or self.lifecycle(outcome),
            {**self.terminal_fields(outcome), **fields},
            outcome=outcome,
        )
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

    def matching(self, scope: Mapping[str, str], status: str | None, now: float) -> list[FakeCall]:
        """Known, unexpired calls whose params match `scope` (and show `status`), newest first."""
        calls = [
            c
            for c in list(self.calls.values())
            if all(c.params.get(k) == v for k, v in scope.items()) and not self._expired(c, now)
        ]
        if status is not None:
            calls = [c for c in calls if c.steps[c.step_index(now, self.speed)].status == status]
        return sorted(calls, key=lambda c: c.created, reverse=True)

    def _expired(self, call: FakeCall, now: float) -> bool:
        last = call.steps[-1]
        return (
            call.elapsed(now, self.speed) >= last.after
            and now - call.ended_at(self.speed) > self.retention_seconds / self.speed
        )

    # -- faults ------------------------------------------------------------------------------------

    def inject(self, fault: Fault, times: int | None = 1) -> None:
        """Answer the next `times` requests (None: all, until `clear_faults`) with `fault`."""
        with self._lock:
            self._faults.append([fault, times])

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    async def _fault(self, request: web.Request) -> Act | None:
        """Run the next due fault on `request` (None when none is due)."""
        with self._lock:
            if not self._faults:
                return None
            entry = self._faults[0]
            if entry[1] is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    self._faults.popleft()
        fault: Fault = entry[0]
        self.requests["fault"] += 1
        self.requests[f"fault:{fault.name}"] += 1
        return await fault.run(Act(request, self._count_fault_bytes))

    def _count_fault_bytes(self, n: int) -> None:
        self.fault_bytes_sent += n

    # -- the generic handlers subclasses route to ------------------------------------------------

    async def serve_status(self, request: web.Request, call_id: str, params: Mapping[str, str]) -> web.StreamResponse:
        """Faults first, then auth, then the call's current record (404 when unknown or expired)."""
        self.requests["status"] += 1
        self.requests[f"status:{call_id}"] += 1
        self.arrivals.append((time.time(), call_id))
        response = await self._respond(request, call_id, params)
        self.log.append((time.time(), request.path, response.status))
        return response

    async def _respond(self, request: web.Request, call_id: str, params: Mapping[str, str]) -> web.StreamResponse:
        act = await self._fault(request)
        if act is not None and act.response is not None:
            return act.response
        if not self.authorized(request):
            return self.unauthorized()
        call = self.calls.get(self.key(call_id, params))
        now = time.time()
        if call is None or self._expired(call, now):
            return self.not_found()
        record = self.render(call, call.step_index(now, self.speed), now)
        if act is not None and act.raw_status is not None:
            record[self.status_field] = act.raw_status
        return web.json_response(record)

    async def gate(self, request: web.Request, kind: str) -> web.StreamResponse | None:
        """Count and log a request of `kind`; answer it here if a fault answers or auth fails."""
        self.requests[kind] += 1
        self.log.append((time.time(), request.path, 0))
        act = await self._fault(request)
        if act is not None and act.response is not None:
            return act.response
        return None if self.authorized(request) else self.unauthorized()

    async def serve_list(
        self, request: web.Request, scope: Mapping[str, str], status: str | None, page: int, limit: int
    ) -> web.StreamResponse:
        """Faults first, then auth, then page `page` of the matching calls via `render_list`."""
        refused = await self.gate(request, "list")
        if refused is not None:
            return refused
        now = time.time()
        calls = self.matching(scope, status, now)
        chunk = calls[(page - 1) * limit : page * limit]
        items = [self.render(c, c.step_index(now, self.speed), now) for c in chunk]
        return web.json_response(self.render_list(items, pagination(page, limit, len(calls)), calls, now))

    # -- result webhooks ---------------------------------------------------------------------------

    def background(self) -> list[Coroutine[Any, Any, None]]:
        return [self._webhook_loop()]

    async def _webhook_loop(self) -> None:
        """POST each finished call's result webhook once, as the provider would."""
        async with aiohttp.ClientSession() as session:
            while True:
                now = time.time()
                for call in list(self.calls.values()):
                    if (
                        call.callback_url is None
                        or call.webhook_sent
                        or call.step_index(now, self.speed) < len(call.steps) - 1
                    ):
                        continue
                    call.webhook_sent = True
                    body = self.webhook_body(call, now)
                    if body is not None:
                        await self._post_webhook(session, call.callback_url, body, call.callback_headers)
                await asyncio.sleep(0.05)

    async def _post_webhook(
        self, session: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: Mapping[str, str]
    ) -> None:
        try:
            async with session.post(url, json=body, headers=headers) as r:
                self.requests[f"webhook:{r.status}"] += 1
        except aiohttp.ClientError:
            self.requests["webhook:failed"] += 1
