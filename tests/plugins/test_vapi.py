"""Vapi plugin, sans-I/O: the request, every documented status and endedReason, the docs' examples."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from outbound_call_exporter import ErrorReason, FailureReason, PollError, State
from outbound_call_exporter_plugins.vapi import LIST_LIMIT, STATUS_MAP, Vapi, VapiParams, VapiSettings
from outbound_call_exporter_plugins.vapi.reasons import classify

CALL = "c1a2b3c4-d5e6-4f70-8a9b-0c1d2e3f4a5b"
ASSISTANT = "5b0a4a08-133c-4146-9315-0984f8c6be80"
REFERENCE = Path(__file__).parents[2] / "docs" / "providers" / "reference"
#: every `endedReason` of Vapi's OpenAPI (`Call.endedReason.enum`), one a line
ENDED_REASONS = (REFERENCE / "vapi-ended-reasons.txt").read_text().split()

#: a Call object with the OpenAPI schema's fields (docs/providers/reference/vapi.md, "Call")
CALL_OBJECT = {
    "id": CALL, "orgId": "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d", "type": "outboundPhoneCall",
    "status": "ended", "endedReason": "customer-ended-call", "endedMessage": None,
    "createdAt": "2026-06-11T12:49:28.898Z", "updatedAt": "2026-06-11T12:54:16.000Z",
    "startedAt": "2026-06-11T12:49:40.100Z", "endedAt": "2026-06-11T12:54:15.350Z",
    "assistantId": ASSISTANT, "phoneNumberId": "9c2a7e1e-7f52-4bd0-9d7e-5a0b9e0c1a11",
    "customer": {"number": "+14155550123"}, "cost": 0.12,
}


@pytest.fixture
def provider():
    return Vapi(VapiSettings(api_key="vapi-key-123"))


def respond(provider, body, status=200, headers=None):
    call = VapiParams(call_id=CALL)
    response = httpx.Response(status, json=body, headers=headers, request=provider.build_request(call))
    return provider.parse_response(call, response)


def test_request_matches_the_api_reference(provider):
    request = provider.build_request(VapiParams(call_id=CALL))
    assert request.method == "GET" and str(request.url) == f"https://api.vapi.ai/call/{CALL}"
    assert request.headers["Authorization"] == "Bearer vapi-key-123"


def test_call_id_must_be_a_uuid():
    with pytest.raises(ValueError):
        VapiParams(call_id="not-a-uuid")


def test_a_completed_call_has_times_and_talk_time(provider):
    status = respond(provider, CALL_OBJECT)
    assert status.state is State.COMPLETED and status.provider_status == "ended"
    assert status.created_at == datetime(2026, 6, 11, 12, 49, 28, 898000, tzinfo=timezone.utc)
    assert status.answered_at == datetime(2026, 6, 11, 12, 49, 40, 100000, tzinfo=timezone.utc)
    assert status.ended_at == status.state_since == datetime(2026, 6, 11, 12, 54, 15, 350000, tzinfo=timezone.utc)
    assert status.duration_seconds == pytest.approx(275.25)
    assert status.reason == "customer-ended-call" and status.failure_reason is None
    assert "customer" not in status.extras and status.extras["assistantId"] == ASSISTANT


@pytest.mark.parametrize("raw", sorted(STATUS_MAP))
def test_every_documented_status_maps(provider, raw):
    body = {**CALL_OBJECT, "status": raw}
    if raw not in ("ended", "deletion-failed"):
        body = {k: v for k, v in body.items() if k not in ("endedReason", "endedAt")}
    status = respond(provider, body)
    assert status.state is (State.COMPLETED if raw in ("ended", "deletion-failed") else STATUS_MAP[raw])


def test_documented_status_list_is_complete():
    # OpenAPI Call.status.enum
    documented = {"scheduled", "queued", "ringing", "in-progress", "forwarding", "ended", "not-found", "deletion-failed"}
    assert set(STATUS_MAP) | {"not-found"} == documented


def test_not_found_status_is_a_not_found_error(provider):
    with pytest.raises(PollError) as info:
        respond(provider, {"id": CALL, "status": "not-found"})
    assert info.value.reason is ErrorReason.NOT_FOUND


@pytest.mark.parametrize("reason, state, failure, sip", [
    ("customer-busy", State.BUSY, FailureReason.BUSY, None),
    ("customer-did-not-answer", State.NO_ANSWER, FailureReason.NO_ANSWER, None),
    ("manually-canceled", State.CANCELLED, FailureReason.CANCELLED, None),
    ("twilio-failed-to-connect-call", State.FAILED, FailureReason.UNREACHABLE, None),
    ("call.in-progress.error-providerfault-outbound-sip-480-temporarily-unavailable",
     State.NO_ANSWER, FailureReason.NO_ANSWER, 480),
    ("call.in-progress.error-providerfault-outbound-sip-403-forbidden", State.FAILED, FailureReason.REJECTED, 403),
    ("call.in-progress.error-providerfault-outbound-sip-503-service-unavailable", State.FAILED, FailureReason.OTHER, 503),
    ("pipeline-error-openai-llm-failed", State.FAILED, FailureReason.OTHER, None),
    ("call.start.error-subscription-insufficient-credits", State.FAILED, FailureReason.OTHER, None),
    ("pipeline-error-eleven-labs-system-busy-and-requested-upgrade", State.FAILED, FailureReason.OTHER, None),
    ("assistant-ended-call", State.COMPLETED, None, None),
    ("voicemail", State.COMPLETED, None, None),
    ("exceeded-max-duration", State.COMPLETED, None, None),
    ("call.forwarding.operator-busy", State.COMPLETED, None, None),
    ("hangup", State.COMPLETED, None, None),  # the end-of-call-report example's value, not in the enum
    ("some-future-error-reason", State.FAILED, FailureReason.OTHER, None),
])
def test_ended_reasons_refine_ended(provider, reason, state, failure, sip):
    status = respond(provider, {**CALL_OBJECT, "endedReason": reason})
    assert (status.state, status.failure_reason, status.sip_status_code) == (state, failure, sip)
    assert status.reason == reason
    assert (status.answered_at is not None) is (state is State.COMPLETED)


def test_every_documented_ended_reason_is_classified():
    assert len(ENDED_REASONS) > 600
    outcomes = {reason: classify(reason)[0] for reason in ENDED_REASONS}
    assert all(state.terminal for state in outcomes.values())
    for reason, state in outcomes.items():
        if reason.startswith(("pipeline-error-", "call.start.", "call.in-progress.error-vapifault-")):
            assert state is State.FAILED, reason
        if reason.startswith(("assistant-ended-call", "customer-ended-call")):
            assert state is State.COMPLETED, reason
    assert [r for r, s in outcomes.items() if s is State.BUSY] == ["customer-busy", "vonage-rejected"]
    assert {r for r, s in outcomes.items() if s is State.NO_ANSWER} == {
        "customer-did-not-answer", "call.in-progress.error-providerfault-outbound-sip-408-request-timeout",
        "call.in-progress.error-providerfault-outbound-sip-480-temporarily-unavailable"}


def test_the_401_body_from_vapi_is_unauthorized(provider):
    body = {"message": "Invalid Key. Hot tip, you may be using the private key instead of the public key, or "
                       "vice versa.", "error": "Unauthorized", "statusCode": 401}
    with pytest.raises(PollError) as info:
        respond(provider, body, status=401)
    assert info.value.reason is ErrorReason.UNAUTHORIZED and "vapi-key-123" not in str(info.value)


def test_list_request_filters_by_scope_and_creation(provider):
    after = datetime(2026, 6, 11, 12, 0, 0, tzinfo=timezone.utc)
    request = provider.build_list_request({"assistant_id": ASSISTANT}, 1, None, created_after=after)
    assert str(request.url) == (f"https://api.vapi.ai/call?assistantId={ASSISTANT}&limit={LIST_LIMIT}"
                                "&createdAtGt=2026-06-11T12%3A00%3A00Z")
    page = provider.parse_list_response({"assistant_id": ASSISTANT},
                                        httpx.Response(200, json=[CALL_OBJECT], request=request))
    assert not page.has_next and page.next_cursor is None
    assert page.calls[0].params == {"call_id": CALL, "assistant_id": ASSISTANT}
    assert page.calls[0].status.state is State.COMPLETED
    full = [{**CALL_OBJECT, "id": f"{CALL[:-3]}{i:03d}", "createdAt": f"2026-06-11T12:{59 - i // 60:02d}:{59 - i % 60:02d}.000Z"}
            for i in range(LIST_LIMIT)]
    page = provider.parse_list_response({"assistant_id": ASSISTANT}, httpx.Response(200, json=full, request=request))
    oldest = min(item["createdAt"] for item in full)
    assert page.has_next and page.next_cursor == oldest  # the oldest of a full page
    request = provider.build_list_request({"phone_number_id": ASSISTANT}, 2, None, created_after=after,
                                          cursor=page.next_cursor)
    assert request.url.params["createdAtLe"] == oldest and "phoneNumberId" in request.url.params
    same = [{**item, "createdAt": oldest} for item in full]  # a page all at its own bound goes past it
    page = provider.parse_list_response({"assistant_id": ASSISTANT}, httpx.Response(200, json=same, request=request))
    assert page.has_next and page.next_cursor == f"<{oldest}"
    request = provider.build_list_request({"assistant_id": ASSISTANT}, 3, None, cursor=page.next_cursor)
    assert request.url.params["createdAtLt"] == oldest and "createdAtLe" not in request.url.params
    for bad in ({"calls": []}, [{"no": "id"}], "x"):
        with pytest.raises(PollError):
            provider.parse_list_response({"assistant_id": ASSISTANT}, httpx.Response(200, json=bad, request=request))


def test_webhook_examples_from_the_server_url_docs(provider):
    # docs: {"message": {"type": "status-update", "call": {...}, "status": "ended"}}
    listed = provider.parse_webhook({"message": {"type": "status-update", "call": CALL_OBJECT, "status": "ringing"}})
    assert listed.params == {"call_id": CALL} and listed.status.state is State.DIALING
    # docs: end-of-call-report with "endedReason": "hangup"
    listed = provider.parse_webhook({"message": {"type": "end-of-call-report", "endedReason": "customer-busy",
                                                 "call": {**CALL_OBJECT, "status": "in-progress"},
                                                 "artifact": {"transcript": "AI: How can I help?"}}})
    assert listed.status.state is State.BUSY and listed.status.provider_status == "ended"
    for bad in ({"message": {"type": "hang", "call": CALL_OBJECT}}, {"message": {"type": "status-update"}},
                {"message": {"type": "status-update", "call": CALL_OBJECT}}, {"type": "status-update"}):
        with pytest.raises(ValueError):
            provider.parse_webhook(bad)


def test_fake_pages_by_creation_time_until_every_call_is_seen():
    import time

    from outbound_call_exporter_plugins.vapi.fake import VapiFake

    fake = VapiFake()
    with fake.running():
        ids = []
        for i in range(230):
            ids.append(fake.add_call().call_id)
            if i % 3 == 0:
                time.sleep(0.002)  # several calls share each millisecond, as a campaign's do
        p = Vapi(VapiSettings(api_key=fake.credentials["api_key"]), fake.url)
        scope, seen, cursor = {"assistant_id": fake.assistant_id}, [], None
        with httpx.Client() as client:
            for _ in range(60):
                request = p.build_list_request(scope, 1, None, cursor=cursor)
                page = p.parse_list_response(scope, client.send(request))
                seen += [c.params["call_id"] for c in page.calls]
                if not page.has_next:
                    break
                cursor = page.next_cursor
        assert set(seen) == set(ids) and len(seen) < len(ids) + 60  # page boundaries repeat a few, miss none
