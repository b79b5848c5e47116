"""What the three PolyAI status APIs share: call SIDs, cadence, auth, status/reason parsing.

PolyAI publishes three outbound-calling status APIs (see the package docstring). Their ids,
polling advice and the `status` + `reason` body of two of them are the same, so they live here
once; each API's module only says what differs (path, auth header, settings, status names).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Generic, Mapping, TypeVar

import httpx
from pydantic import AfterValidator, Field, SecretStr

from outbound_call_exporter import CallParams, CallStatus, Provider, ProviderSettings, State, parse_timestamp

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
#: PolyAI's docs disagree on ids: `OUT-` + UUID (status docs, current triggers) or a plain UUID
#: (the older platform trigger `/v1/outbound-calling/trigger`). Both, and nothing else.
CALL_ID_RE = re.compile(rf"(?:OUT-)?{_UUID}")  # always .fullmatch (`$` would allow a trailing newline)


def _call_id(value: str) -> str:
    if not CALL_ID_RE.fullmatch(value):
        raise ValueError("must be a PolyAI call SID: OUT- followed by a UUID, or a UUID")
    return value


CallSid = Annotated[str, AfterValidator(_call_id), Field(description="PolyAI call SID: OUT- + UUID, or a UUID")]
S = TypeVar("S", bound=ProviderSettings)
P = TypeVar("P", bound=CallParams)

#: every PolyAI doc: "poll every 2-5 seconds" while queued/ringing (calling), "every 10-30
#: seconds once in-progress"; unknown statuses are polled like in-progress ones
CADENCE: Mapping[State, float] = {State.QUEUED: 3.0, State.DIALING: 3.0, State.IN_PROGRESS: 15.0, State.UNKNOWN: 15.0}


def outcome_status_map(queued: str, calling: str, success: str, failure: str) -> dict[str, State]:
    """The Agents/platform vocabulary. It is the same service documented twice, in upper case
    (Agents API) and lower case (platform): both spellings are accepted by both plugins.

    CALLING/calling spans ringing *and* talking (PolyAI has no answered state): `dialing`.
    """
    names = {queued: State.QUEUED, calling: State.DIALING, success: State.COMPLETED, failure: State.FAILED}
    return {**names, **{k.swapcase(): v for k, v in names.items()}}


class PolyAIProvider(Provider[S, P], Generic[S, P]):
    """Base of the three: the docs' cadence, one credential in one header, regional servers."""

    cadence = CADENCE
    #: no PolyAI status body carries the number dialled or the trigger's metadata
    destination_extras: ClassVar[frozenset[str]] = frozenset()
    metadata_extras: ClassVar[frozenset[str]] = frozenset()
    #: the settings field holding the credential, and the header it is sent in
    credential: ClassVar[str]
    auth_header: ClassVar[str]
    #: the documented server as a template over the `region` setting (None: `default_base_url`)
    region_url: ClassVar[str | None] = None

    @classmethod
    def default_base_url_for(cls, settings: S) -> str:
        if cls.region_url is None:
            return cls.default_base_url
        return cls.region_url.format(**settings.model_dump(include={"region"}))

    def get(self, url: httpx.URL) -> httpx.Request:
        secret: SecretStr = getattr(self.settings, self.credential)
        return httpx.Request(
            "GET", url, headers={self.auth_header: secret.get_secret_value(), "Accept": "application/json"}
        )


class OutcomeProvider(PolyAIProvider[S, P], Generic[S, P]):
    """Base of the APIs that answer `{"status": ..., "reason": ...}` (Agents API, platform).

    `reason` is free text, usually empty except for failures; the host refines a `failure` into
    a bounded failure reason from it (the state stays `failed`). One published variant adds ISO
    8601 `created_at` / `last_updated`: used when present.
    """

    def parse_body(self, body: dict[str, Any]) -> CallStatus:
        raw = body["status"]
        state = self.normalize(raw)
        reason = body.get("reason") if isinstance(body.get("reason"), str) else None
        created = parse_timestamp(body.get("created_at"))
        updated = parse_timestamp(body.get("last_updated"))
        return CallStatus(
            state=state,
            provider_status=raw,
            reason=reason or None,
            created_at=created,
            ended_at=updated if state.terminal else None,
            state_since=updated,
        )
