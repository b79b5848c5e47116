"""Bland AI calls: `GET https://api.bland.ai/v1/calls/{call_id}`, the API key raw in `authorization`.

Status mapping (`queue_status`, every documented value, refined by `completed`, `status` and
`answered_by`; docs/providers/bland.md):

| Bland `queue_status` | normalized |
|---|---|
| new, queued, allocated | queued (Bland reports no ringing state) |
| started | in_progress |
| complete (the docs' example: `completed`), complete_error | completed, unless `status`/`answered_by` disagree |
| pre_queue_error, queue_error, call_error | failed, unless `status` says busy or no-answer |

`completed: true` ends the call whatever `queue_status` says (the docs: "if it differs from
`queue_status`, this will be the most up-to-date status"). `complete_error` is a post-call
failure (e.g. the webhook), so the call itself completed. `status` busy, no-answer or canceled
and `answered_by: "no-answer"` refine a finished call. When a body has no `queue_status`, its
`status` (completed, failed, busy, no-answer, canceled) is the raw status.

Times: `created_at` and `started_at` ("the time the call was connected": the answer time) are
ISO 8601. `end_at` is NOT the end (it is the `max_duration` cutoff); the end is `started_at`
plus the talk time, `corrected_duration` (seconds, a string) or else `call_length` (minutes).
Result webhooks are Bland's post-call webhook (the call details object), verified with
`X-Webhook-Signature` (HMAC-SHA256 of the body) when the account sets `webhook_secret`.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from typing import Any, Callable

import httpx
from pydantic import Field, SecretStr

from outbound_call_exporter import (
    CallParams,
    CallStatus,
    FailureReason,
    HeaderSecret,
    ListedCall,
    Provider,
    ProviderSettings,
    State,
    Uuid,
    WebhookSignatureError,
    classify_failure,
    hookimpl,
    parse_timestamp,
)

STATUS_MAP = {
    # queue_status
    "new": State.QUEUED,
    "queued": State.QUEUED,
    "allocated": State.QUEUED,
    "started": State.IN_PROGRESS,
    "complete": State.COMPLETED,
    "complete_error": State.COMPLETED,
    "pre_queue_error": State.FAILED,
    "queue_error": State.FAILED,
    "call_error": State.FAILED,
    # status (also the raw status of a body without queue_status); "completed" is both
    "completed": State.COMPLETED,
    "failed": State.FAILED,
    "busy": State.BUSY,
    "no-answer": State.NO_ANSWER,
    "canceled": State.CANCELLED,
}
#: `status` values that refine a finished call
OUTCOMES = {
    "busy": (State.BUSY, FailureReason.BUSY),
    "no-answer": (State.NO_ANSWER, FailureReason.NO_ANSWER),
    "canceled": (State.CANCELLED, FailureReason.CANCELLED),
}
EXTRAS = ("status", "answered_by", "call_ended_by", "error_message", "batch_id")


class BlandSettings(ProviderSettings):
    api_key: HeaderSecret = Field(description="Bland API key, sent raw in the authorization header")
    #: the webhook signing secret (Bland dashboard, Account Settings → Keys); unset: no check
    webhook_secret: SecretStr | None = Field(
        None, description="webhook signing secret: verifies X-Webhook-Signature (unset: no check)"
    )


class BlandParams(CallParams):
    call_id: Uuid = Field(description="the call_id (UUID) Bland returned when the call was created")


class Bland(Provider[BlandSettings, BlandParams]):
    name = "bland"
    description = "Bland AI calls API (raw API key in `authorization`); answered_by refines completed"
    default_base_url = "https://api.bland.ai"
    Settings = BlandSettings
    Params = BlandParams
    status_key = "queue_status"
    status_map = STATUS_MAP
    cadence = {State.QUEUED: 3.0, State.DIALING: 3.0, State.IN_PROGRESS: 15.0, State.UNKNOWN: 10.0}
    #: Bland publishes call caps per plan, no read-request limit: a polite 5/s
    default_max_requests_per_second = 5.0

    def build_request(self, call: BlandParams) -> httpx.Request:
        return httpx.Request(
            "GET",
            self.url("v1", "calls", call.call_id),
            headers={"authorization": self.settings.api_key.get_secret_value(), "Accept": "application/json"},
        )

    def call_status(self, body: dict[str, Any]) -> CallStatus:
        """A body without `queue_status` (some webhooks) has its `status` as the raw status."""
        if "queue_status" not in body:
            body = {**body, "queue_status": body.get("status")}
        return super().call_status(body)

    def parse_body(self, body: dict[str, Any]) -> CallStatus:
        raw = body["queue_status"]
        error = body.get("error_message") if isinstance(body.get("error_message"), str) else None
        state, failure = self.refine(raw, body, error)
        created, started = parse_timestamp(body.get("created_at")), parse_timestamp(body.get("started_at"))
        talk = talk_seconds(body)
        live = state in (State.IN_PROGRESS, State.COMPLETED)
        ended = started + timedelta(seconds=talk) if state.terminal and live and started and talk is not None else None
        return CallStatus(
            state=state,
            provider_status=raw,
            reason=error if state.terminal and state is not State.COMPLETED else None,
            created_at=created,
            answered_at=started if live else None,
            ended_at=ended,
            duration_seconds=talk if state is State.COMPLETED else None,
            state_since=ended if state.terminal else started if state is State.IN_PROGRESS else None,
            failure_reason=failure,
            extras={k: body[k] for k in EXTRAS if isinstance(body.get(k), str)},
        )

    def refine(self, raw: str, body: dict[str, Any], error: str | None) -> tuple[State, FailureReason | None]:
        state = self.normalize(raw)
        if not state.terminal and body.get("completed") is True:
            state = State.COMPLETED
        if not state.terminal:
            return state, None
        status = body.get("status")
        if status in OUTCOMES:
            return OUTCOMES[status]
        if body.get("answered_by") == "no-answer":
            return State.NO_ANSWER, FailureReason.NO_ANSWER
        if state is State.FAILED or status == "failed":
            return State.FAILED, classify_failure(error) or FailureReason.OTHER
        return State.COMPLETED, None

    # -- webhooks --------------------------------------------------------------------------

    def parse_webhook(self, body: dict[str, Any]) -> ListedCall:
        if not isinstance(body.get("call_id"), str):
            raise ValueError("a Bland post-call webhook carries the call's `call_id` and `queue_status` or `status`")
        return ListedCall({"call_id": body["call_id"]}, self.call_status(body))

    def verify_webhook(self, request: httpx.Request) -> None:
        if self.settings.webhook_secret is None:
            return
        given = request.headers.get("x-webhook-signature")
        if not given:
            raise WebhookSignatureError("X-Webhook-Signature header is missing")
        key = self.settings.webhook_secret.get_secret_value().encode()
        if not hmac.compare_digest(hmac.new(key, request.content, hashlib.sha256).hexdigest(), given.strip().lower()):
            raise WebhookSignatureError("X-Webhook-Signature does not match the body (signed with another secret?)")


def talk_seconds(body: dict[str, Any]) -> float | None:
    """`corrected_duration` (seconds, a string) or else `call_length` (minutes); None if neither."""
    corrected, minutes = body.get("corrected_duration"), body.get("call_length")
    if isinstance(corrected, (str, int, float)) and not isinstance(corrected, bool) and str(corrected).strip():
        seconds = float(corrected)
    elif isinstance(minutes, (int, float)) and not isinstance(minutes, bool):
        seconds = minutes * 60.0
    elif minutes is None and corrected in (None, ""):
        return None
    else:
        raise ValueError("corrected_duration / call_length is not a number")
    if not 0 <= seconds < 1e7:
        raise ValueError("call duration out of range")
    return seconds


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(Bland)


@hookimpl
def register_fakes(register: Callable[[type], None]) -> None:
    from .fake import BlandFake

    register(BlandFake)
