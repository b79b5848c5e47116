"""PolyAI's three outbound-call status APIs, one plugin each, sharing what they have in common.

- `polyai_agents` (`agents.py`): Agents API v1, `X-API-KEY`, regions us/eu/uk/studio,
  `environment` query parameter; statuses QUEUED, CALLING, SUCCESS, FAILURE + `reason`.
- `polyai_platform` (`platform.py`): platform outbound calling, `X-PolyAi-Auth-Token`, regions
  us-1/uk-1/euw-1; statuses queued, calling, success, failure + `reason`.
- `polyai_connector` (`connector.py`): connector API, `X-CONNECTOR-ID`, account and project in
  the path; nine statuses and an `event_history` on the provider's clock.

Call SIDs are `OUT-` + UUID or a plain UUID (the docs disagree; both are accepted, nothing
else). Status data is retained ~2 h after a call ends, then 404: the call is `expired`.
Each module's docstring has its status mapping table; docs/providers/polyai.md has them all.
"""

from __future__ import annotations

from typing import Callable

from outbound_call_exporter import hookimpl

from .agents import PolyAIAgents
from .connector import PolyAIConnector
from .platform import PolyAIPlatform

PROVIDERS = (PolyAIAgents, PolyAIPlatform, PolyAIConnector)


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    for provider in PROVIDERS:
        register(provider)


@hookimpl
def register_fakes(register: Callable[[type], None]) -> None:
    from .fakes import AgentsFake, ConnectorFake, PlatformFake

    for fake in (AgentsFake, PlatformFake, ConnectorFake):
        register(fake)
