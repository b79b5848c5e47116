"""A fake Twilio Calls resource, faithful to the API reference.

`GET /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with HTTP Basic (account SID +
auth token, or API key SID + secret); the Call resource's fields with RFC 2822 times, `duration`
as a string of seconds (empty unless completed) and `end_time` empty unless completed; Twilio's
error bodies (`{"code", "message", "more_info", "status"}`: 20003 for credentials, 20404 for an
unknown call or one past retention, 20429 with `Retry-After` when more than `max_concurrent`
requests are in flight — Twilio limits concurrency, not a rate; off unless given, and `delay`
slows every answer so that requests overlap). Status callbacks are built by `status_callback`
(form fields plus `X-Twilio-Signature`) for whoever posts them.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

from aiohttp import web

from outbound_call_exporter import State
from outbound_call_exporter.testing import FakeCall, FakeProvider

from .signature import HEADER, signature

ACCOUNT_SID = "AC" + "a1" * 16
API_KEY_SID = "SK" + "b2" * 16
#: SIP responses Twilio reports in callbacks for calls that did not connect
SIP_CODES = {State.BUSY: 486, State.NO_ANSWER: 480, State.FAILED: 404}


def rfc2822(ts: float | None) -> str | None:
    return None if ts is None else format_datetime(datetime.fromtimestamp(int(ts), tz=timezone.utc))


def error(status: int, code: int, message: str, **extra: Any) -> web.Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
        **extra,
    }
    return web.json_response(body, status=status)


class TwilioFake(FakeProvider):
    provider = "twilio"
    raw_status = {
        State.QUEUED: "queued",
        State.DIALING: "ringing",
        State.IN_PROGRESS: "in-progress",
        State.COMPLETED: "completed",
        State.BUSY: "busy",
        State.NO_ANSWER: "no-answer",
        State.FAILED: "failed",
        State.CANCELLED: "canceled",
    }

    def __init__(self, *, max_concurrent: int | None = None, delay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_concurrent, self.delay = max_concurrent, delay
        self._in_flight = 0

    def default_credentials(self) -> dict[str, str]:
        return {
            "account_sid": ACCOUNT_SID,
            "auth_token": "fake-twilio-auth-token",
            "api_key_sid": API_KEY_SID,
            "api_key_secret": "fake-twilio-api-key-secret",
        }

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json", self._status)]

    async def _status(self, request: web.Request) -> web.StreamResponse:
        if self.max_concurrent is not None and self._in_flight >= self.max_concurrent:
            self.requests["rate_limited"] += 1
            response = error(429, 20429, "Too Many Requests")
            response.headers["Retry-After"] = "1"
            return response
        self._in_flight += 1
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return await self.serve_status(request, request.match_info["call_sid"], {})
        finally:
            self._in_flight -= 1

    def authorized(self, request: web.Request) -> bool:
        c = self.credentials
        if request.match_info.get("account_sid") != c["account_sid"]:
            return False
        pairs = {f"{c['account_sid']}:{c['auth_token']}", f"{c['api_key_sid']}:{c['api_key_secret']}"}
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            return base64.b64decode(header[6:], validate=True).decode() in pairs
        except ValueError:
            return False

    def unauthorized(self) -> web.Response:
        return error(401, 20003, "Authenticate", detail="Your AccountSid or AuthToken was incorrect.")

    def not_found(self) -> web.Response:
        return error(404, 20404, "The requested resource was not found")

    def rate_limited(self) -> bytes:
        """The body of Twilio's 429 (inject it with `faults.status(429, body=...)`)."""
        return (
            b'{"code": 20429, "message": "Too Many Requests", '
            b'"more_info": "https://www.twilio.com/docs/errors/20429", "status": 429}'
        )

    def add_call(self, call_id: str | None = None, *args: Any, **kwargs: Any) -> FakeCall:
        """As the base, with Call SIDs (`CA` + 32 hex) by default."""
        return super().add_call(call_id or f"CA{uuid.uuid4().hex}", *args, **kwargs)

    def render(self, call: FakeCall, index: int, now: float) -> dict[str, Any]:
        status = call.steps[index].status
        at = {s.status: call.created + s.after / self.speed for s in call.steps[: index + 1]}
        terminal = index == len(call.steps) - 1 and status not in ("queued", "ringing", "in-progress")
        ended = call.ended_at(self.speed) if terminal else None
        answered = at.get("in-progress")
        completed = status == "completed"
        sid, account = call.call_id, self.credentials["account_sid"]
        uri = f"/2010-04-01/Accounts/{account}/Calls/{sid}"
        return {
            "account_sid": account,
            "annotation": None,
            "answered_by": None,
            "api_version": "2010-04-01",
            "caller_name": None,
            "date_created": rfc2822(call.created),
            "date_updated": rfc2822(call.created + call.steps[index].after / self.speed),
            "direction": "outbound-api",
            "duration": str(round(ended - answered)) if completed and ended and answered else None,
            "end_time": rfc2822(ended) if completed else None,
            "forwarded_from": None,
            "from": "+15017122661",
            "from_formatted": "(501) 712-2661",
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": "PN" + "c3" * 16,
            "price": "-0.01300" if completed else None,
            "price_unit": "USD",
            "sid": sid,
            "start_time": rfc2822(at.get("ringing")),
            "status": status,
            "subresource_uris": {"recordings": f"{uri}/Recordings.json", "events": f"{uri}/Events.json"},
            "to": "+14155551212",
            "to_formatted": "(415) 555-1212",
            "trunk_sid": None,
            "uri": f"{uri}.json",
            "queue_time": "0",
        }

    def status_callback(self, call: FakeCall, url: str, now: float) -> tuple[dict[str, str], dict[str, str]]:
        """The form fields and headers of the status callback Twilio POSTs to `url` for `call`'s
        current status, signed with the account's auth token."""
        record = self.render(call, call.step_index(now, self.speed), now)
        fields = {
            "AccountSid": record["account_sid"],
            "ApiVersion": "2010-04-01",
            "CallSid": call.call_id,
            "CallStatus": record["status"],
            "Direction": "outbound-api",
            "From": record["from"],
            "To": record["to"],
            "Timestamp": record["date_updated"],
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(call.step_index(now, self.speed)),
        }
        if record["duration"] is not None:
            fields["CallDuration"] = fields["Duration"] = record["duration"]
        if call.outcome in SIP_CODES and record["status"] == self.raw_status[call.outcome]:
            fields["SipResponseCode"] = str(SIP_CODES[call.outcome])
        headers = {
            HEADER: signature(self.credentials["auth_token"], url, fields),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        return fields, headers
