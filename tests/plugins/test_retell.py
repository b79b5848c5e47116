"""Retell plugin, sans-I/O: request, every call_status and disconnection_reason, list, webhook, signature."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import httpx
import pytest

from outbound_call_exporter import ErrorReason, FailureReason, PollError, State, WebhookSignatureError
from outbound_call_exporter_plugins.retell import STATUS_MAP, Retell, RetellParams, RetellSettings
from outbound_call_exporter_plugins.retell.signature import sign, verify_signature

CALL = "Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6"
AGENT = "oBeDLoLOeuAbiuaMFXRtDOLriTJ5tSxD"

#: the get-call example of Retell's API reference (docs/providers/reference/retell.md), trimmed
#: of transcripts and latencies; the example shows `registered` with both timestamps
DOC_EXAMPLE = {
    "call_id": CALL, "agent_id": AGENT, "call_status": "registered", "from_number": "+12137771234",
    "to_number": "+12137771235", "metadata": {}, "retell_llm_dynamic_variables": {"customer_name": "John Doe"},
    "start_timestamp": 1703302407333, "end_timestamp": 1703302428855,
    "recording_url": "https://retellai.s3.us-west-2.amazonaws.com/Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6/recording.wav",
}
ENDED = {**DOC_EXAMPLE, "call_status": "ended", "call_type": "phone_call", "direction": "outbound",
         "disconnection_reason": "user_hangup", "duration_ms": 21522}
#: the v2 `disconnection_reason` enum (retell-sdk types, docs/providers/reference/retell.md)
REASONS = ["user_hangup", "agent_hangup", "call_transfer", "voicemail_reached", "ivr_reached", "inactivity",
           "max_duration_reached", "concurrency_limit_reached", "no_concurrency_fallback", "no_valid_payment",
           "scam_detected", "dial_busy", "dial_failed", "dial_no_answer", "invalid_destination",
           "telephony_provider_permission_denied", "telephony_provider_unavailable", "sip_routing_error",
           "marked_as_spam", "user_declined", "error_llm_websocket_open", "error_llm_websocket_lost_connection",
           "error_llm_websocket_runtime", "error_llm_websocket_corrupt_payload", "error_no_audio_received",
           "error_asr", "error_retell", "error_unknown", "error_user_not_joined", "registered_call_timeout",
           "transfer_bridged", "transfer_cancelled", "manual_stopped", "call_take_over"]


@pytest.fixture
def provider():
    return Retell(RetellSettings(api_key="key_123"))


def respond(provider, body, status=200):
    call = RetellParams(call_id=CALL)
    return provider.parse_response(call, httpx.Response(status, json=body, request=provider.build_request(call)))


def test_request_matches_the_api_reference(provider):
    request = provider.build_request(RetellParams(call_id=CALL))
    assert request.method == "GET" and str(request.url) == f"https://api.retellai.com/v2/get-call/{CALL}"
    assert request.headers["Authorization"] == "Bearer key_123"


def test_doc_example_parses_epoch_milliseconds(provider):
    status = respond(provider, DOC_EXAMPLE)
    assert status.state is State.QUEUED and status.provider_status == "registered"
    assert status.created_at == datetime(2023, 12, 23, 3, 33, 27, 333000, tzinfo=timezone.utc)
    assert status.ended_at is None and status.reason is None


def test_an_ended_call_has_its_end_and_talk_time(provider):
    status = respond(provider, ENDED)
    assert status.state is State.COMPLETED and status.state_since == status.ended_at
    assert status.ended_at == datetime(2023, 12, 23, 3, 33, 48, 855000, tzinfo=timezone.utc)
    assert status.duration_seconds == 21.522 and status.answered_at is None
    assert status.extras == {"agent_id": AGENT, "call_type": "phone_call", "direction": "outbound",
                             "disconnection_reason": "user_hangup"}


@pytest.mark.parametrize("raw", sorted(STATUS_MAP))
def test_every_documented_status_maps(provider, raw):
    body = {**ENDED, "call_status": raw}
    body.pop("disconnection_reason")
    assert respond(provider, body).state is STATUS_MAP[raw]


def test_documented_status_list_is_complete():
    assert set(STATUS_MAP) == {"registered", "not_connected", "ongoing", "ended", "error"}


@pytest.mark.parametrize("reason, state, failure", [
    ("dial_busy", State.BUSY, FailureReason.BUSY),
    ("dial_no_answer", State.NO_ANSWER, FailureReason.NO_ANSWER),
    ("user_declined", State.BUSY, FailureReason.REJECTED),
    ("invalid_destination", State.FAILED, FailureReason.UNREACHABLE),
    ("marked_as_spam", State.FAILED, FailureReason.REJECTED),
    ("telephony_provider_unavailable", State.FAILED, FailureReason.OTHER),
    (None, State.FAILED, FailureReason.OTHER),
])
def test_not_connected_is_refined_by_the_reason(provider, reason, state, failure):
    body = {**ENDED, "call_status": "not_connected", "disconnection_reason": reason}
    status = respond(provider, body)
    assert (status.state, status.failure_reason, status.reason) == (state, failure, reason)
    assert status.duration_seconds is None


def test_every_documented_reason_gives_a_terminal_state(provider):
    for raw in ("ended", "not_connected", "error"):
        for reason in REASONS:
            status = respond(provider, {**ENDED, "call_status": raw, "disconnection_reason": reason})
            assert status.state.terminal, (raw, reason)
            if raw == "error" or reason.startswith("error_"):
                assert status.state is State.FAILED, (raw, reason)
    assert respond(provider, {**ENDED, "disconnection_reason": "voicemail_reached"}).state is State.COMPLETED


def test_errors_and_wrong_shapes(provider):
    for code, reason in ((401, ErrorReason.UNAUTHORIZED), (404, ErrorReason.NOT_FOUND),
                         (429, ErrorReason.RATE_LIMITED), (422, ErrorReason.CLIENT_ERROR)):
        with pytest.raises(PollError) as info:
            respond(provider, {"status": "error", "message": "Invalid API Key"}, status=code)
        assert info.value.reason is reason and "key_123" not in str(info.value)
    for body in ({"call_id": CALL}, {**ENDED, "start_timestamp": "yesterday"}, {**ENDED, "call_status": 3}):
        with pytest.raises((PollError, ValueError)):
            respond(provider, body)


def test_the_raw_status_is_call_status(provider):
    assert Retell.status_key == "call_status"
    for body in ({"call_id": CALL, "status": "ended"}, {**ENDED, "call_status": 3}):
        with pytest.raises(PollError) as info:
            respond(provider, body)
        assert info.value.reason is ErrorReason.INVALID_RESPONSE and "`call_status`" in str(info.value)


def test_list_request_and_response(provider):
    request = provider.build_list_request({"agent_id": AGENT}, 1, "ongoing")
    assert request.method == "POST" and str(request.url) == "https://api.retellai.com/v3/list-calls"
    assert json.loads(request.content) == {
        "filter_criteria": {"agent": [{"agent_id": AGENT}],
                            "call_status": {"op": "in", "type": "enum", "value": ["ongoing"]}},
        "sort_order": "descending", "limit": 10}
    body = {"items": [ENDED, {**ENDED, "call_id": "call_2", "call_status": "ongoing"}], "has_more": True,
            "pagination_key": "call_2"}
    page = provider.parse_list_response({"agent_id": AGENT}, httpx.Response(200, json=body, request=request))
    assert page.has_next and page.next_cursor == "call_2"
    assert json.loads(provider.build_list_request({"agent_id": AGENT}, 2, None, cursor="call_2").content)[
        "pagination_key"] == "call_2"
    assert [c.params for c in page.calls] == [{"call_id": CALL, "agent_id": AGENT},
                                              {"call_id": "call_2", "agent_id": AGENT}]
    assert [c.status.state for c in page.calls] == [State.COMPLETED, State.IN_PROGRESS]
    with pytest.raises(ValueError):
        provider.parse_list_response({"agent_id": AGENT}, httpx.Response(200, json={"items": [{}]}, request=request))


def test_webhook_events(provider):
    for event, state in (("call_started", State.IN_PROGRESS), ("call_ended", State.COMPLETED),
                         ("call_analyzed", State.COMPLETED)):
        call = {**ENDED, "call_status": "ongoing"} if event == "call_started" else ENDED
        listed = provider.parse_webhook({"event": event, "call": call})
        assert listed.params == {"call_id": CALL} and listed.status.state is state
    for bad in ({"event": "transcript_updated", "call": ENDED}, {"event": "call_ended"}, {"call": ENDED}):
        with pytest.raises(ValueError):
            provider.parse_webhook(bad)


def test_signature_scheme_of_the_sdk():
    body = b'{"event":"call_ended","call":{"call_id":"x"}}'
    header = sign(body, "key_123", 1703302428855)
    assert header == "v=1703302428855,d=" + __import__("hmac").new(
        b"key_123", body + b"1703302428855", "sha256").hexdigest()
    verify_signature(body, "key_123", header, now_ms=1703302428855 + 299_000)
    for wrong in (None, "", "v=1,d=zz", header.replace("d=", "d=0")[:-1],
                  sign(body, "other", 1703302428855), sign(body + b" ", "key_123", 1703302428855)):
        with pytest.raises(WebhookSignatureError):
            verify_signature(body, "key_123", wrong, now_ms=1703302428855)
    with pytest.raises(WebhookSignatureError, match="five minutes"):
        verify_signature(body, "key_123", header, now_ms=1703302428855 + 301_000)


def test_verify_webhook_reads_the_header_and_raw_body(provider):
    body = json.dumps({"event": "call_ended", "call": ENDED}).encode()
    import time

    good = sign(body, "key_123", int(time.time() * 1000))
    provider.verify_webhook(httpx.Request("POST", "http://x/h", content=body, headers={"x-retell-signature": good}))
    with pytest.raises(WebhookSignatureError) as info:
        provider.verify_webhook(httpx.Request("POST", "http://x/h", content=body + b" ",
                                              headers={"x-retell-signature": good}))
    assert "key_123" not in str(info.value) and good not in str(info.value)


def test_fake_pages_by_pagination_key():
    from outbound_call_exporter_plugins.retell.fake import RetellFake

    fake = RetellFake()
    with fake.running():
        ids = [fake.add_call().call_id for _ in range(230)]
        p = Retell(RetellSettings(api_key=fake.credentials["api_key"]), fake.url)
        scope, seen, cursor = {"agent_id": fake.agent_id}, [], None
        with httpx.Client() as client:
            for _ in range(30):
                page = p.parse_list_response(scope, client.send(p.build_list_request(scope, 1, None, cursor=cursor)))
                seen += [c.params["call_id"] for c in page.calls]
                if not page.has_next:
                    break
                cursor = page.next_cursor
            assert seen == ids[::-1]
            bad = p.build_list_request(scope, 1, None, cursor="call_unknown")
            assert client.send(bad).status_code == 400
