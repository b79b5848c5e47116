"""A fake Retell API, faithful to Retell's API reference and SDK (docs/providers/reference/retell.md).

`GET /v2/get-call/{call_id}` and `POST /v3/list-calls` with `Authorization: Bearer <key>`;
`call_status` registered → ongoing → ended, or registered → not_connected with a
`disconnection_reason`; epoch-millisecond `start_timestamp` / `end_timestamp`, `duration_ms`;
errors as `{"status": "error", "message": ...}` (401, 404 for an unknown or expired call). A
finished call POSTs a `call_ended` webhook signed with `x-retell-signature`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from aiohttp import web

from outbound_call_exporter import State
from outbound_call_exporter.testing import FakeCall, FakeProvider

from .signature import sign

#: disconnection_reason of a call ending in each outcome
REASONS = {
    State.COMPLETED: "user_hangup",
    State.BUSY: "dial_busy",
    State.NO_ANSWER: "dial_no_answer",
    State.FAILED: "dial_failed",
}
#: the `call_status` values the list filter accepts (`registered` is not one)
LIST_STATUSES = ("not_connected", "ongoing", "ended", "error")


def _ms(ts: float) -> int:
    return int(ts * 1000)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"status": "error", "message": message}, status=status)


class RetellFake(FakeProvider):
    provider = "retell"
    status_field = "call_status"
    raw_status = {
        State.QUEUED: "registered",
        State.IN_PROGRESS: "ongoing",
        State.COMPLETED: "ended",
        State.BUSY: "not_connected",
        State.NO_ANSWER: "not_connected",
        State.FAILED: "not_connected",
    }
    agent_id = "oBeDLoLOeuAbiuaMFXRtDOLriTJ5tSxD"

    def default_credentials(self) -> dict[str, str]:
        return {"api_key": "key_fake_retell_0123456789abcdef"}

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v2/get-call/{call_id}", self._status), web.post("/v3/list-calls", self._list)]

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.credentials['api_key']}"

    def unauthorized(self) -> web.Response:
        return _error(401, "Invalid API Key")

    def not_found(self) -> web.Response:
        return _error(404, "Call not found")

    def new_params(self) -> dict[str, str]:
        return {"agent_id": self.agent_id}

    def add_call(self, call_id: str | None = None, *args: Any, **kwargs: Any) -> FakeCall:
        """As the base, with Retell-looking call ids by default."""
        return super().add_call(call_id or f"call_{uuid.uuid4().hex[:28]}", *args, **kwargs)

    def terminal_fields(self, outcome: State) -> dict[str, Any]:
        return {"disconnection_reason": REASONS[outcome]} if outcome in REASONS else {}

    async def _status(self, request: web.Request) -> web.StreamResponse:
        return await self.serve_status(request, request.match_info["call_id"], {})

    async def _list(self, request: web.Request) -> web.StreamResponse:
        """`filter_criteria.agent[].agent_id` and `.call_status`, `sort_order`, `limit`, `skip`."""
        refused = await self.gate(request, "list")
        if refused is not None:
            return refused
        try:
            body = await request.json()
            criteria = body.get("filter_criteria") or {}
            agents = {a["agent_id"] for a in criteria.get("agent", [])}
            wanted = criteria.get("call_status")
            statuses = set(wanted["value"]) if wanted else None  # no filter: every call, registered too
            limit, skip = int(body.get("limit", 50)), int(body.get("skip", 0))
            key = body.get("pagination_key")
        except (ValueError, TypeError, KeyError, AttributeError):
            return _error(400, "Invalid request body")
        if (statuses is not None and not statuses <= set(LIST_STATUSES)) or not 1 <= limit <= 1000 or skip < 0:
            return _error(400, "Invalid filter_criteria, limit or skip")
        now = time.time()
        calls = [
            c
            for c in self.matching({}, None, now)
            if (not agents or c.params.get("agent_id") in agents)
            and (statuses is None or c.steps[c.step_index(now, self.speed)].status in statuses)
        ]
        if body.get("sort_order") == "ascending":
            calls.reverse()
        if key is not None:  # the opaque cursor: here, the last call id of the previous page
            ids = [c.call_id for c in calls]
            if key not in ids:
                return _error(400, "Invalid pagination_key")
            skip += ids.index(key) + 1
        chunk = calls[skip : skip + limit]
        more = skip + limit < len(calls)
        return web.json_response(
            {
                "items": [self.render(c, c.step_index(now, self.speed), now) for c in chunk],
                "has_more": more,
                "pagination_key": chunk[-1].call_id if more else None,
            }
        )

    def webhook_body(self, call: FakeCall, now: float) -> dict[str, Any]:
        """`call_ended`, signed as Retell signs it (the session serializes with `json.dumps`)."""
        body = {"event": "call_ended", "call": self.render(call, len(call.steps) - 1, now)}
        call.callback_headers["x-retell-signature"] = sign(
            json.dumps(body).encode(), self.credentials["api_key"], _ms(now)
        )
        return body

    def render(self, call: FakeCall, index: int, now: float) -> dict[str, Any]:
        status = call.steps[index].status
        terminal = index == len(call.steps) - 1 and status in ("ended", "not_connected", "error")
        record: dict[str, Any] = {
            "call_id": call.call_id,
            "agent_id": call.params.get("agent_id", self.agent_id),
            "agent_version": 1,
            "call_type": "phone_call",
            "direction": "outbound",
            "from_number": "+12137771234",
            "to_number": "+12137771235",
            "call_status": status,
            "metadata": {},
            "latency": {},
        }
        if status != "registered":
            record["start_timestamp"] = _ms(call.created)
        if terminal:
            end = call.ended_at(self.speed)
            record["end_timestamp"] = _ms(end)
            talked = next((call.created + s.after / self.speed for s in call.steps if s.status == "ongoing"), None)
            if status == "ended" and talked is not None:
                record["duration_ms"] = _ms(end) - _ms(talked)
                record["transcript"] = "Agent: hi how are you doing?\nUser: Doing pretty well."
            record["disconnection_reason"] = REASONS.get(call.outcome or State.COMPLETED, "user_hangup")
            record.update(call.fields)
        return record
