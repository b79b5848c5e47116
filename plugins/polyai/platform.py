"""PolyAI platform outbound calling: `GET /v1/outbound-calling/{call_sid}/status`.

Source: docs/providers/reference/polyai-platform-outbound-calling.md. Header
`X-PolyAi-Auth-Token`; base `https://api.{us-1,uk-1,euw-1}.platform.polyai.app` from the
`region` setting unless the account sets `base_url`. Body `{"status", "reason"}`.

| raw status | normalized |
|---|---|
| queued | queued |
| calling | dialing (spans ringing and talking: PolyAI reports no answered state) |
| success | completed |
| failure | failed ("failed to connect or was not answered"; a `reason` refines it, see below) |

A failure's `reason` such as "call queueing: max timeout limit exceeded" refines the failure
reason (`queue_timeout`). The upper-case spellings of the Agents API (QUEUED, ...) are accepted
too. Errors: 400 (invalid call SID format) client error, 401 auth failure, 404 not found (the call does not
exist, or its status expired ~2 h after the call ended: `expired`), 500 retryable server error.
Cadence: the doc's "poll every 2-5 seconds during queued and calling".
"""

from __future__ import annotations

from typing import Literal

import httpx
from pydantic import Field

from outbound_call_exporter import CallParams, HeaderSecret, ProviderSettings

from .common import CallSid, OutcomeProvider, outcome_status_map

Region = Literal["us-1", "uk-1", "euw-1"]


class PlatformSettings(ProviderSettings):
    auth_token: HeaderSecret = Field(description="platform API token, sent as the X-PolyAi-Auth-Token header")
    region: Region = Field(
        "us-1",
        description="PolyAI platform region: picks the server "
        "https://api.{region}.platform.polyai.app unless base_url is set",
    )


class PlatformParams(CallParams):
    call_id: CallSid


class PolyAIPlatform(OutcomeProvider[PlatformSettings, PlatformParams]):
    name = "polyai_platform"
    description = "PolyAI platform outbound-calling status (X-PolyAi-Auth-Token; regions us-1, uk-1, euw-1)"
    default_base_url = "https://api.us-1.platform.polyai.app"
    Settings = PlatformSettings
    Params = PlatformParams
    status_map = outcome_status_map("queued", "calling", "success", "failure")
    credential = "auth_token"
    auth_header = "X-PolyAi-Auth-Token"
    region_url = "https://api.{region}.platform.polyai.app"

    def build_request(self, call: PlatformParams) -> httpx.Request:
        return self.get(self.url("v1", "outbound-calling", call.call_id, "status"))
