"""Call status from a Twilio-compatible Calls API (`GET /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`, HTTP Basic)."""

import base64
from email.utils import parsedate_to_datetime

import httpx
from pydantic import Field

from outbound_call_exporter import CallParams, CallStatus, HeaderSecret, Provider, ProviderSettings, State, hookimpl


class SampleCallsSettings(ProviderSettings):
    account_sid: str = Field(pattern=r"^AC[0-9a-f]{32}$")
    auth_token: HeaderSecret  # a secret sent in a header: never logged, stored or returned


class SampleCallsParams(CallParams):
    call_id: str = Field(pattern=r"^CA[0-9a-f]{32}$")  # the Call SID


class SampleCalls(Provider[SampleCallsSettings, SampleCallsParams]):
    name = "sample_calls"
    description = "Twilio-compatible Calls API (example third-party plugin)"
    default_base_url = "https://calls.example.com"
    Settings = SampleCallsSettings
    Params = SampleCallsParams
    status_map = {"queued": State.QUEUED, "ringing": State.DIALING, "in-progress": State.IN_PROGRESS,
                  "completed": State.COMPLETED, "busy": State.BUSY, "failed": State.FAILED,
                  "no-answer": State.NO_ANSWER, "canceled": State.CANCELLED}
    cadence = {State.QUEUED: 3, State.DIALING: 3, State.IN_PROGRESS: 15, State.UNKNOWN: 10}
    destination_extras = frozenset({"to"})  # the number dialled: the exporter's `privacy` config applies

    def build_request(self, call):
        sid, token = self.settings.account_sid, self.settings.auth_token.get_secret_value()
        basic = base64.b64encode(f"{sid}:{token}".encode()).decode()
        return httpx.Request("GET", self.url("2010-04-01", "Accounts", sid, "Calls", f"{call.call_id}.json"),
                             headers={"Authorization": f"Basic {basic}"})

    def parse_body(self, body):  # the host checked that `status` is a string
        raw, duration = body["status"], body.get("duration")  # duration: string seconds
        return CallStatus(state=self.normalize(raw), provider_status=raw,
                          created_at=_rfc2822(body.get("date_created")), ended_at=_rfc2822(body.get("end_time")),
                          duration_seconds=float(duration) if duration else None,
                          extras={"to": body["to"]} if body.get("to") else {})


def _rfc2822(value):  # RFC 2822, as Twilio writes them: "Tue, 31 Aug 2010 20:36:28 +0000"
    return parsedate_to_datetime(value) if value else None


@hookimpl
def register_providers(register):
    register(SampleCalls)


@hookimpl
def register_fakes(register):
    from .fake import SampleCallsFake

    register(SampleCallsFake)
