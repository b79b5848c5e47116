"""PolyAI connector API: `GET /api/v1/{account_id}/{project_id}/outbound-call/status/{call_sid}`.

Source: docs/providers/reference/polyai-connector-outbound-call.md. Header `X-CONNECTOR-ID`
(the secret). The doc names no regional host: the default base URL is its example's
`https://api.us-1.platform.polyai.app`; other regions set the account's `base_url`.

| raw status | normalized |
|---|---|
| CREATED | queued (the call record exists) |
| queued | queued |
| ringing | dialing |
| in-progress | in_progress (connected: its event time is the answer time) |
| completed | completed |
| failed | failed |
| no-answer | no_answer |
| busy | busy |
| cancelled | cancelled |

Statuses are matched exactly as documented (mixed case). `event_history` — a list of
`{"<status>": "<ISO 8601>"}` objects in the doc's example, or `{"status", "timestamp"}` objects
as its prose puts it (both accepted) — becomes the call's history on the provider's clock:
time to answer is `in-progress` minus `created_at`, time to terminal ends at the terminal event,
and talk time is the terminal event minus `in-progress`. `created_at` / `last_updated` are used
when the history lacks an entry. The body echoes `connector_id`, the credential: it is never
kept (only `client_env` goes to extras). Errors: 400 client error, 401 auth failure, 404 not
found (unknown, other connector, or expired ~2 h after the call ended), 500 retryable — the
host's common HTTP semantics.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

import httpx
from pydantic import Field

from outbound_call_exporter import (
    CallParams,
    CallStatus,
    Event,
    HeaderSecret,
    PathSegment,
    ProviderSettings,
    State,
    parse_timestamp,
)

from .common import CallSid, PolyAIProvider

STATUS_MAP = {
    "CREATED": State.QUEUED,
    "queued": State.QUEUED,
    "ringing": State.DIALING,
    "in-progress": State.IN_PROGRESS,
    "completed": State.COMPLETED,
    "failed": State.FAILED,
    "no-answer": State.NO_ANSWER,
    "busy": State.BUSY,
    "cancelled": State.CANCELLED,
}

#: body fields kept in extras; never `connector_id` (the secret, echoed in every body)
EXTRAS = ("client_env",)


class ConnectorSettings(ProviderSettings):
    connector_id: HeaderSecret = Field(
        description="connector id, sent as the X-CONNECTOR-ID header (a secret: dropped from every stored status body)"
    )
    account_id: PathSegment | None = Field(None, description="default PolyAI account id for calls that do not give one")
    project_id: PathSegment | None = Field(None, description="default PolyAI project id for calls that do not give one")


class ConnectorParams(CallParams):
    call_id: CallSid
    account_id: PathSegment = Field(description="the PolyAI account of the call (a path segment of the status URL)")
    project_id: PathSegment = Field(description="the PolyAI project of the call (a path segment of the status URL)")


def _event_item(item: Any) -> tuple[Any, Any]:
    """(status, timestamp) of one `event_history` entry, in either documented shape."""
    if isinstance(item, Mapping):
        if "status" in item and "timestamp" in item:
            return item["status"], item["timestamp"]
        if len(item) == 1:
            return next(iter(item.items()))
    raise ValueError("event_history entry is neither {status: timestamp} nor {status, timestamp}")


class PolyAIConnector(PolyAIProvider[ConnectorSettings, ConnectorParams]):
    name = "polyai_connector"
    description = "PolyAI connector outbound call status with event history (X-CONNECTOR-ID)"
    default_base_url = "https://api.us-1.platform.polyai.app"
    Settings = ConnectorSettings
    Params = ConnectorParams
    status_map = STATUS_MAP
    credential = "connector_id"
    auth_header = "X-CONNECTOR-ID"

    def build_request(self, call: ConnectorParams) -> httpx.Request:
        return self.get(
            self.url("api", "v1", call.account_id, call.project_id, "outbound-call", "status", call.call_id)
        )

    def events(self, history: Any) -> tuple[Event, ...]:
        if history is None:
            return ()
        if not isinstance(history, list):
            raise ValueError("event_history is not a list")
        events = []
        for item in history:
            raw, at = _event_item(item)
            if not isinstance(raw, str):
                raise ValueError("event_history status is not a string")
            events.append(Event(self.normalize(raw), raw, parse_timestamp(at)))
        return tuple(events)

    def parse_body(self, body: dict[str, Any]) -> CallStatus:
        raw = body["status"]
        state = self.normalize(raw)
        events = self.events(body.get("event_history"))
        updated = parse_timestamp(body.get("last_updated"))
        created = parse_timestamp(body.get("created_at")) or (events[0].at if events else None)
        answered = next((e.at for e in events if e.state is State.IN_PROGRESS), None)
        since = next((e.at for e in reversed(events) if e.provider_status == raw and e.at), None) or updated
        ended = since if state.terminal else None
        return CallStatus(
            state=state,
            provider_status=raw,
            created_at=created,
            answered_at=answered,
            ended_at=ended,
            duration_seconds=_seconds(ended, answered),
            state_since=since,
            events=events,
            extras={k: body[k] for k in EXTRAS if body.get(k) not in (None, "")},
        )


def _seconds(end: datetime | None, start: datetime | None) -> float | None:
    return max(0.0, (end - start).total_seconds()) if end and start else None
