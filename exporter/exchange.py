"""Every provider request of one account, of any kind, counted in one place.

A status poll, a listing and a batch-progress request all go through `AccountExchange.send`:
request and error counters, latency, the account's health (up, and the pauses after
401/403/429) and its log lines. A plugin that fails on an answer is counted like an
unparseable answer, so a plugin bug never stops the account.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, TypeVar

import httpx

from .errors import PollError
from .health import AccountHealth
from .logs import AccountLog
from .metrics import AccountMetrics
from .model import ErrorReason
from .transport import Transport

log = logging.getLogger(__name__)
T = TypeVar("T")


class AccountExchange:
    """Sends one account's requests and keeps its books."""

    def __init__(
        self,
        name: str,
        provider_name: str,
        metrics: AccountMetrics,
        transport: Transport,
        health: AccountHealth,
        events: AccountLog,
        wall: Callable[[], float],
    ) -> None:
        self.name, self.provider_name = name, provider_name
        self.metrics, self.transport, self.health, self.events, self.wall = metrics, transport, health, events, wall

    async def send(self, build: Callable[[], httpx.Request], parse: Callable[[httpx.Response], T]) -> T:
        """Send one request and parse the answer; a failure is counted and raised as `PollError`."""
        started = time.perf_counter()
        self.metrics.requests.inc()
        try:
            try:
                result = parse(await self.transport.send(build()))
            finally:
                self.metrics.request_duration.observe(time.perf_counter() - started)
        except PollError as exc:
            self._failed(exc)
            raise
        except Exception as exc:  # a plugin bug must not stop the account
            log.warning(
                "account %s: plugin %s failed to handle a response: %s",
                self.name,
                self.provider_name,
                type(exc).__name__,
            )
            error = PollError(ErrorReason.INVALID_RESPONSE, type(exc).__name__)
            self._failed(error)
            raise error from None
        self.health.succeeded(self.wall())
        self.events.success()
        return result

    def _failed(self, exc: PollError) -> None:
        self.metrics.errors[exc.reason].inc()
        self.events.failure(exc.reason, str(exc))
        self.health.failed(exc, self.wall(), asyncio.get_running_loop().time())
