"""A fake Bland AI API, faithful to Bland's "Call Details" reference (docs/providers/reference/bland.md).

`GET /v1/calls/{call_id}` with the API key raw in `authorization`; `queue_status` new → queued
→ allocated → started → complete (or call_error), with `completed`, `status`, `answered_by`,
`call_length` (minutes), `corrected_duration` (seconds, a string), `end_at` as the max-duration
cutoff (not the end), errors as `{"status": "error", "message": ...}`. A finished call POSTs
its post-call webhook (the call details), signed with `X-Webhook-Signature` when the fake has a
`webhook_secret` credential.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from outbound_call_exporter import State
from outbound_call_exporter.testing import FakeCall, FakeProvider

#: `status` and `answered_by` of a call ending in each outcome
OUTCOME_FIELDS: dict[State, dict[str, str | None]] = {
    State.COMPLETED: {"status": "completed", "answered_by": "human"},
    State.BUSY: {"status": "busy", "answered_by": None},
    State.NO_ANSWER: {"status": "no-answer", "answered_by": "no-answer"},
    State.FAILED: {"status": "failed", "answered_by": None},
    State.CANCELLED: {"status": "canceled", "answered_by": None},
}
MAX_DURATION_MINUTES = 30


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"status": "error", "message": message}, status=status)


class BlandFake(FakeProvider):
    provider = "bland"
    status_field = "queue_status"
    raw_status = {
        State.QUEUED: "queued",
        State.IN_PROGRESS: "started",
        State.COMPLETED: "complete",
        State.BUSY: "complete",
        State.NO_ANSWER: "complete",
        State.CANCELLED: "complete",
        State.FAILED: "call_error",
    }
    pre_dial = ("allocated",)

    def default_credentials(self) -> dict[str, str]:
        return {"api_key": "org_fake_bland_0123456789abcdef"}

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/calls/{call_id}", self._status)]

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("authorization") == self.credentials["api_key"]

    def unauthorized(self) -> web.Response:
        return _error(401, "Invalid API key")

    def not_found(self) -> web.Response:
        return _error(404, "Call not found")

    def terminal_fields(self, outcome: State) -> dict[str, Any]:
        return {"error_message": "Call failed: carrier returned SIP 503"} if outcome is State.FAILED else {}

    async def _status(self, request: web.Request) -> web.StreamResponse:
        return await self.serve_status(request, request.match_info["call_id"], {})

    def webhook_body(self, call: FakeCall, now: float) -> dict[str, Any]:
        body = self.render(call, len(call.steps) - 1, now)
        secret = self.credentials.get("webhook_secret")
        if secret:
            digest = hmac.new(secret.encode(), json.dumps(body).encode(), hashlib.sha256).hexdigest()
            call.callback_headers["X-Webhook-Signature"] = digest
        return body

    def render(self, call: FakeCall, index: int, now: float) -> dict[str, Any]:
        status = call.steps[index].status
        terminal = index == len(call.steps) - 1 and status in ("complete", "call_error", "complete_error")
        started = next(
            (call.created + s.after / self.speed for s in call.steps[: index + 1] if s.status == "started"), None
        )
        record: dict[str, Any] = {
            "call_id": call.call_id,
            "c_id": call.call_id,
            "to": "+12223334444",
            "from": "+17163511654",
            "inbound": False,
            "batch_id": None,
            "created_at": _iso(call.created),
            "queue_status": status,
            "completed": terminal,
            "endpoint_url": "api.prod.bland.ai",
            "max_duration": MAX_DURATION_MINUTES,
            "error_message": None,
            "answered_by": None,
            "metadata": {},
            "request_data": {"wait": False},
            "started_at": _iso(started),
            # the max-duration cutoff, not the end (the plugin must not read it as the end)
            "end_at": _iso(started + MAX_DURATION_MINUTES * 60) if started is not None else None,
        }
        if terminal:
            record.update(OUTCOME_FIELDS[call.outcome or State.COMPLETED])
            if started is not None:
                seconds = call.ended_at(self.speed) - started
                record.update(
                    call_length=round(seconds / 60, 4),
                    corrected_duration=str(round(seconds)),
                    call_ended_by="USER",
                    concatenated_transcript="user: Hello? \n assistant: Hi there!",
                )
            record.update(call.fields)
        return record
