"""Vapi calls: `GET https://api.vapi.ai/call/{id}`, `Authorization: Bearer <api key>`.

Status mapping (Vapi's OpenAPI `Call.status`, every value; docs/providers/vapi.md):

| Vapi `status` | normalized |
|---|---|
| scheduled, queued | queued |
| ringing | dialing |
| in-progress, forwarding | in_progress (forwarding: the call is being transferred, still live) |
| ended | by `endedReason` (`reasons.classify`): completed, failed, busy, no_answer or cancelled |
| deletion-failed | as `ended` (a delete is only tried on a finished call; its outcome is still in `endedReason`) |
| not-found | not a status: a not-found poll error, so a call seen before becomes `expired` |

Times are Vapi's ISO 8601 `createdAt` / `startedAt` / `endedAt`; `startedAt` is when the call
went live, so it is the answer time of an answered call and talk time is `endedAt - startedAt`
(Vapi has no duration field). Discovery lists `GET /call?assistantId=|phoneNumberId=` with
`createdAtGt`; Vapi has no page parameter, so a full page continues from its oldest call
(`createdAtLe`, the host's cursor). Result webhooks are Vapi's server-URL messages
`status-update` and `end-of-call-report`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import httpx
from pydantic import Field

from outbound_call_exporter import (
    CallPage,
    CallParams,
    CallStatus,
    ErrorReason,
    HeaderSecret,
    ListedCall,
    PollError,
    Provider,
    ProviderSettings,
    State,
    Uuid,
    hookimpl,
    parse_timestamp,
)

from .reasons import classify, sip_code

STATUS_MAP = {
    "scheduled": State.QUEUED,
    "queued": State.QUEUED,
    "ringing": State.DIALING,
    "in-progress": State.IN_PROGRESS,
    "forwarding": State.IN_PROGRESS,
    "ended": State.COMPLETED,  # refined by endedReason
    "deletion-failed": State.COMPLETED,  # likewise
}
#: `status` of a call Vapi no longer knows
NOT_FOUND_STATUS = "not-found"
#: record fields kept in `extras` (transcripts, messages, costs and the customer stay at Vapi)
EXTRAS = ("type", "endedReason", "assistantId", "phoneNumberId", "campaignId")
#: calls per listing: an ended Call object carries its messages and transcript (tens of KB), so a
#: page stays well inside the host's default `max_response_bytes` (1 MiB); Vapi allows up to 1000
LIST_LIMIT = 10


class VapiSettings(ProviderSettings):
    api_key: HeaderSecret = Field(description="Vapi private API key, sent as Authorization: Bearer")


class VapiParams(CallParams):
    """`call_id` is the call's UUID; `assistant_id` / `phone_number_id` only tie it to a scope."""

    call_id: Uuid = Field(description="the call's UUID returned when it was created")
    assistant_id: Uuid | None = Field(
        None, description="the assistant (UUID) that placed the call: ties it to an assistant scope"
    )
    phone_number_id: Uuid | None = Field(
        None, description="the phone number (UUID) it was placed from: ties it to a phone-number scope"
    )


