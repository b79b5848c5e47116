"""Twilio Programmable Voice: `GET /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`, HTTP Basic.

Credentials are the account SID + auth token, or an API key SID + secret (Twilio's advice for
production); with both, the API key authenticates requests and the auth token only verifies
status callbacks (Twilio signs those with the auth token, never with an API key). Regions and
edges follow Twilio's hostnames: `api.{edge}.{region}.twilio.com`, `api.twilio.com` for US1.

Status mapping (every value of the Call resource's `status`, plus `initiated`, which status
callbacks report between `queued` and `ringing`):

| Twilio raw | normalized |
|---|---|
| queued | queued (accepted; beyond the account's calls-per-second it waits here) |
| initiated, ringing | dialing |
| in-progress | in_progress |
| completed | completed |
| busy | busy |
| no-answer | no_answer |
| canceled | cancelled |
| failed | failed |

Times are RFC 2822 GMT (`Tue, 31 Aug 2010 20:36:28 +0000`). `date_created` is the creation;
`end_time` (else `date_updated`) the end; `duration` (string seconds) the talk time, so the
answer time is `end_time - duration` for a completed call. docs/providers/twilio.md has the
decisions (cadence, rate limit, no list scope, webhook URL behind an ingress).
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Annotated, Any, Callable, Literal

import httpx
from pydantic import Field, StringConstraints, model_validator

from outbound_call_exporter import (
    CallParams,
    CallStatus,
    FailureReason,
    HeaderSecret,
    ListedCall,
    Provider,
    ProviderSettings,
    State,
    answered_before_end,
    hookimpl,
    parse_duration,
)

from .signature import verify_signature

STATUS_MAP = {
    "queued": State.QUEUED,
    "initiated": State.DIALING,
    "ringing": State.DIALING,
    "in-progress": State.IN_PROGRESS,
    "completed": State.COMPLETED,
    "busy": State.BUSY,
    "no-answer": State.NO_ANSWER,
    "canceled": State.CANCELLED,
    "failed": State.FAILED,
}
#: Call resource fields kept in `extras` (`to` is the number dialled; prices and URIs stay at Twilio)
EXTRAS = ("to", "from", "direction", "answered_by", "queue_time", "parent_call_sid", "price", "price_unit")
#: SIP final responses of a failed call (status callbacks' `SipResponseCode`) -> failure reason
SIP_REASONS = {
    404: FailureReason.UNREACHABLE,
    410: FailureReason.UNREACHABLE,
    484: FailureReason.UNREACHABLE,
    604: FailureReason.UNREACHABLE,
    486: FailureReason.BUSY,
    600: FailureReason.BUSY,
    408: FailureReason.NO_ANSWER,
    480: FailureReason.NO_ANSWER,
    487: FailureReason.CANCELLED,
    603: FailureReason.REJECTED,
}
#: a processing region's documented edge (`api.{edge}.{region}.twilio.com`)
REGION_EDGES = {"us1": "ashburn", "ie1": "dublin", "au1": "sydney", "jp1": "tokyo"}

AccountSid = Annotated[str, StringConstraints(pattern=r"^AC[0-9a-fA-F]{32}$")]
ApiKeySid = Annotated[str, StringConstraints(pattern=r"^SK[0-9a-fA-F]{32}$")]
CallSid = Annotated[str, StringConstraints(pattern=r"^CA[0-9a-fA-F]{32}$")]
Edge = Literal["ashburn", "umatilla", "dublin", "frankfurt", "sao-paulo", "singapore", "sydney", "tokyo", "roaming"]
PublicUrl = Annotated[str, StringConstraints(pattern=r"^https?://[^\s?#]+$")]


class TwilioSettings(ProviderSettings):
    account_sid: AccountSid = Field(description="the account's SID (AC + 32 hex), the path of every request")
    auth_token: HeaderSecret | None = Field(
        None,
        description="the account's auth token: HTTP Basic with the SID, and the key status callbacks are "
        "signed with (X-Twilio-Signature)",
    )
    api_key_sid: ApiKeySid | None = Field(
        None, description="an API key's SID (SK + 32 hex) to authenticate requests instead of the auth token"
    )
    api_key_secret: HeaderSecret | None = Field(None, description="the API key's secret (with api_key_sid)")
    region: Literal["us1", "ie1", "au1", "jp1"] = Field(
        "us1", description="Twilio region whose API processes and stores the calls"
    )
    edge: Edge | None = Field(None, description="Twilio edge location to connect through (default: the region's own)")
    #: the exporter's webhook URL as Twilio calls it (scheme, host, path), when an ingress or
    #: proxy in front of the exporter changes it; the query string is taken as received
    webhook_url: PublicUrl | None = Field(
        None,
        description="the public URL Twilio posts status callbacks to, when an ingress or proxy changes it "
        "(signatures are computed over it)",
    )

    @model_validator(mode="after")
    def _credentials(self) -> "TwilioSettings":
        if (self.api_key_sid is None) != (self.api_key_secret is None):
            raise ValueError("api_key_sid and api_key_secret go together")
        if self.auth_token is None and self.api_key_sid is None:
            raise ValueError("set auth_token, or api_key_sid and api_key_secret")
        return self


class TwilioParams(CallParams):
    call_id: CallSid = Field(description="the Call SID (CA + 32 hex) returned when the call was created")


class Twilio(Provider[TwilioSettings, TwilioParams]):
    name = "twilio"
    #: `to` is the person called (an outbound call); `from` is the caller id, the business's own number
    destination_extras = frozenset({"to"})
    description = "Twilio Calls resource (HTTP Basic: account SID + auth token, or API key)"
    default_base_url = "https://api.twilio.com"
    Settings = TwilioSettings
    Params = TwilioParams
    status_map = STATUS_MAP
    #: queued/ringing change within seconds; a talk lasts minutes (docs/design.md polling policy)
    cadence = {State.QUEUED: 3.0, State.DIALING: 3.0, State.IN_PROGRESS: 15.0, State.UNKNOWN: 15.0}
    #: Twilio publishes no GET limit, only concurrency-based 429s: stay well below (decision)
    default_max_requests_per_second = 10.0

    @classmethod
    def default_base_url_for(cls, settings: TwilioSettings) -> str:
        if settings.region == "us1" and settings.edge is None:
            return cls.default_base_url
        return f"https://api.{settings.edge or REGION_EDGES[settings.region]}.{settings.region}.twilio.com"

    def build_request(self, call: TwilioParams) -> httpx.Request:
        s = self.settings
        if s.api_key_sid is not None and s.api_key_secret is not None:
            user, secret = s.api_key_sid, s.api_key_secret
        else:
            assert s.auth_token is not None  # the settings validator requires it without an API key
            user, secret = s.account_sid, s.auth_token
        basic = base64.b64encode(f"{user}:{secret.get_secret_value()}".encode()).decode()
        url = self.url("2010-04-01", "Accounts", s.account_sid, "Calls", f"{call.call_id}.json")
        return httpx.Request("GET", url, headers={"Authorization": f"Basic {basic}", "Accept": "application/json"})

    def parse_body(self, body: dict[str, Any]) -> CallStatus:
        raw = body["status"]
        state = self.normalize(raw)
        created, updated = rfc2822(body.get("date_created")), rfc2822(body.get("date_updated"))
        started, end = rfc2822(body.get("start_time")), rfc2822(body.get("end_time"))
        duration = parse_duration(body.get("duration"))  # talk time: empty unless completed
        talk = duration if state is State.COMPLETED else None
        ended = (end or updated) if state.terminal else None
        since = {State.QUEUED: created, State.DIALING: started}.get(state, ended)
        return CallStatus(
            state=state,
            provider_status=raw,
            created_at=created,
            ended_at=ended,
            answered_at=answered_before_end(state, ended, talk),
            duration_seconds=talk,
            state_since=since,
            extras={k: body[k] for k in EXTRAS if body.get(k) not in (None, "")},
        )

    # -- status callbacks ------------------------------------------------------------------

    def verify_webhook(self, request: httpx.Request) -> None:
        verify_signature(request, self.settings.auth_token, self.settings.webhook_url)

    def parse_webhook(self, body: dict[str, Any]) -> ListedCall:
        """A status callback's form fields (`CallSid`, `CallStatus`, `Timestamp`, ...)."""
        sid, raw = _text(body, "CallSid"), _text(body, "CallStatus")
        if sid is None or raw is None:
            raise ValueError("a Twilio status callback carries `CallSid` and `CallStatus`")
        if body.get("AccountSid") not in (None, self.settings.account_sid):
            raise ValueError("AccountSid is not this account's")
        state = self.normalize(raw)
        at = rfc2822(body.get("Timestamp"))
        ended = at if state.terminal else None
        duration = parse_duration(body.get("CallDuration")) if state is State.COMPLETED else None  # 0 for busy etc.
        sip = _sip(body.get("SipResponseCode"))
        fields = {
            "to": body.get("To"),
            "from": body.get("From"),
            "direction": body.get("Direction"),
            "answered_by": body.get("AnsweredBy"),
        }
        status = CallStatus(
            state=state,
            provider_status=raw,
            ended_at=ended,
            answered_at=answered_before_end(state, ended, duration),
            duration_seconds=duration,
            state_since=at,
            sip_status_code=sip,
            failure_reason=SIP_REASONS.get(sip, FailureReason.OTHER) if state is State.FAILED and sip else None,
            extras={k: v for k, v in fields.items() if v},
        )
        return ListedCall({"call_id": sid}, status)


def rfc2822(value: Any) -> datetime | None:
    """Twilio's RFC 2822 GMT timestamps as aware UTC; None for null/empty, ValueError otherwise."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"timestamp of type {type(value).__name__}")
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise ValueError("timestamp is not RFC 2822") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) and value else None


def _sip(value: Any) -> int | None:
    return int(value) if isinstance(value, str) and value.isdigit() and 100 <= int(value) < 700 else None


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(Twilio)


@hookimpl
def register_fakes(register: Callable[[type], None]) -> None:
    from .fake import TwilioFake

    register(TwilioFake)
