"""Fake PolyAI APIs, faithful to the three status docs: paths, auth headers, query, statuses
(and their case), bodies, error codes, 404 after the ~2 h retention.

They share a base: `OUT-` + UUID call SIDs, the documented 400 for a malformed call SID, and
error bodies carrying the doc's wording (the docs give no error body shape; `{"error": ...}`).
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import datetime, timezone
from typing import Any, ClassVar, Mapping

from aiohttp import web

from outbound_call_exporter import State
from outbound_call_exporter.testing import FakeCall, FakeProvider, Step

from .common import CALL_ID_RE

#: the one failure reason PolyAI documents (platform doc)
QUEUE_TIMEOUT = "call queueing: max timeout limit exceeded"


def iso(ts: float) -> str:
    """The docs' timestamp format: `2024-03-15T10:00:00Z`."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class PolyAIFake(FakeProvider):
    """What every PolyAI fake shares."""

    unauthorized_message: ClassVar[str] = "Unauthorized"
    not_found_message: ClassVar[str] = "Call SID not found"

    def add_call(
        self,
        call_id: str | None = None,
        steps: list[Step] | None = None,
        params: Mapping[str, str] | None = None,
        outcome: State = State.COMPLETED,
        **fields: Any,
    ) -> FakeCall:
        """As the base, but a generated id is a PolyAI call SID (`OUT-` + UUID)."""
        return super().add_call(call_id or f"OUT-{uuid.uuid4()}", steps, params, outcome, **fields)

    def not_found(self) -> web.Response:
        return web.json_response({"error": self.not_found_message}, status=404)

    def unauthorized(self) -> web.Response:
        return web.json_response({"error": self.unauthorized_message}, status=401)

    def problem(self, request: web.Request, call_id: str) -> str | None:
        """Why the request is a 400 (None when it is well formed)."""
        return None if CALL_ID_RE.fullmatch(call_id) else "Invalid call SID format"

    async def serve(self, request: web.Request, call_id: str, params: Mapping[str, str]) -> web.StreamResponse:
        """`serve_status`, except that an authenticated malformed request gets the doc's 400."""
        problem = self.problem(request, call_id)
        if problem is None or not self.authorized(request):
            return await self.serve_status(request, call_id, params)
        self.requests["status"] += 1
        self.requests[f"status:{call_id}"] += 1
        self.log.append((time.time(), request.path, 400))
        return web.json_response({"error": problem}, status=400)


class OutcomeFake(PolyAIFake):
    """Agents API and platform: `{"status", "reason"}`; calling spans ringing and talking."""

    def lifecycle(self, outcome: State, rng: random.Random | None = None) -> list[Step]:
        if outcome is State.FAILED:  # the documented failure: the call never left the queue
            rng = rng or self.rng
            return [Step(self.raw_status[State.QUEUED], 0.0), Step(self.raw_status[State.FAILED], rng.uniform(5, 30))]
        return super().lifecycle(outcome, rng)

    def terminal_fields(self, outcome: State) -> dict[str, Any]:
        return {"reason": QUEUE_TIMEOUT} if outcome is State.FAILED else {}

    def body(self, call: FakeCall, status: str) -> dict[str, Any]:
        return {"status": status, "reason": ""}

    def render(self, call: FakeCall, index: int, now: float) -> dict[str, Any]:
        record = self.body(call, call.steps[index].status)
        if index == len(call.steps) - 1:
            record.update(call.fields)
        return record


