"""Bland plugin, sans-I/O: the request, the docs' two Call Details examples, every queue_status and refinement."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from outbound_call_exporter import ErrorReason, FailureReason, PollError, State, WebhookSignatureError
from outbound_call_exporter_plugins.bland import STATUS_MAP, Bland, BlandParams, BlandSettings

CALL = "d9cce3f3-23cf-4fa7-b62c-8be8119b8715"

#: Bland "Call Details" example 1 (docs/providers/reference/bland.md), transcripts and variables left out
DOC_EXAMPLE = {
    "call_id": CALL, "call_length": 0.75, "batch_id": None, "to": "+12223334444", "from": "+17163511654",
    "request_data": {"phone_number": "+12223334444", "wait": True, "language": "ENG"}, "completed": True,
    "created_at": "2024-04-27T23:51:18.025251+00:00", "inbound": False, "queue_status": "completed",
    "endpoint_url": "api.prod.bland.ai", "max_duration": 30, "error_message": None, "answered_by": "human",
    "record": False, "recording_url": None, "c_id": CALL, "metadata": {}, "price": 0.068,
    "started_at": "2024-04-27T23:51:25+00:00", "local_dialing": False, "call_ended_by": "ASSISTANT",
}
#: example 2: `corrected_duration` as a string of seconds, `end_at` the max-duration cutoff
DOC_EXAMPLE_2 = {
    "status": "completed", "corrected_duration": "71", "end_at": "2023-12-16T00:15:41.000Z",
    "call_id": "c1234567-89ab-cdef-0123-456789abcdef", "to": "5551234567", "from": "+15551234567",
    "completed": True, "created_at": "2023-12-16T00:15:26.59585+00:00", "queue_status": "complete",
    "endpoint_url": "api.bland.ai", "max_duration": 30, "error_message": None, "answered_by": "human",
    "batch_id": None,
}
QUEUE_STATUSES = ["new", "queued", "allocated", "started", "complete", "pre_queue_error", "queue_error",
                  "call_error", "complete_error"]


@pytest.fixture
def provider():
    return Bland(BlandSettings(api_key="org_key_123"))


def respond(provider, body, status=200):
    call = BlandParams(call_id=CALL)
    return provider.parse_response(call, httpx.Response(status, json=body, request=provider.build_request(call)))


def test_request_sends_the_raw_key(provider):
    request = provider.build_request(BlandParams(call_id=CALL))
    assert request.method == "GET" and str(request.url) == f"https://api.bland.ai/v1/calls/{CALL}"
    assert request.headers["authorization"] == "org_key_123"


def test_doc_example_times_and_call_length_in_minutes(provider):
    status = respond(provider, DOC_EXAMPLE)
    assert status.state is State.COMPLETED and status.provider_status == "completed"
    started = datetime(2024, 4, 27, 23, 51, 25, tzinfo=timezone.utc)
    assert status.created_at == datetime(2024, 4, 27, 23, 51, 18, 25251, tzinfo=timezone.utc)
    assert status.answered_at == started and status.duration_seconds == 45.0
    assert status.ended_at == status.state_since == started + timedelta(seconds=45)
    assert status.extras == {"answered_by": "human", "call_ended_by": "ASSISTANT"}


def test_end_at_is_not_the_end(provider):
    status = respond(provider, {**DOC_EXAMPLE_2, "started_at": "2023-12-16T00:15:30+00:00"})
    assert status.duration_seconds == 71.0
    assert status.ended_at == datetime(2023, 12, 16, 0, 16, 41, tzinfo=timezone.utc)  # started + 71 s, not end_at
    assert respond(provider, DOC_EXAMPLE_2).ended_at is None  # no start: the end is unknown


@pytest.mark.parametrize("raw", QUEUE_STATUSES)
def test_every_documented_queue_status_maps(provider, raw):
    body = {**DOC_EXAMPLE, "queue_status": raw, "completed": False}
    body.pop("answered_by")
    assert respond(provider, body).state is STATUS_MAP[raw]


def test_documented_status_lists_are_complete():
    statuses = ["completed", "failed", "busy", "no-answer", "canceled"]  # `status`, but "unknown"
    assert set(STATUS_MAP) == set(QUEUE_STATUSES) | set(statuses)


@pytest.mark.parametrize("changes, state, failure", [
    ({"answered_by": "no-answer"}, State.NO_ANSWER, FailureReason.NO_ANSWER),
    ({"status": "no-answer", "answered_by": None}, State.NO_ANSWER, FailureReason.NO_ANSWER),
    ({"status": "busy"}, State.BUSY, FailureReason.BUSY),
    ({"status": "canceled"}, State.CANCELLED, FailureReason.CANCELLED),
    ({"answered_by": "voicemail"}, State.COMPLETED, None),
    ({"queue_status": "complete_error", "error_message": "Webhook delivery failed"}, State.COMPLETED, None),
    ({"queue_status": "call_error", "status": "failed", "error_message": "Invalid phone number"},
     State.FAILED, FailureReason.UNREACHABLE),
    ({"queue_status": "call_error", "status": "busy"}, State.BUSY, FailureReason.BUSY),
    ({"queue_status": "pre_queue_error", "error_message": "Insufficient balance"}, State.FAILED, FailureReason.OTHER),
    ({"queue_status": "started", "completed": True}, State.COMPLETED, None),  # `completed` is the freshest
])
def test_refinements(provider, changes, state, failure):
    status = respond(provider, {**DOC_EXAMPLE, **changes})
    assert (status.state, status.failure_reason) == (state, failure)
    if state is State.FAILED:
        assert status.reason == changes["error_message"]


def test_an_unknown_queue_status_is_unknown_until_completed(provider):
    assert respond(provider, {**DOC_EXAMPLE, "queue_status": "teleporting", "completed": False}).state is State.UNKNOWN
    assert respond(provider, {**DOC_EXAMPLE, "queue_status": "teleporting"}).state is State.COMPLETED


def test_errors_and_wrong_shapes(provider):
    for code, reason in ((401, ErrorReason.UNAUTHORIZED), (404, ErrorReason.NOT_FOUND), (429, ErrorReason.RATE_LIMITED)):
        with pytest.raises(PollError) as info:
            respond(provider, {"status": "error", "message": "Invalid API key"}, status=code)
        assert info.value.reason is reason and "org_key_123" not in str(info.value)
    for body in ({"call_id": CALL}, {**DOC_EXAMPLE, "corrected_duration": "NaN"},
                 {**DOC_EXAMPLE, "call_length": "long"}, {**DOC_EXAMPLE, "created_at": "yesterday"}):
        with pytest.raises((PollError, ValueError)):
            respond(provider, body)


def test_the_raw_status_is_queue_status_else_status(provider):
    without = {k: v for k, v in DOC_EXAMPLE.items() if k != "queue_status"}
    status = respond(provider, {**without, "status": "busy"})
    assert status.provider_status == "busy" and status.state is State.BUSY
    assert provider.parse_webhook({**without, "status": "no-answer"}).status.state is State.NO_ANSWER
    assert respond(provider, {**DOC_EXAMPLE, "queue_status": "started", "completed": False}).state is State.IN_PROGRESS
    # a null queue_status does not fall back to `status`; neither field: no status at all
    for body in ({**DOC_EXAMPLE, "queue_status": None}, {"call_id": CALL}, {**without, "status": 7}):
        with pytest.raises(PollError) as info:
            respond(provider, body)
        assert info.value.reason is ErrorReason.INVALID_RESPONSE and "`queue_status`" in str(info.value)


def test_post_call_webhook_and_its_signature():
    provider = Bland(BlandSettings(api_key="org_key_123", webhook_secret="whsec"))
    listed = provider.parse_webhook({**DOC_EXAMPLE, "answered_by": "no-answer"})
    assert listed.params == {"call_id": CALL} and listed.status.state is State.NO_ANSWER
    with pytest.raises(ValueError):
        provider.parse_webhook({"status": "completed"})
    body = b'{"call_id": "x", "status": "completed"}'
    good = hmac.new(b"whsec", body, hashlib.sha256).hexdigest()
    provider.verify_webhook(httpx.Request("POST", "http://x/h", content=body, headers={"X-Webhook-Signature": good}))
    for headers in ({}, {"X-Webhook-Signature": "0" * 64}, {"X-Webhook-Signature": good[:-1]}):
        with pytest.raises(WebhookSignatureError) as info:
            provider.verify_webhook(httpx.Request("POST", "http://x/h", content=body, headers=headers))
        assert "whsec" not in str(info.value)
    # no secret configured: the account's webhook_token is the only check
    Bland(BlandSettings(api_key="k")).verify_webhook(httpx.Request("POST", "http://x/h", content=body))
