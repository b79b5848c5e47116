"""Telzino outbound calls: `GET /v1/agents/{agentId}/outbound-calls/{callId}`, Bearer token.

Status mapping (every documented value; see docs/providers/reference/telzino-outbound-calls.md):

| Telzino raw | normalized |
|---|---|
| queued, dispatching, dispatched | queued (dispatching/dispatched are internal steps before dialling) |
| dialing | dialing |
| in_progress | in_progress |
| completed | completed |
| no_answer | no_answer (after ~45 s of ringing) |
| busy | busy (includes rejected calls) |
| failed | failed |

The record's `created_at` / `answered_at` / `ended_at` (ISO 8601, µs, +00:00) are the
provider's clock: time to terminal and time to answer are measured on them. `duration` is
talk time. Telzino documents no polling cadence; the design's defaults apply.

Discovery and bulk status: `GET /v1/agents/{agentId}/outbound-calls?page&limit&status` (newest
first, ≤ 100 per page, one status filter) lists an agent's calls in the record's shape; a watch
scope is `{agent_id}`. The result webhook POSTed to `callback_url` carries the record's shape
(`id`, `status`, ...) and is parsed like a status response.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import httpx
from pydantic import Field

from outbound_call_exporter import (
    CallPage,
    CallParams,
    CallStatus,
    HeaderSecret,
    ListedCall,
    Provider,
    ProviderSettings,
    State,
    Uuid,
    hookimpl,
    parse_timestamp,
)

STATUS_MAP = {
    "queued": State.QUEUED,
    "dispatching": State.QUEUED,
    "dispatched": State.QUEUED,
    "dialing": State.DIALING,
    "in_progress": State.IN_PROGRESS,
    "completed": State.COMPLETED,
    "no_answer": State.NO_ANSWER,
    "busy": State.BUSY,
    "failed": State.FAILED,
}

#: record fields kept in the call's `extras` (the summary and context stay at Telzino)
EXTRAS = ("to_number", "error", "sip_status_code", "transcript_id", "callback_delivered", "request_metadata")


class TelzinoSettings(ProviderSettings):
    token: HeaderSecret = Field(description="Telzino API token, sent as Authorization: Bearer")
    agent_id: Uuid | None = Field(None, description="default agent (UUID) for calls that do not give one")


class TelzinoParams(CallParams):
    call_id: Uuid = Field(description="Telzino's call id, a UUID")
    agent_id: Uuid = Field(description="the agent (UUID) that placed the call: a path segment of the status URL")


class Telzino(Provider[TelzinoSettings, TelzinoParams]):
    name = "telzino"
    description = "Telzino outbound calls API (Bearer token)"
    default_base_url = "https://api.telzino.com"
    Settings = TelzinoSettings
    Params = TelzinoParams
    status_map = STATUS_MAP
    #: the number dialled, and the trigger's `metadata` echoed back: the `privacy` config decides
    destination_extras = frozenset({"to_number"})
    metadata_extras = frozenset({"request_metadata"})
    cadence = {State.QUEUED: 3.0, State.DIALING: 3.0, State.IN_PROGRESS: 15.0, State.UNKNOWN: 10.0}

    def build_request(self, call: TelzinoParams) -> httpx.Request:
        return httpx.Request(
            "GET", self.url("v1", "agents", call.agent_id, "outbound-calls", call.call_id), headers=self._headers()
        )

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.token.get_secret_value()}", "Accept": "application/json"}

    def parse_body(self, body: dict[str, Any]) -> CallStatus:
        raw = body["status"]
        state = self.normalize(raw)
        created = parse_timestamp(body.get("created_at"))
        answered = parse_timestamp(body.get("answered_at"))
        ended = parse_timestamp(body.get("ended_at"))
        # the provider's time for entering this status, where the record has one
        since = {"queued": created, "in_progress": answered}.get(raw, ended if state.terminal else None)
        duration = body.get("duration")
        sip = body.get("sip_status_code")
        error = body.get("error") if isinstance(body.get("error"), str) else None
        return CallStatus(
            state=state,
            provider_status=raw,
            reason=error,
            created_at=created,
            answered_at=answered,
            ended_at=ended,
            duration_seconds=float(duration) if isinstance(duration, (int, float)) else None,
            state_since=since,
            sip_status_code=sip if isinstance(sip, int) and not isinstance(sip, bool) else None,
            extras={k: body[k] for k in EXTRAS if body.get(k) is not None},
        )

    # -- discovery, bulk status, webhook ------------------------------------------------------

    scope_keys = frozenset({"agent_id"})
    list_status_filters = ("queued", "dispatching", "dispatched", "dialing", "in_progress")
    page_size = 100  # the documented maximum

    def build_list_request(self, scope: Mapping[str, str], page: int, status: str | None) -> httpx.Request:
        query = {"page": str(page), "limit": str(self.page_size)}
        if status is not None:
            query["status"] = status
        return httpx.Request(
            "GET", self.url("v1", "agents", scope["agent_id"], "outbound-calls", query=query), headers=self._headers()
        )

    def parse_list_response(self, scope: Mapping[str, str], response: httpx.Response) -> CallPage:
        return self.paged_calls(
            response,
            "data",
            lambda item: {"call_id": item["id"], "agent_id": item.get("agent_id") or scope["agent_id"]},
        )

    def parse_webhook(self, body: dict[str, Any]) -> ListedCall:
        if not isinstance(body.get("id"), str) or not isinstance(body.get("status"), str):
            raise ValueError("a Telzino result webhook carries the call's `id` and `status`")
        params: dict[str, Any] = {"call_id": body["id"]}
        if isinstance(body.get("agent_id"), str):
            params["agent_id"] = body["agent_id"]
        return ListedCall(params, self.call_status(body))


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(Telzino)


@hookimpl
def register_fakes(register: Callable[[type], None]) -> None:
    from .fake import TelzinoFake

    register(TelzinoFake)
