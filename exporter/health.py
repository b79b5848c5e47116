"""Account health, pauses and backoff: whether an account is up, and how long all its requests wait.

A 401/403 pauses the whole account with exponential backoff (and `account_up` drops to 0 at
once); a 429 pauses it for its `Retry-After`, or with backoff over episodes without one. The
account is also down once every request has failed for `DOWN_AFTER_SECONDS`; failures that are
about one call (404, 429, other 4xx) do not count. A pause grows with consecutive episodes, not
with answers: the answers of requests already in flight when the account paused belong to the
same episode.
"""

from __future__ import annotations

import logging
import random

from .errors import PollError
from .model import ErrorReason

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 300.0
AUTH_BACKOFF_BASE_SECONDS = 5.0
#: account_up drops to 0 when every request has failed for this long (auth failures: at once)
DOWN_AFTER_SECONDS = 60.0
#: failures that do not say anything about the account's health
_CALL_LEVEL = frozenset({ErrorReason.NOT_FOUND, ErrorReason.CLIENT_ERROR, ErrorReason.RATE_LIMITED})
PAUSING = frozenset({ErrorReason.UNAUTHORIZED, ErrorReason.RATE_LIMITED})


def backoff(attempt: int, base: float, cap: float = MAX_BACKOFF_SECONDS) -> float:
    """Exponential backoff with full jitter, added to the normal interval `base`."""
    return base + random.uniform(0, min(cap, base * 2 ** min(attempt, 20)))


class AccountHealth:
    """One account's health (read by the collector) and its pause (read by the dispatcher)."""

    def __init__(self, name: str, throttle_base: float) -> None:
        self.name = name
        self.throttle_base = throttle_base  # the base of a 429 pause without Retry-After
        self.paused_until = 0.0  # loop time
        self.last_success = 0.0  # wall time
        self._auth_failures = 0
        self._throttled = 0  # consecutive 429 episodes without Retry-After
        self._failing_since: float | None = None  # wall time of the first failure in a row

    def up(self, now: float) -> bool:
        if self._auth_failures:
            return False
        return self._failing_since is None or now - self._failing_since < DOWN_AFTER_SECONDS

    def succeeded(self, now: float) -> None:
        self.last_success = now
        self._auth_failures = 0
        self._throttled = 0
        self._failing_since = None

    def failed(self, exc: PollError, now: float, loop_now: float) -> None:
        """A failed request: the account's health, and the pause a 401/403 or 429 calls for."""
        reason = exc.reason
        if reason not in _CALL_LEVEL and self._failing_since is None:
            self._failing_since = now
        if reason not in PAUSING or loop_now < self.paused_until:  # no pause, or the same episode
            return
        if reason is ErrorReason.UNAUTHORIZED:
            self._auth_failures += 1
            pause = backoff(self._auth_failures, AUTH_BACKOFF_BASE_SECONDS)
            log.warning("account %s: credentials refused (%s); pausing all requests for %.0fs", self.name, exc, pause)
        elif exc.retry_after is not None:
            pause = exc.retry_after
        else:
            self._throttled += 1
            pause = backoff(self._throttled, self.throttle_base)
        self.paused_until = loop_now + pause

    def pause_left(self, loop_now: float) -> float:
        return max(0.0, self.paused_until - loop_now)
