"""A fake Vapi API, faithful to Vapi's OpenAPI and docs (docs/providers/reference/vapi.md).

`GET /call/{id}` and `GET /call?assistantId&phoneNumberId&limit&createdAtGt|Lt|Le` with
`Authorization: Bearer <key>`; Call objects with `status` scheduled/queued/ringing/in-progress/
forwarding/ended and, once ended, `endedReason`; NestJS error bodies
(`{"message", "error", "statusCode"}`) for 400 (an id that is not a UUID), 401 and 404 (unknown
or past retention). The result webhook a finished call sends is an `end-of-call-report`.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from outbound_call_exporter import State
from outbound_call_exporter.testing import FakeCall, FakeProvider

#: the endedReason a call ending in each outcome carries (values from Vapi's enum)
ENDED_REASONS = {
    State.COMPLETED: "customer-ended-call",
    State.BUSY: "customer-busy",
    State.NO_ANSWER: "customer-did-not-answer",
    State.FAILED: "twilio-failed-to-connect-call",
    State.CANCELLED: "manually-canceled",
}
INVALID_KEY = "Invalid Key. Hot tip, you may be using the private key instead of the public key, or vice versa."


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(ts: float) -> int:
    """Vapi's timestamps have millisecond precision: filters compare at that precision."""
    return int(ts * 1000)


def _parse_iso(value: str | None) -> int | None:
    return None if value is None else _ms(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())


def _error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"message": message, "error": error, "statusCode": status}, status=status)


class VapiFake(FakeProvider):
    provider = "vapi"
    raw_status = {
        State.QUEUED: "queued",
        State.DIALING: "ringing",
        State.IN_PROGRESS: "in-progress",
        State.COMPLETED: "ended",
        State.FAILED: "ended",
        State.BUSY: "ended",
        State.NO_ANSWER: "ended",
        State.CANCELLED: "ended",
    }
    assistant_id = "5b0a4a08-133c-4146-9315-0984f8c6be80"
    phone_number_id = "9c2a7e1e-7f52-4bd0-9d7e-5a0b9e0c1a11"
    org_id = "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d"

    def default_credentials(self) -> dict[str, str]:
        return {"api_key": "fake-vapi-private-key"}

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/call/{id}", self._status), web.get("/call", self._list)]

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.credentials['api_key']}"

    def unauthorized(self) -> web.Response:
        return _error(401, "Unauthorized", INVALID_KEY)

    def not_found(self) -> web.Response:
        return _error(404, "Not Found", "Couldn't Get Call. Call Not Found.")

    def terminal_fields(self, outcome: State) -> dict[str, Any]:
        """Failed calls carry a free-text `endedMessage` (endedReason comes from the outcome)."""
        return {"endedMessage": "Twilio failed to connect the call (SIP 503)."} if outcome is State.FAILED else {}

    async def _status(self, request: web.Request) -> web.StreamResponse:
        call_id = request.match_info["id"]
        try:
            uuid.UUID(call_id)
        except ValueError:
            return _error(400, "Bad Request", "Validation failed (uuid is expected)")
        return await self.serve_status(request, call_id, {})

    async def _list(self, request: web.Request) -> web.StreamResponse:
        """The calls of our one assistant / phone number, newest first, `createdAtGt`, `limit` ≤ 1000."""
        refused = await self.gate(request, "list")
        if refused is not None:
            return refused
        q, now = request.query, time.time()
        try:
            limit = int(float(q.get("limit", "100")))
            after, before, until = (_parse_iso(q.get(k)) for k in ("createdAtGt", "createdAtLt", "createdAtLe"))
        except ValueError:
            return _error(400, "Bad Request", "limit must be a number and createdAt* a date-time")
        if not 0 <= limit <= 1000:
            return _error(400, "Bad Request", "limit must not be greater than 1000")
        ours = (
            q.get("assistantId", self.assistant_id) == self.assistant_id
            and q.get("phoneNumberId", self.phone_number_id) == self.phone_number_id
        )
        calls = [
            c
            for c in self.matching({}, None, now)
            if ours
            and (after is None or _ms(c.created) > after)
            and (before is None or _ms(c.created) < before)
            and (until is None or _ms(c.created) <= until)
        ]
        return web.json_response([self.render(c, c.step_index(now, self.speed), now) for c in calls[:limit]])

    def webhook_body(self, call: FakeCall, now: float) -> dict[str, Any]:
        record = self.render(call, len(call.steps) - 1, now)
        return {
            "message": {
                "type": "end-of-call-report",
                "endedReason": record["endedReason"],
                "call": record,
                "startedAt": record.get("startedAt"),
                "endedAt": record["endedAt"],
                "timestamp": int(now * 1000),
                "artifact": {"transcript": "AI: Hello?"},
                "analysis": {"summary": "A short call."},
            }
        }

    def render(self, call: FakeCall, index: int, now: float) -> dict[str, Any]:
        status = call.steps[index].status
        terminal = index == len(call.steps) - 1 and status == "ended"
        started = next(
            (call.created + s.after / self.speed for s in call.steps[: index + 1] if s.status == "in-progress"), None
        )
        record: dict[str, Any] = {
            "id": call.call_id,
            "orgId": self.org_id,
            "type": "outboundPhoneCall",
            "status": status,
            "createdAt": _iso(call.created),
            "updatedAt": _iso(call.created + call.steps[index].after / self.speed),
            "assistantId": self.assistant_id,
            "phoneNumberId": self.phone_number_id,
            "customer": {"number": "+14155550123"},
            "phoneCallProvider": "twilio",
            "phoneCallTransport": "pstn",
        }
        if started is not None:
            record["startedAt"] = _iso(started)
        if terminal:
            record.update(
                endedAt=_iso(call.ended_at(self.speed)),
                cost=0.12,
                endedReason=ENDED_REASONS.get(call.outcome or State.COMPLETED, "customer-ended-call"),
            )
            record.update(call.fields)
        return record