class Vapi(Provider[VapiSettings, VapiParams]):
    name = "vapi"
    description = "Vapi calls API (Bearer API key); endedReason refines `ended`"
    default_base_url = "https://api.vapi.ai"
    Settings = VapiSettings
    Params = VapiParams
    status_map = STATUS_MAP
    cadence = {State.QUEUED: 3.0, State.DIALING: 3.0, State.IN_PROGRESS: 15.0, State.UNKNOWN: 10.0}
    #: Vapi publishes no API request limit (it is per organisation): a polite 5/s
    default_max_requests_per_second = 5.0

    def build_request(self, call: VapiParams) -> httpx.Request:
        return httpx.Request("GET", self.url("call", call.call_id), headers=self._headers())

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.api_key.get_secret_value()}", "Accept": "application/json"}

    def parse_response(self, call: VapiParams, response: httpx.Response) -> CallStatus:
        self.raise_for_status(response)
        body = self.json_object(response)
        if body.get("status") == NOT_FOUND_STATUS:
            raise PollError(ErrorReason.NOT_FOUND, f"call not found (status {NOT_FOUND_STATUS!r})")
        return self.call_status(body)

    def parse_body(self, body: dict[str, Any]) -> CallStatus:
        raw = body["status"]
        reason = body.get("endedReason") if isinstance(body.get("endedReason"), str) else None
        state, failure = self.normalize(raw), None
        if state is State.COMPLETED:
            state, failure = classify(reason)
        created, started, ended = (parse_timestamp(body.get(k)) for k in ("createdAt", "startedAt", "endedAt"))
        answered = started if state in (State.IN_PROGRESS, State.COMPLETED) else None
        talk = (ended - started).total_seconds() if state is State.COMPLETED and started and ended else None
        return CallStatus(
            state=state,
            provider_status=raw,
            reason=reason if state.terminal else None,
            created_at=created,
            answered_at=answered,
            ended_at=ended if state.terminal else None,
            duration_seconds=max(0.0, talk) if talk is not None else None,
            state_since=ended if state.terminal else started if state is State.IN_PROGRESS else None,
            failure_reason=failure,
            sip_status_code=sip_code(reason) if reason and state.terminal else None,
            extras={k: body[k] for k in EXTRAS if isinstance(body.get(k), str)},
        )

    # -- discovery and webhooks --------------------------------------------------------------

    scope_keys = frozenset({"assistant_id", "phone_number_id"})
    list_filters_created_after = True

    def build_list_request(
        self,
        scope: Mapping[str, str],
        page: int,
        status: str | None,
        created_after: datetime | None = None,
        cursor: str | None = None,
    ) -> httpx.Request:
        """`GET /call` of the scope's assistant or phone number, created after the bound and (pages
        after the first) up to the previous page's oldest call: Vapi has no page parameter."""
        [(key, value)] = scope.items()
        query = {"assistantId" if key == "assistant_id" else "phoneNumberId": value, "limit": str(LIST_LIMIT)}
        if created_after is not None:
            query["createdAtGt"] = created_after.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
        if cursor is not None:  # inclusive, so calls created in the same millisecond are not skipped,
            # unless a whole page shared that millisecond: then past it (`<` marks the cursor)
            query["createdAtLt" if cursor.startswith("<") else "createdAtLe"] = cursor.removeprefix("<")
        return httpx.Request("GET", self.url("call", query=query), headers=self._headers())

    def parse_list_response(self, scope: Mapping[str, str], response: httpx.Response) -> CallPage:
        """A plain JSON array of Call objects, newest first; a full one continues from its oldest."""
        self.raise_for_status(response)
        try:
            items = json.loads(response.content)
        except (ValueError, RecursionError) as exc:
            raise PollError(ErrorReason.INVALID_RESPONSE, f"body is not JSON: {type(exc).__name__}") from None
        if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("id"), str) for i in items):
            raise PollError(ErrorReason.INVALID_RESPONSE, "a call list is a JSON array of calls with an `id`")
        [(key, value)] = scope.items()
        calls = tuple(ListedCall({"call_id": i["id"], key: value}, self.call_status(i)) for i in items)
        created = [(c.status.created_at, i["createdAt"]) for c, i in zip(calls, items) if c.status.created_at]
        oldest = min(created)[1] if created else None
        if len(items) < LIST_LIMIT or oldest is None:
            return CallPage(calls, has_next=False)
        # a full page goes on from its oldest call; one that all shares the bound it asked for, past it
        stuck = oldest == _request_param(response, "createdAtLe")
        return CallPage(calls, has_next=True, next_cursor=f"<{oldest}" if stuck else oldest)

    def parse_webhook(self, body: dict[str, Any]) -> ListedCall:
        """A server-URL message: `status-update` (its `status`) or `end-of-call-report` (ended)."""
        message = body.get("message")
        if not isinstance(message, dict) or message.get("type") not in ("status-update", "end-of-call-report"):
            raise ValueError(
                'a Vapi result webhook is {"message": {"type": "status-update" or "end-of-call-report", "call": {...}}}'
            )
        call = message.get("call")
        if not isinstance(call, dict) or not isinstance(call.get("id"), str):
            raise ValueError("message.call.id is missing")
        status = message.get("status") if message["type"] == "status-update" else "ended"
        if not isinstance(status, str) or status == NOT_FOUND_STATUS:
            raise ValueError("message.status is missing or not a call status")
        record = {**call, "status": status}
        for key in ("endedReason", "startedAt", "endedAt"):
            if isinstance(message.get(key), str):
                record[key] = message[key]
        return ListedCall({"call_id": call["id"]}, self.call_status(record))


def _request_param(response: httpx.Response, name: str) -> str | None:
    try:
        return response.request.url.params.get(name)
    except RuntimeError:  # a response built without its request
        return None


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(Vapi)


@hookimpl
def register_fakes(register: Callable[[type], None]) -> None:
    from .fake import VapiFake

    register(VapiFake)
