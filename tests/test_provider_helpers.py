"""Helpers every plugin uses: safe URLs, timestamps, Retry-After, failure-text classification."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from pydantic import ValidationError

from outbound_call_exporter import CallParams, FailureReason, parse_retry_after, parse_timestamp, classify_failure
from outbound_call_exporter_plugins.telzino import Telzino, TelzinoSettings


def test_url_encodes_each_segment_as_one():
    p = Telzino(TelzinoSettings(token="t"))
    assert str(p.url("a b", "c/d", "é", "x?y#z")) == "https://api.telzino.com/a%20b/c%2Fd/%C3%A9/x%3Fy%23z"
    for bad in ("", ".", ".."):
        with pytest.raises(ValueError):
            p.url("calls", bad)


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a%2Fb", "a b", "x" * 129, "\x00", "a\r\nb", "ünï"])
def test_call_ids_outside_the_contract_alphabet_are_refused(bad):
    with pytest.raises(ValidationError):
        CallParams(call_id=bad)


@pytest.mark.parametrize("good", ["a", "OUT-123", "call_123", "a.b:c-d", "x" * 128, "..."])
def test_call_ids_inside_the_alphabet_are_accepted(good):
    assert CallParams(call_id=good).call_id == good


@pytest.mark.parametrize("value, expected", [
    ("2026-06-11T12:49:28.898751+00:00", datetime(2026, 6, 11, 12, 49, 28, 898751, tzinfo=timezone.utc)),
    ("2026-06-11T12:49:28Z", datetime(2026, 6, 11, 12, 49, 28, tzinfo=timezone.utc)),
    ("2026-06-11T14:49:28+02:00", datetime(2026, 6, 11, 12, 49, 28, tzinfo=timezone.utc)),
    (1703097600000, datetime(2023, 12, 20, 18, 40, tzinfo=timezone.utc)),
    (1703097600, datetime(2023, 12, 20, 18, 40, tzinfo=timezone.utc)),
    (None, None), ("", None),
])
def test_parse_timestamp(value, expected):
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize("bad", ["soon", True, [1]])
def test_parse_timestamp_refuses_garbage(bad):
    with pytest.raises(ValueError):
        parse_timestamp(bad)


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("12") == 12
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 28 <= parse_retry_after(when) <= 31
    assert parse_retry_after("garbage") is None and parse_retry_after(None) is None


@pytest.mark.parametrize("text, reason", [
    ("Number busy - unable to connect after 3 attempts", FailureReason.BUSY),
    ("No answer after 45s", FailureReason.NO_ANSWER),
    ("call queueing: max timeout limit exceeded", FailureReason.QUEUE_TIMEOUT),
    ("Call rejected by callee", FailureReason.REJECTED),
    ("Invalid number", FailureReason.UNREACHABLE),
    ("something odd", FailureReason.OTHER),
    ("", None), (None, None),
])
def test_classify_failure(text, reason):
    assert classify_failure(text) is reason
