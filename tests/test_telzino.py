"""Telzino plugin, sans-I/O: requests and the documented responses, no server needed."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import pytest

from outbound_call_exporter import ErrorReason, FailureReason, PollError, State
from outbound_call_exporter_plugins.telzino import STATUS_MAP, Telzino, TelzinoParams, TelzinoSettings

AGENT = "123e4567-e89b-12d3-a456-426614174000"
CALL = "0fc6daf8-7251-4553-9488-867ba0b82d8e"

#: the example response in docs/providers/reference/telzino-outbound-calls.md, verbatim
DOC_EXAMPLE = {
    "id": "0fc6daf8-7251-4553-9488-867ba0b82d8e",
    "agent_id": "123e4567-e89b-12d3-a456-426614174000",
    "to_number": "+18135551234",
    "status": "completed",
    "call_context": "You are calling John to confirm his appointment tomorrow at 2pm.",
    "request_metadata": {"crm_id": "123"},
    "callback_url": "https://your-system.com/telzino/call-result",
    "callback_delivered": True,
    "transcript_id": "de79aee6-ae41-4003-a3f4-ba9d77b59bd8",
    "summary_text": "Appointment Confirmation\n\nThe agent confirmed John's appointment for tomorrow at 2pm.\n\n"
                    "**Action Items:**\n- None\n\n**Sentiment:** Positive",
    "error": None,
    "sip_status_code": None,
    "created_at": "2026-06-11T12:49:28.898751+00:00",
    "answered_at": "2026-06-11T12:50:03.843960+00:00",
    "ended_at": "2026-06-11T12:54:15.354244+00:00",
    "duration": 251,
}


@pytest.fixture
def provider():
    return Telzino(TelzinoSettings(token="tok-123", agent_id=AGENT))


def respond(provider, body, status=200, headers=None):
    call = TelzinoParams(call_id=CALL, agent_id=AGENT)
    request = provider.build_request(call)
    response = httpx.Response(status, json=body, headers=headers, request=request)
    return provider.parse_response(call, response)


def test_request_matches_the_doc(provider):
    request = provider.build_request(TelzinoParams(call_id=CALL, agent_id=AGENT))
    assert request.method == "GET"
    assert str(request.url) == f"https://api.telzino.com/v1/agents/{AGENT}/outbound-calls/{CALL}"
    assert request.headers["Authorization"] == "Bearer tok-123"


def test_base_url_override_keeps_a_path_prefix():
    p = Telzino(TelzinoSettings(token="t"), "http://127.0.0.1:8080/proxy/")
    url = p.build_request(TelzinoParams(call_id=CALL, agent_id=AGENT)).url
    assert str(url) == f"http://127.0.0.1:8080/proxy/v1/agents/{AGENT}/outbound-calls/{CALL}"


def test_doc_example_parses(provider):
    status = respond(provider, DOC_EXAMPLE)
    assert status.state is State.COMPLETED and status.provider_status == "completed"
    assert status.created_at == datetime(2026, 6, 11, 12, 49, 28, 898751, tzinfo=timezone.utc)
    assert status.answered_at == datetime(2026, 6, 11, 12, 50, 3, 843960, tzinfo=timezone.utc)
    assert status.ended_at == status.state_since == datetime(2026, 6, 11, 12, 54, 15, 354244, tzinfo=timezone.utc)
    assert status.duration_seconds == 251
    assert status.extras["transcript_id"] == DOC_EXAMPLE["transcript_id"]
    assert "summary_text" not in status.extras and status.failure_reason is None


@pytest.mark.parametrize("raw, state", sorted(STATUS_MAP.items()))
def test_every_documented_status_maps(provider, raw, state):
    assert respond(provider, {**DOC_EXAMPLE, "status": raw}).state is state


def test_documented_status_list_is_complete():
    doc = "queued, dispatching, dispatched, dialing, in_progress, completed, no_answer, busy, or failed"
    assert set(STATUS_MAP) == {s.strip().removeprefix("or ") for s in doc.split(",")}


def test_unknown_status_is_not_an_error(provider):
    status = respond(provider, {**DOC_EXAMPLE, "status": "teleporting"})
    assert status.state is State.UNKNOWN and status.provider_status == "teleporting"


def test_failed_call_carries_sip_code_and_reason(provider):
    status = respond(provider, {**DOC_EXAMPLE, "status": "failed", "answered_at": None, "duration": None,
                                "error": "Destination unreachable", "sip_status_code": 404})
    assert status.state is State.FAILED
    assert status.sip_status_code == 404 and status.reason == "Destination unreachable"
    assert status.failure_reason is FailureReason.UNREACHABLE


@pytest.mark.parametrize("code, reason", [
    (401, ErrorReason.UNAUTHORIZED), (403, ErrorReason.UNAUTHORIZED), (404, ErrorReason.NOT_FOUND),
    (429, ErrorReason.RATE_LIMITED), (400, ErrorReason.CLIENT_ERROR), (500, ErrorReason.SERVER_ERROR),
    (502, ErrorReason.SERVER_ERROR),
])
def test_http_errors_map_to_reasons(provider, code, reason):
    with pytest.raises(PollError) as info:
        respond(provider, {"error": "x"}, status=code, headers={"Retry-After": "7"})
    assert info.value.reason is reason
    assert "tok-123" not in str(info.value)
    if code == 429:
        assert info.value.retry_after == 7


@pytest.mark.parametrize("body", [{"no": "status"}, {"status": 5}, {**DOC_EXAMPLE, "created_at": "yesterday"}])
def test_wrong_shapes_raise(provider, body):
    with pytest.raises((PollError, ValueError, TypeError)):
        respond(provider, body)
