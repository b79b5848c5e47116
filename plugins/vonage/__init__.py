"""Vonage Voice API: `GET https://api.nexmo.com/v1/calls/{uuid}`, Bearer JWT (RS256, signed with
the application's private key).

Status mapping (every documented `status` value: the Voice API reference's table, plus
`unanswered` from the SDKs' CallStatus enum and the webhook reference):

| Vonage raw | normalized |
|---|---|
| started, ringing | dialing (Vonage has no queued state: `started` is the platform placing the call) |
| answered, machine, human | in_progress (`machine`/`human` are answering-machine detection results, not ends) |
| transfer, input, disconnected | in_progress (event webhooks of an answered call: transfer, input, WebSocket closed) |
| completed | completed |
| busy | busy |
| timeout, unanswered | no_answer (not answered within `ringing_timer`; unreachable or declined) |
| cancelled | cancelled |
| failed, rejected | failed (`rejected`: failure reason `rejected`; carriers may report busy as rejected) |

Times are UTC, `YYYY-MM-DD HH:MM:SS` or ISO 8601: `start_time` is the call's start (its
creation here), `end_time` its end, `duration` (string seconds) the talk time, so the answer
time is `end_time - duration` for a completed call. docs/providers/vonage.md has the decisions.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Callable

import httpx
from pydantic import AfterValidator, Field, SecretStr

from outbound_call_exporter import (
    CallParams,
    CallStatus,
    FailureReason,
    ListedCall,
    Provider,
    ProviderSettings,
    State,
    Uuid,
    answered_before_end,
    classify_failure,
    hookimpl,
    parse_duration,
    parse_timestamp,
)

from .auth import RequestTokens, load_private_key, verify_signed_webhook

STATUS_MAP = {
    "started": State.DIALING,
    "ringing": State.DIALING,
    "answered": State.IN_PROGRESS,
    "machine": State.IN_PROGRESS,
    "human": State.IN_PROGRESS,
    # events of an answered call that the SDKs list among call statuses (event webhooks only)
    "transfer": State.IN_PROGRESS,
    "input": State.IN_PROGRESS,
    "disconnected": State.IN_PROGRESS,
    "completed": State.COMPLETED,
    "busy": State.BUSY,
    "timeout": State.NO_ANSWER,
    "unanswered": State.NO_ANSWER,
    "cancelled": State.CANCELLED,
    "failed": State.FAILED,
    "rejected": State.FAILED,
}
#: event webhooks' `detail` of a call that did not connect -> failure reason
DETAIL_REASONS = {
    "invalid_number": FailureReason.UNREACHABLE,
    "number_out_of_service": FailureReason.UNREACHABLE,
    "cannot_route": FailureReason.UNREACHABLE,
    "unavailable": FailureReason.UNREACHABLE,
    "declined": FailureReason.REJECTED,
    "restricted": FailureReason.REJECTED,
    "ring_timeout": FailureReason.NO_ANSWER,
    "carrier_timeout": FailureReason.NO_ANSWER,
    "busy": FailureReason.BUSY,
    "internal_error": FailureReason.OTHER,
}
#: a documented `detail` is a short snake_case token; anything else is not used as the reason
DETAIL_RE = re.compile(r"[a-z_]{1,64}")
EXTRAS = ("conversation_uuid", "direction", "network", "rate", "price", "detail")


def _pem(value: SecretStr) -> SecretStr:
    load_private_key(value)  # refused at config time, with a message naming no part of the key
    return value


PrivateKey = Annotated[SecretStr, AfterValidator(_pem)]


class VonageSettings(ProviderSettings):
    application_id: Uuid = Field(description="the Vonage application's id (a UUID): the JWT's application_id")
    private_key: PrivateKey = Field(
        description="the application's private key (PEM) every request's JWT is signed with"
    )
    #: the account's signature secret, to verify signed event webhooks (optional)
    signature_secret: SecretStr | None = Field(
        None, description="the account's signature secret, to verify signed event webhooks (HS256 JWT)"
    )


class VonageParams(CallParams):
    call_id: Uuid = Field(description="the call's UUID returned when the call was created")


class Vonage(Provider[VonageSettings, VonageParams]):
    name = "vonage"
    #: `to` is the person called (an outbound call); `from` is the caller id, the business's own number
    destination_extras = frozenset({"to"})
    description = "Vonage Voice API call details (Bearer JWT signed with the application's private key)"
    default_base_url = "https://api.nexmo.com"
    Settings = VonageSettings
    Params = VonageParams
    status_map = STATUS_MAP
    cadence = {State.QUEUED: 3.0, State.DIALING: 3.0, State.IN_PROGRESS: 15.0, State.UNKNOWN: 15.0}
    #: Vonage's documented Voice API limit: 15 GET requests per second, then 429
    default_max_requests_per_second = 15.0

    def __init__(self, settings: VonageSettings, base_url: str | None = None) -> None:
        super().__init__(settings, base_url)
        self._tokens = RequestTokens(settings.application_id, settings.private_key)

    def build_request(self, call: VonageParams) -> httpx.Request:
        return httpx.Request(
            "GET",
            self.url("v1", "calls", call.call_id),
            headers={"Authorization": f"Bearer {self._tokens.token()}", "Accept": "application/json"},
        )

    def parse_body(self, body: dict[str, Any]) -> CallStatus:
        raw = body["status"]
        state = self.normalize(raw)
        started, end = parse_timestamp(body.get("start_time")), parse_timestamp(body.get("end_time"))
        at = parse_timestamp(body.get("timestamp"))  # event webhooks: when this event happened
        ended = (end or at) if state.terminal else None
        duration = parse_duration(body.get("duration"))
        talk = duration if state is State.COMPLETED else None  # Vonage sends "0" for calls that never connected
        detail = body.get("detail") if isinstance(body.get("detail"), str) else None
        reason = detail if detail and DETAIL_RE.fullmatch(detail) else None
        extras: dict[str, Any] = {k: body[k] for k in EXTRAS if isinstance(body.get(k), str) and body[k]}
        for side in ("to", "from"):
            if (number := _number(body.get(side))) is not None:
                extras[side] = number
        return CallStatus(
            state=state,
            provider_status=raw,
            reason=reason,
            created_at=started,
            ended_at=ended,
            answered_at=answered_before_end(state, ended, talk),
            duration_seconds=talk,
            state_since=at or (ended if state.terminal else started if raw == "started" else None),
            failure_reason=_failure(raw, state, reason),
            extras=extras,
        )

    # -- event webhooks ------------------------------------------------------------------------

    def verify_webhook(self, request: httpx.Request) -> None:
        """Only with a `signature_secret`: Vonage signs webhooks when the application enables it."""
        if self.settings.signature_secret is not None:
            verify_signed_webhook(
                request.headers.get("Authorization"),
                request.content,
                self.settings.signature_secret,
                self.settings.application_id,
            )

    def parse_webhook(self, body: dict[str, Any]) -> ListedCall:
        """An event webhook (`uuid`, `status`, `timestamp`, ...), parsed like a call record.
        Answering-machine events name the call `call_uuid` instead."""
        uuid = body.get("uuid", body.get("call_uuid"))
        if not isinstance(uuid, str) or not isinstance(body.get("status"), str):
            raise ValueError("a Vonage event webhook carries the call's `uuid` and `status`")
        return ListedCall({"call_id": uuid}, self.call_status(body))


def _failure(raw: str, state: State, reason: str | None) -> FailureReason | None:
    if state is not State.FAILED:
        return None
    if reason is not None:
        return DETAIL_REASONS.get(reason) or classify_failure(reason.replace("_", " "))
    return FailureReason.REJECTED if raw == "rejected" else None


def _number(endpoint: Any) -> str | None:
    """The number of a `to`/`from` endpoint (an object, a list of them, or, in webhooks, a
    string) in E.164 with its `+`: Vonage writes `447700900000`, and the `+` is what lets the
    privacy mask keep the country code (`+44•••••••00`) instead of only the last digits."""
    if isinstance(endpoint, list) and endpoint:
        endpoint = endpoint[0]
    if isinstance(endpoint, dict):
        endpoint = endpoint.get("number")
    if not isinstance(endpoint, str) or not endpoint:
        return None
    return f"+{endpoint}" if endpoint.isdigit() else endpoint


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(Vonage)


@hookimpl
def register_fakes(register: Callable[[type], None]) -> None:
    from .fake import VonageFake

    register(VonageFake)
