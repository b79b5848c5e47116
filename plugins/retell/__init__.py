"""Retell AI calls: `GET https://api.retellai.com/v2/get-call/{call_id}`, `Authorization: Bearer <api key>`.

Status mapping (`call_status`, every documented value; docs/providers/retell.md):

| Retell `call_status` | normalized |
|---|---|
| registered | queued (call id issued, dialling not yet reported: Retell has no ringing state) |
| ongoing | in_progress |
| ended | completed, or failed when `disconnection_reason` is one of Retell's error reasons |
| not_connected | dial_busy → busy, dial_no_answer → no_answer, user_declined → busy (rejected), else failed |
| error | failed |

Times are epoch milliseconds: `start_timestamp` (the call's begin, used as its creation time),
`end_timestamp`, and `duration_ms` (the connected call's length: talk time). Retell gives no
answer time. Discovery and bulk refresh use `POST /v3/list-calls` (agent filter, newest first,
`pagination_key` cursor); webhooks `call_started` / `call_ended` / `call_analyzed` carry the
call object and are verified with `x-retell-signature` (HMAC-SHA256 keyed with the API key).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import httpx
from pydantic import Field

from outbound_call_exporter import (
    CallPage,
    CallParams,
    CallStatus,
    FailureReason,
    HeaderSecret,
    ListedCall,
    PathSegment,
    Provider,
    ProviderSettings,
    State,
    hookimpl,
    number_field,
    parse_timestamp,
)

from .signature import verify_signature

STATUS_MAP = {
    "registered": State.QUEUED,
    "ongoing": State.IN_PROGRESS,
    "ended": State.COMPLETED,
    "not_connected": State.FAILED,
    "error": State.FAILED,
}
#: `disconnection_reason` of a not-connected call: its state and failure category
NOT_CONNECTED: dict[str, tuple[State, FailureReason]] = {
    "dial_busy": (State.BUSY, FailureReason.BUSY),
    "dial_no_answer": (State.NO_ANSWER, FailureReason.NO_ANSWER),
    "user_declined": (State.BUSY, FailureReason.REJECTED),
    "invalid_destination": (State.FAILED, FailureReason.UNREACHABLE),
    "dial_failed": (State.FAILED, FailureReason.UNREACHABLE),
    "marked_as_spam": (State.FAILED, FailureReason.REJECTED),
    "registered_call_timeout": (State.FAILED, FailureReason.QUEUE_TIMEOUT),
    "concurrency_limit_reached": (State.FAILED, FailureReason.QUEUE_TIMEOUT),
}
#: reasons that mean the call failed even when its status says `ended`
ERROR_REASONS = frozenset(
    {
        "concurrency_limit_reached",
        "no_concurrency_fallback",
        "no_valid_payment",
        "scam_detected",
        "registered_call_timeout",
    }
)
#: record fields kept in `extras` (transcripts, recordings and numbers stay at Retell)
EXTRAS = ("agent_id", "call_type", "direction", "disconnection_reason", "batch_call_id")
#: calls per list page (Retell's `limit`): an ended call carries its transcripts (tens of KB), so a
#: page stays well inside the host's default `max_response_bytes` (1 MiB)
PAGE_SIZE = 10


class RetellSettings(ProviderSettings):
    api_key: HeaderSecret = Field(
        description="Retell API key, sent as Authorization: Bearer; also verifies x-retell-signature"
    )


class RetellParams(CallParams):
    """`call_id` is Retell's call id; `agent_id` only ties a call to an agent scope."""

    agent_id: PathSegment | None = Field(None, description="the agent that placed the call: ties it to an agent scope")


