"""A fake Telzino API, faithful to the status-endpoint doc: path, Bearer auth, record fields."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

from aiohttp import web

from outbound_call_exporter import State
from outbound_call_exporter.testing import FakeCall, FakeProvider

#: SIP codes Telzino reports for calls that failed at the telephony layer (doc: 486 busy, 480 no answer)
SIP_CODES = {State.BUSY: 486, State.NO_ANSWER: 480, State.FAILED: 503}
ERRORS = {State.BUSY: "Callee busy", State.NO_ANSWER: "No answer after 45s", State.FAILED: "Telephony provider error"}


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


class TelzinoFake(FakeProvider):
    provider = "telzino"
    raw_status = {
        State.QUEUED: "queued",
        State.DIALING: "dialing",
        State.IN_PROGRESS: "in_progress",
        State.COMPLETED: "completed",
        State.NO_ANSWER: "no_answer",
        State.BUSY: "busy",
        State.FAILED: "failed",
    }
    pre_dial = ("dispatching", "dispatched")
    agent_id = "123e4567-e89b-12d3-a456-426614174000"

    def default_credentials(self) -> dict[str, str]:
        return {"token": "fake-telzino-token"}

    def demo_settings(self) -> dict[str, Any]:
        return {**self.credentials, "agent_id": self.agent_id}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/agents/{agent_id}/outbound-calls/{call_id}", self._status),
            web.get("/v1/agents/{agent_id}/outbound-calls", self._list),
        ]

    async def _list(self, request: web.Request) -> web.StreamResponse:
        """`?page=1&limit=50(≤100)&status=<one lifecycle status>`, newest first."""
        q = request.query
        try:
            page, limit = int(q.get("page", "1")), int(q.get("limit", "50"))
        except ValueError:
            return web.json_response({"error": "page and limit must be integers"}, status=400)
        status = q.get("status")
        known = (*self.raw_status.values(), *self.pre_dial)
        if (status is not None and status not in known) or not 1 <= limit <= 100 or page < 1:
            return web.json_response({"error": "invalid query"}, status=400)
        return await self.serve_list(request, {"agent_id": request.match_info["agent_id"]}, status, page, limit)

    def render_list(
        self, items: list[dict[str, Any]], paging: dict[str, Any], calls: list[FakeCall], now: float
    ) -> dict[str, Any]:
        omitted = ("call_context", "callback_url", "callback_delivered", "summary_text")
        return {"data": [{k: v for k, v in item.items() if k not in omitted} for item in items], "pagination": paging}

    def webhook_body(self, call: FakeCall, now: float) -> dict[str, Any]:
        """The record's shape, as the discovery doc says to treat it (signing is undocumented)."""
        record = self.render(call, len(call.steps) - 1, now)
        return {
            k: record[k]
            for k in (
                "id",
                "agent_id",
                "status",
                "request_metadata",
                "transcript_id",
                "summary_text",
                "sip_status_code",
                "error",
                "created_at",
                "answered_at",
                "ended_at",
                "duration",
            )
        }

    async def _status(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        return await self.serve_status(request, m["call_id"], {"agent_id": m["agent_id"]})

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.credentials['token']}"

    def key(self, call_id: str, params: Mapping[str, str]) -> tuple[str, ...]:
        return (params.get("agent_id", ""), call_id)

    def new_params(self) -> dict[str, str]:
        return {"agent_id": self.agent_id}

    def terminal_fields(self, outcome: State) -> dict[str, Any]:
        if outcome in SIP_CODES:
            return {"sip_status_code": SIP_CODES[outcome], "error": ERRORS[outcome]}
        return {}

    def render(self, call: FakeCall, index: int, now: float) -> dict[str, Any]:
        step = call.steps[index]
        status = step.status
        terminal = index == len(call.steps) - 1
        answered = next(
            (call.created + s.after / self.speed for s in call.steps[: index + 1] if s.status == "in_progress"), None
        )
        ended = call.ended_at(self.speed) if terminal else None
        record: dict[str, Any] = {
            "id": call.call_id,
            "agent_id": call.params.get("agent_id"),
            "to_number": "+18135551234",
            "status": status,
            "call_context": "You are calling John to confirm his appointment tomorrow at 2pm.",
            "request_metadata": {"crm_id": "123"},
            "callback_url": call.callback_url or "https://your-system.com/telzino/call-result",
            "callback_delivered": (True if terminal else None),
            "transcript_id": "de79aee6-ae41-4003-a3f4-ba9d77b59bd8" if answered else None,
            "summary_text": "Appointment Confirmation" if terminal and answered else None,
            "error": None,
            "sip_status_code": None,
            "created_at": _iso(call.created),
            "answered_at": _iso(answered),
            "ended_at": _iso(ended),
            "duration": round(ended - answered) if ended and answered else None,
        }
        if terminal:
            record.update(call.fields)
        return record
