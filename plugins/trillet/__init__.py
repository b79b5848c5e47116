"""Trillet batch calls: `GET /v1/api/batch-calls/{batchId}/calls/{jobId}`, `x-api-key` + `x-workspace-id`.

One job of a batch is one outbound call; its id is the `jobId` (our `call_id`) and the batch id
is a per-call param (`batch_id`, defaulting to the account's `settings.batch_id`).

Status mapping (every documented value; see docs/providers/reference/trillet-batch-calls.md):

| Trillet raw | normalized |
|---|---|
| waiting | queued (in the batch's queue, not yet dialled) |
| active | in_progress (covers both ringing and talking: Trillet does not tell them apart) |
| completed | completed |
| failed | failed (busy / no answer / ... only in the `error` text: see below) |
| not_found (a 404 body, or a body with `"status": "not_found"`) | a not-found error: a job seen before expires |

Decisions:
- `failed` stays `failed`; its `error` text ("Number busy - unable to connect after 3
  attempts") is the `reason`, which the host classifies into `CallStatus.failure_reason` (busy,
  no_answer, unreachable, ... other), the bounded `reason` of `outbound_call_failures_total`.
- Times are the provider's clock, epoch milliseconds: `startTime` is when the job entered
  `active` (the `active` history entry's time), `endTime` is `ended_at` and the terminal
  entry's time. The job's creation time is not in the response (`startTime` is the dial, not
  the queueing), so `created_at` stays null and time to terminal runs from registration.
- `duration` (seconds, completed calls) is the talk time. Trillet gives no answer timestamp, so
  `answered_at` is derived as `endTime - duration` for a completed call; time to answer is not
  reported (there is no creation time to measure it from).
- Kept in `extras`: `phone_number`, `error`, `result.callId` (links to call history) and
  `result.outcome`; the transcript and the caller's metadata stay at Trillet. Should Trillet
  echo the api key in `error`, it is replaced by `[redacted]` (the record's `reason` is not
  scrubbed by the host).
- Trillet documents no polling cadence. Its developer plan allows 60 requests/minute per key,
  so the default cadence is gentle: waiting 10 s, active 10 s, unknown 30 s (`dialing` is never
  reported; 5 s). Timings come from the provider's clock, so a slower poll costs freshness, not
  accuracy. The account's `max_requests_per_second` defaults to 1 (the developer plan's 60/min).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import httpx
from pydantic import Field

from outbound_call_exporter import (
    BatchProgress,
    CallPage,
    CallParams,
    CallStatus,
    ErrorReason,
    HeaderSecret,
    PathSegment,
    PollError,
    Provider,
    ProviderSettings,
    State,
    hookimpl,
    number_field,
    parse_timestamp,
)

STATUS_MAP = {
    "waiting": State.QUEUED,
    "active": State.IN_PROGRESS,
    "completed": State.COMPLETED,
    "failed": State.FAILED,
}
#: the body's `status` when the job does not exist (doc: "Error Responses")
NOT_FOUND_STATUS = "not_found"
#: top-level fields kept in `extras` (plus `error`, redacted); of `result`, only these
EXTRAS = ("phone_number",)
RESULT_EXTRAS = ("callId", "outcome")


class TrilletSettings(ProviderSettings):
    api_key: HeaderSecret = Field(description="Trillet API key, sent as the x-api-key header")
    workspace_id: PathSegment = Field(description="Trillet workspace id, sent as the x-workspace-id header")
    batch_id: PathSegment | None = Field(None, description="default batch id for jobs that do not give one")


class TrilletParams(CallParams):
    """`call_id` is the job id (e.g. `call_123`); `batch_id` the batch (e.g. `batch_7891011121314`)."""

    call_id: PathSegment = Field(description="the job id within its batch (e.g. call_123)")
    batch_id: PathSegment = Field(description="the batch the job belongs to (a path segment of the status URL)")


class Trillet(Provider[TrilletSettings, TrilletParams]):
    name = "trillet"
    description = "Trillet batch calls: status of one job of a batch (x-api-key + x-workspace-id)"
    default_base_url = "https://api.trillet.ai"
    Settings = TrilletSettings
    Params = TrilletParams
    status_map = STATUS_MAP
    #: the number dialled (masked by default); `result.metadata` (the CSV's columns) is never kept
    destination_extras = frozenset({"phone_number"})
    cadence = {State.QUEUED: 10.0, State.DIALING: 5.0, State.IN_PROGRESS: 10.0, State.UNKNOWN: 30.0}
    #: the developer plan's limit: 60 requests per minute (docs/providers/reference/provider-facts.md)
    default_max_requests_per_second = 1.0

    def build_request(self, call: TrilletParams) -> httpx.Request:
        return httpx.Request(
            "GET", self.url("v1", "api", "batch-calls", call.batch_id, "calls", call.call_id), headers=self._headers()
        )

    def _headers(self) -> dict[str, str]:
        return {
            "x-api-key": self.settings.api_key.get_secret_value(),
            "x-workspace-id": self.settings.workspace_id,
            "Accept": "application/json",
        }

    # -- discovery, bulk status, batch progress ---------------------------------------------

    scope_keys = frozenset({"batch_id"})
    list_status_filters = ("waiting", "active")
    scope_includes_past = True  # a batch scope watches every job of the batch
    page_size = 100  # the documented maximum

    def build_list_request(self, scope: Mapping[str, str], page: int, status: str | None) -> httpx.Request:
        query = {"page": str(page), "limit": str(self.page_size), "status": status or "all"}
        return httpx.Request(
            "GET",
            self.url("v1", "api", "batch-calls", scope["batch_id"], "calls", query=query),
            headers=self._headers(),
        )

    def parse_list_response(self, scope: Mapping[str, str], response: httpx.Response) -> CallPage:
        return self.paged_calls(
            response, "calls", lambda item: {"call_id": item["jobId"], "batch_id": scope["batch_id"]}
        )

    def build_progress_request(self, scope: Mapping[str, str]) -> httpx.Request:
        return httpx.Request(
            "GET", self.url("v1", "api", "batch-calls", scope["batch_id"], "status"), headers=self._headers()
        )

    def parse_progress_response(self, scope: Mapping[str, str], response: httpx.Response) -> BatchProgress:
        self.raise_for_status(response)
        body = self.json_object(response)
        counts = {k: body[k] for k in PROGRESS_COUNTERS}
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts.values()):
            raise ValueError("batch progress counters must be integers")
        return BatchProgress(counts, complete=body.get("isComplete") is True)

    def parse_response(self, call: TrilletParams, response: httpx.Response) -> CallStatus:
        self.raise_for_status(response)  # 404, with or without the not_found body, is not-found
        body = self.json_object(response)
        if body.get("status") == NOT_FOUND_STATUS:
            raise PollError(
                ErrorReason.NOT_FOUND,
                f"HTTP {response.status_code} from {response.request.url.path}: "
                f"job not found (status {NOT_FOUND_STATUS!r})",
            )
        return self.call_status(body)

    def parse_body(self, body: dict[str, Any]) -> CallStatus:
        raw = body["status"]
        state = self.normalize(raw)
        started = parse_timestamp(number_field(body, "startTime"))
        ended = parse_timestamp(number_field(body, "endTime"))
        duration = number_field(body, "duration")
        text = body.get("error")
        error = self._redact(text) if isinstance(text, str) else None
        answered = None
        if state is State.COMPLETED and ended is not None and duration is not None:
            answered = parse_timestamp(ended.timestamp() - duration)
        result = body.get("result")
        if not isinstance(result, dict):
            result = {}
        extras: dict[str, Any] = {k: body[k] for k in EXTRAS if body.get(k) is not None}
        if error is not None:
            extras["error"] = error
        kept = {k: result[k] for k in RESULT_EXTRAS if result.get(k) is not None}
        if kept:
            extras["result"] = kept
        return CallStatus(
            state=state,
            provider_status=raw,
            reason=error,
            answered_at=answered,
            ended_at=ended,
            duration_seconds=float(duration) if duration is not None else None,
            state_since=ended if state.terminal else started if state is State.IN_PROGRESS else None,
            extras=extras,
        )

    def _redact(self, text: str) -> str:
        """The host scrubs secrets from `extras` but not from `reason`: never pass the key on."""
        key = self.settings.api_key.get_secret_value()
        return text.replace(key, "[redacted]") if key else text


#: the job counters of `GET /v1/api/batch-calls/{batchId}/status`
PROGRESS_COUNTERS = ("waiting", "active", "completed", "failed")


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(Trillet)


@hookimpl
def register_fakes(register: Callable[[type], None]) -> None:
    from .fake import TrilletFake

    register(TrilletFake)