class Retell(Provider[RetellSettings, RetellParams]):
    name = "retell"
    description = "Retell AI calls API (Bearer API key); disconnection_reason refines not_connected"
    default_base_url = "https://api.retellai.com"
    Settings = RetellSettings
    Params = RetellParams
    status_key = "call_status"
    status_map = STATUS_MAP
    cadence = {State.QUEUED: 3.0, State.DIALING: 3.0, State.IN_PROGRESS: 15.0, State.UNKNOWN: 10.0}
    #: Retell publishes no request limit for its read endpoints: a polite 5/s
    default_max_requests_per_second = 5.0

    def build_request(self, call: RetellParams) -> httpx.Request:
        return httpx.Request("GET", self.url("v2", "get-call", call.call_id), headers=self._headers())

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.api_key.get_secret_value()}", "Accept": "application/json"}

    def parse_body(self, body: dict[str, Any]) -> CallStatus:
        raw = body["call_status"]
        reason = body.get("disconnection_reason") if isinstance(body.get("disconnection_reason"), str) else None
        state, failure = refine(self.normalize(raw), raw, reason)
        started, ended = (
            parse_timestamp(number_field(body, "start_timestamp")),
            parse_timestamp(number_field(body, "end_timestamp")),
        )
        duration = number_field(body, "duration_ms")
        return CallStatus(
            state=state,
            provider_status=raw,
            reason=reason if state.terminal else None,
            created_at=started,
            ended_at=ended if state.terminal else None,
            duration_seconds=duration / 1000 if duration is not None and state is State.COMPLETED else None,
            state_since=ended if state.terminal else started if state is State.IN_PROGRESS else None,
            failure_reason=failure,
            extras={k: body[k] for k in EXTRAS if isinstance(body.get(k), str)},
        )

    # -- discovery, bulk status, webhooks ------------------------------------------------------

    scope_keys = frozenset({"agent_id"})
    #: `registered` is not a value the list filter accepts, so only `ongoing` calls refresh in bulk
    list_status_filters = ("ongoing",)

    def build_list_request(
        self, scope: Mapping[str, str], page: int, status: str | None, cursor: str | None = None
    ) -> httpx.Request:
        """The agent's calls newest first; pages after the first continue from `pagination_key`."""
        criteria: dict[str, Any] = {"agent": [{"agent_id": scope["agent_id"]}]}
        if status is not None:
            criteria["call_status"] = {"op": "in", "type": "enum", "value": [status]}
        body: dict[str, Any] = {"filter_criteria": criteria, "sort_order": "descending", "limit": PAGE_SIZE}
        if cursor is not None:
            body["pagination_key"] = cursor
        return httpx.Request("POST", self.url("v3", "list-calls"), json=body, headers=self._headers())

    def parse_list_response(self, scope: Mapping[str, str], response: httpx.Response) -> CallPage:
        self.raise_for_status(response)
        body = self.json_object(response)
        items = body.get("items")
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and isinstance(i.get("call_id"), str) for i in items
        ):
            raise ValueError("a list-calls response has `items`, calls with a `call_id`")
        calls = tuple(
            ListedCall({"call_id": i["call_id"], "agent_id": scope["agent_id"]}, self.call_status(i)) for i in items
        )
        key = body.get("pagination_key")
        more = body.get("has_more") is True and bool(items) and isinstance(key, str) and bool(key)
        return CallPage(calls, has_next=more, next_cursor=key if more else None)

    def parse_webhook(self, body: dict[str, Any]) -> ListedCall:
        event, call = body.get("event"), body.get("call")
        if (
            event not in ("call_started", "call_ended", "call_analyzed")
            or not isinstance(call, dict)
            or not isinstance(call.get("call_id"), str)
        ):
            raise ValueError(
                'a Retell webhook is {"event": "call_started" | "call_ended" | "call_analyzed", '
                '"call": {"call_id": ..., ...}}'
            )
        return ListedCall({"call_id": call["call_id"]}, self.call_status(call))

    def verify_webhook(self, request: httpx.Request) -> None:
        verify_signature(
            request.content, self.settings.api_key.get_secret_value(), request.headers.get("x-retell-signature")
        )


def refine(state: State, raw: str, reason: str | None) -> tuple[State, FailureReason | None]:
    """`call_status` refined by `disconnection_reason` (docs: "Debug call disconnection")."""
    if raw == "not_connected":
        return NOT_CONNECTED.get(reason or "", (State.FAILED, FailureReason.OTHER))
    if raw == "error":
        return State.FAILED, NOT_CONNECTED.get(reason or "", (State.FAILED, FailureReason.OTHER))[1]
    if raw == "ended" and reason is not None and (reason in ERROR_REASONS or reason.startswith("error_")):
        return State.FAILED, FailureReason.OTHER
    return state, None


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(Retell)


@hookimpl
def register_fakes(register: Callable[[type], None]) -> None:
    from .fake import RetellFake

    register(RetellFake)