class AgentsFake(OutcomeFake):
    provider = "polyai_agents"
    raw_status = {
        State.QUEUED: "QUEUED",
        State.DIALING: "CALLING",
        State.IN_PROGRESS: "CALLING",
        State.COMPLETED: "SUCCESS",
        State.FAILED: "FAILURE",
    }
    unauthorized_message = "Unauthorized — missing or invalid API key."
    agent_id = "demo-agent"
    environment = "live"
    environments = ("sandbox", "pre-release", "live")

    def default_credentials(self) -> dict[str, str]:
        return {"api_key": "fake-polyai-agents-key"}

    def demo_settings(self) -> dict[str, Any]:
        return {**self.credentials, "agent_id": self.agent_id, "environment": self.environment}

    def new_params(self) -> dict[str, str]:
        return {"agent_id": self.agent_id, "environment": self.environment}

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/agents/{agent_id}/telephony/outbound-calls/{call_sid}/status", self._status)]

    async def _status(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        params = {"agent_id": m["agent_id"], "environment": request.query.get("environment", "")}
        return await self.serve(request, m["call_sid"], params)

    def problem(self, request: web.Request, call_id: str) -> str | None:
        if request.query.get("environment") not in self.environments:
            return "Invalid parameters — missing or invalid environment (sandbox, pre-release, live)."
        return super().problem(request, call_id)

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("X-API-KEY") == self.credentials["api_key"]

    def key(self, call_id: str, params: Mapping[str, str]) -> tuple[str, ...]:
        # the status is looked up in the environment the call was triggered in
        return (params.get("agent_id", ""), params.get("environment", ""), call_id)

    def body(self, call: FakeCall, status: str) -> dict[str, Any]:
        return {"callSid": call.call_id, "status": status, "reason": ""}


class PlatformFake(OutcomeFake):
    provider = "polyai_platform"
    raw_status = {
        State.QUEUED: "queued",
        State.DIALING: "calling",
        State.IN_PROGRESS: "calling",
        State.COMPLETED: "success",
        State.FAILED: "failure",
    }
    unauthorized_message = "Invalid or missing authentication token."

    def default_credentials(self) -> dict[str, str]:
        return {"auth_token": "fake-polyai-platform-token"}

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/outbound-calling/{call_sid}/status", self._status)]

    async def _status(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, request.match_info["call_sid"], {})

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("X-PolyAi-Auth-Token") == self.credentials["auth_token"]


class ConnectorFake(PolyAIFake):
    provider = "polyai_connector"
    raw_status = {
        State.QUEUED: "CREATED",
        State.DIALING: "ringing",
        State.IN_PROGRESS: "in-progress",
        State.COMPLETED: "completed",
        State.FAILED: "failed",
        State.NO_ANSWER: "no-answer",
        State.BUSY: "busy",
        State.CANCELLED: "cancelled",
    }
    pre_dial = ("queued",)
    unauthorized_message = "Invalid or missing connector ID."
    account_id = "your-account-id"
    project_id = "your-project-id"

    def default_credentials(self) -> dict[str, str]:
        return {"connector_id": "fake-polyai-connector-id"}

    def demo_settings(self) -> dict[str, Any]:
        return {**self.credentials, **self.new_params()}

    def new_params(self) -> dict[str, str]:
        return {"account_id": self.account_id, "project_id": self.project_id}

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/v1/{account_id}/{project_id}/outbound-call/status/{call_sid}", self._status)]

    async def _status(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        return await self.serve(request, m["call_sid"], {"account_id": m["account_id"], "project_id": m["project_id"]})

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("X-CONNECTOR-ID") == self.credentials["connector_id"]

    def key(self, call_id: str, params: Mapping[str, str]) -> tuple[str, ...]:
        return (params.get("account_id", ""), params.get("project_id", ""), call_id)

    def render(self, call: FakeCall, index: int, now: float) -> dict[str, Any]:
        at = [call.created + step.after / self.speed for step in call.steps[: index + 1]]
        record = {
            "call_sid": call.call_id,
            "account_id": call.params.get("account_id"),
            "project_id": call.params.get("project_id"),
            "client_env": "production",
            "connector_id": self.credentials["connector_id"],  # echoed, as the real API does
            "created_at": iso(call.created),
            "status": call.steps[index].status,
            "last_updated": iso(at[-1]),
            "event_history": [{step.status: iso(t)} for step, t in zip(call.steps, at)],
        }
        if index == len(call.steps) - 1:
            record.update(call.fields)
        return record
