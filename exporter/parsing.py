"""Parsing helpers plugins call: provider timestamps and durations, `Retry-After`, free-text failure
reasons, an answer time derived from the end and the talk time."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Mapping

from .model import FailureReason, State


def parse_timestamp(value: Any) -> datetime | None:
    """A provider timestamp (ISO 8601 string, or epoch seconds/milliseconds) as aware UTC.

    Numbers above 10^11 are taken as milliseconds (10^11 s is the year 5138). Returns None
    for null/empty; raises ValueError for anything else, which the host counts as an
    invalid response.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("timestamp is a boolean")
    if isinstance(value, (int, float)):
        seconds = value / 1000 if abs(value) >= 1e11 else value
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(timezone.utc)
    raise ValueError(f"timestamp of type {type(value).__name__}")


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


_FAILURE_PATTERNS: tuple[tuple[FailureReason, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern, re.IGNORECASE))
    for reason, pattern in (
        (FailureReason.BUSY, r"\bbusy\b"),
        (FailureReason.NO_ANSWER, r"no[ -_]?answer|not answered|unanswered|did not answer|didn't answer"),
        (FailureReason.QUEUE_TIMEOUT, r"queu\w*.*time ?out|max(imum)? timeout"),
        (FailureReason.REJECTED, r"reject|declin"),
        (
            FailureReason.UNREACHABLE,
            r"unreachable|invalid (phone )?number|not in service|unallocated|"
            r"does not exist|unable to connect|failed to connect",
        ),
        (FailureReason.CANCELLED, r"cancel"),
    )
)


def classify_failure(text: str | None) -> FailureReason | None:
    """Map a provider's free-text failure reason onto `FailureReason` (None for empty text).

    Order matters: "Number busy - unable to connect after 3 attempts" is busy, not unreachable.
    """
    if not text:
        return None
    for reason, pattern in _FAILURE_PATTERNS:
        if pattern.search(text):
            return reason
    return FailureReason.OTHER


def parse_duration(value: Any) -> float | None:
    """A provider's duration in seconds: a number or a numeric string (Twilio and Vonage send
    `"15"`); None for null/empty, ValueError for anything else or out of range."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("duration is not a number of seconds")
    seconds = float(value)
    if not 0 <= seconds < 10**7:  # also refuses nan and inf
        raise ValueError("duration out of range")
    return seconds


def answered_before_end(state: State, ended: datetime | None, duration: float | None) -> datetime | None:
    """When a provider gives the end and the talk time but no answer time: a completed call was
    answered `duration` seconds before it ended."""
    if state is not State.COMPLETED or ended is None or duration is None:
        return None
    return datetime.fromtimestamp(ended.timestamp() - duration, tz=timezone.utc)


def number_field(body: Mapping[str, Any], key: str) -> int | float | None:
    """A numeric field of a provider body (epoch times, durations, counts): None when absent or
    null, ValueError (an invalid response) for anything else, booleans included."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} is not a number")
    return value
