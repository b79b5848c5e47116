"""A fake of the Twilio-compatible Calls API for tests and `outbound-call-exporter demo` (optional for a plugin)."""

import base64
import uuid
from email.utils import format_datetime
from datetime import datetime, timezone

from aiohttp import web

from outbound_call_exporter import State
from outbound_call_exporter.testing import FakeProvider


def _rfc2822(ts):
    return format_datetime(datetime.fromtimestamp(ts, tz=timezone.utc).replace(microsecond=0))


class SampleCallsFake(FakeProvider):
    provider = "sample_calls"
    raw_status = {State.QUEUED: "queued", State.DIALING: "ringing", State.IN_PROGRESS: "in-progress",
                  State.COMPLETED: "completed", State.BUSY: "busy", State.FAILED: "failed",
                  State.NO_ANSWER: "no-answer", State.CANCELLED: "canceled"}

    def default_credentials(self):
        return {"account_sid": "AC" + "0" * 32, "auth_token": "fake-sample-token"}

    def routes(self):
        return [web.get("/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json", self._status)]

    async def _status(self, request):
        return await self.serve_status(request, request.match_info["call_sid"], {})

    def authorized(self, request):
        c = self.credentials
        basic = base64.b64encode(f"{c['account_sid']}:{c['auth_token']}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {basic}" and \
            request.match_info["account_sid"] == c["account_sid"]

    def not_found(self):
        return web.json_response({"code": 20404, "message": "The requested resource was not found",
                                  "more_info": "https://calls.example.com/docs/errors/20404", "status": 404},
                                 status=404)

    def add_call(self, call_id=None, *args, **kwargs):
        return super().add_call(call_id or f"CA{uuid.uuid4().hex}", *args, **kwargs)

    def render(self, call, index, now):
        status = call.steps[index].status
        terminal = index == len(call.steps) - 1
        answered = next((call.created + s.after / self.speed for s in call.steps[: index + 1]
                         if s.status == "in-progress"), None)
        ended = call.ended_at(self.speed) if terminal else None
        return {"sid": call.call_id, "account_sid": self.credentials["account_sid"], "status": status,
                "direction": "outbound-api", "to": "+15558675310", "from": "+15017122661",
                "date_created": _rfc2822(call.created), "start_time": _rfc2822(call.created),
                "end_time": _rfc2822(ended) if ended else None,
                "duration": str(round(ended - answered)) if ended and answered else None}
