"""PolyAI Agents API v1: `GET /v1/agents/{agentId}/telephony/outbound-calls/{callSid}/status`.

Source: docs/providers/reference/polyai-agents-api-v1.openapi.md. Header `X-API-KEY`; query
`environment` (required: sandbox, pre-release or live, the one the call was triggered in);
servers `https://api.{us,eu,uk,studio}.poly.ai`, picked by the `region` setting unless the
account sets `base_url`. Body `{"callSid", "status", "reason"}`, no timestamps.

| raw status | normalized |
|---|---|
| QUEUED | queued |
| CALLING | dialing (spans ringing and talking: PolyAI reports no answered state) |
| SUCCESS | completed (not evidence that a human answered) |
| FAILURE | failed ("failed to connect or not answered"; `reason` refines the failure reason) |

The lower-case spellings of the platform doc (queued, calling, success, failure) are accepted
too. Errors: 400 (missing environment, invalid call SID, no connector) is a client error, 401
and 403 are auth failures, 502 "retry with exponential backoff" is a retryable server error —
the host's common HTTP semantics, so no override. 404 is not documented; after the ~2 h
retention it is taken as the call having expired, like the other PolyAI APIs.
"""

from __future__ import annotations

from typing import Literal

import httpx
from pydantic import Field

from outbound_call_exporter import CallParams, HeaderSecret, PathSegment, ProviderSettings

from .common import CallSid, OutcomeProvider, outcome_status_map

Region = Literal["us", "eu", "uk", "studio"]
Environment = Literal["sandbox", "pre-release", "live"]


class AgentsSettings(ProviderSettings):
    api_key: HeaderSecret = Field(description="Agents API key, sent as the X-API-KEY header")
    region: Region = Field(
        "us", description="PolyAI region: picks the server https://api.{region}.poly.ai unless base_url is set"
    )
    environment: Environment | None = Field(
        None, description="default environment calls are triggered in (sandbox, pre-release, live)"
    )
    agent_id: PathSegment | None = Field(None, description="default agent id for calls that do not give one")


class AgentsParams(CallParams):
    call_id: CallSid
    agent_id: PathSegment = Field(description="the agent that placed the call (a path segment of the status URL)")
    environment: Environment = Field(description="the environment the call was triggered in: its status lives there")


class PolyAIAgents(OutcomeProvider[AgentsSettings, AgentsParams]):
    name = "polyai_agents"
    description = "PolyAI Agents API v1 outbound call status (X-API-KEY; regions us, eu, uk, studio)"
    default_base_url = "https://api.us.poly.ai"
    Settings = AgentsSettings
    Params = AgentsParams
    status_map = outcome_status_map("QUEUED", "CALLING", "SUCCESS", "FAILURE")
    credential = "api_key"
    auth_header = "X-API-KEY"
    region_url = "https://api.{region}.poly.ai"

    def build_request(self, call: AgentsParams) -> httpx.Request:
        return self.get(
            self.url(
                "v1",
                "agents",
                call.agent_id,
                "telephony",
                "outbound-calls",
                call.call_id,
                "status",
                query={"environment": call.environment},
            )
        )
