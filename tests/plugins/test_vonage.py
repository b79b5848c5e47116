"""Vonage plugin, sans-I/O: request JWTs, the documented records and events, signed webhooks.

The examples are docs/providers/reference/vonage.md's (Vonage's own docs, verbatim).
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone

import httpx
import jwt
import pytest
from pydantic import ValidationError

from outbound_call_exporter import ErrorReason, FailureReason, PollError, State, WebhookSignatureError
from outbound_call_exporter_plugins.vonage import STATUS_MAP, Vonage, VonageParams, VonageSettings
from outbound_call_exporter_plugins.vonage import auth
from outbound_call_exporter_plugins.vonage.fake import new_private_key

APP = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
CALL = "63f61863-4a51-4f6b-86e1-46edebcf9356"
PEM = new_private_key()

#: the Voice API reference's call record (of the list response), verbatim
DOC_CALL = {
    "_links": {"self": {"href": "/calls/63f61863-4a51-4f6b-86e1-46edebcf9356"}},
    "uuid": "63f61863-4a51-4f6b-86e1-46edebcf9356", "conversation_uuid": "63f61863-4a51-4f6b-86e1-46edebio0123",
    "to": [{"type": "phone", "number": "447700900000"}], "from": {"type": "phone", "number": "447700900001"},
    "status": "completed", "direction": "outbound", "rate": "0.39", "price": "23.40", "duration": "60",
    "start_time": "2015-02-04T22:45:00Z", "end_time": "2015-02-04T23:45:00Z", "network": "65512",
}
#: the Go SDK's fixture of the same record (the OpenAPI example): `to` an object, space-separated times
SDK_CALL = {
    "_links": {"self": {"href": "/calls/63f61863-4a51-4f6b-86e1-46edebcf9356"}},
    "uuid": "63f61863-4a51-4f6b-86e1-46edebcf9356", "conversation_uuid": "CON-f972836a-550f-45fa-956c-12a2ab5b7d22",
    "to": {"type": "phone", "number": "447700900000"}, "from": {"type": "phone", "number": "447700900001"},
    "status": "started", "direction": "outbound", "rate": "0.39", "price": "23.40", "duration": "60",
    "start_time": "2020-01-01 12:00:00", "end_time": "2020-01-01 12:00:00", "network": "65512",
}
#: the webhook reference's `completed` event (its example values)
DOC_COMPLETED_EVENT = {
    "end_time": "2020-01-01T12:00:00.000Z", "uuid": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab", "network": "GB-FIXED",
    "duration": "2", "start_time": "2020-01-01T12:00:00.000Z", "rate": "0.00450000", "price": "0.00015000",
    "from": "442079460000", "to": "447700900000", "conversation_uuid": "CON-aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
    "status": "completed", "direction": "inbound", "timestamp": "2020-01-01T12:00:00.000Z",
}


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def provider():
    return Vonage(VonageSettings(application_id=APP, private_key=PEM))


def respond(provider, body, status=200, headers=None):
    call = VonageParams(call_id=CALL)
    request = provider.build_request(call)
    return provider.parse_response(call, httpx.Response(status, json=body, headers=headers, request=request))


def public_key():
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key(PEM.encode(), password=None).public_key()


def test_request_carries_a_signed_application_jwt(provider):
    request = provider.build_request(VonageParams(call_id=CALL))
    assert request.method == "GET" and str(request.url) == f"https://api.nexmo.com/v1/calls/{CALL}"
    token = request.headers["Authorization"].removeprefix("Bearer ")
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(token, public_key(), algorithms=["RS256"])
    assert claims["application_id"] == APP and claims["jti"]
    assert claims["iat"] <= time.time() < claims["exp"] <= claims["iat"] + auth.TTL_SECONDS


def test_tokens_are_reused_briefly_then_renewed():
    now = [1000.0]
    tokens = auth.RequestTokens(APP, VonageSettings(application_id=APP, private_key=PEM).private_key,
                                clock=lambda: now[0])
    first = tokens.token()
    now[0] += auth.REUSE_SECONDS - 1
    assert tokens.token() == first
    now[0] += 2
    second = tokens.token()
    assert second != first
    assert jwt.decode(second, public_key(), algorithms=["RS256"], options={"verify_exp": False})["iat"] == 1031


@pytest.mark.parametrize("key", ["not a key", PEM.replace("PRIVATE KEY-----\n", "PRIVATE KEY-----\nAAAA", 1),
                                 "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                                 "AAAAAAAAAAAAAAAA\n-----END PRIVATE KEY-----\n"])  # an Ed25519 key, not RSA
def test_a_bad_private_key_is_refused_without_quoting_it(key):
    from outbound_call_exporter.config import format_validation_error

    with pytest.raises(ValidationError) as info:
        VonageSettings(application_id=APP, private_key=key)
    message = format_validation_error(info.value)  # what check-config and `run` print
    assert message.startswith("private_key: ") and ("PEM" in message or "RSA" in message)
    assert key not in message and "AAAA" not in message and "MC4C" not in message


@pytest.mark.parametrize("settings", [{"application_id": "app-1", "private_key": PEM}, {"application_id": APP}])
def test_bad_settings_are_refused(settings):
    with pytest.raises(ValidationError):
        VonageSettings(**settings)


def test_call_ids_are_uuids():
    with pytest.raises(ValidationError):
        VonageParams(call_id="CON-" + CALL)


def test_doc_example_parses(provider):
    s = respond(provider, DOC_CALL)
    assert s.state is State.COMPLETED and s.provider_status == "completed"
    assert s.created_at == utc(2015, 2, 4, 22, 45) and s.ended_at == s.state_since == utc(2015, 2, 4, 23, 45)
    assert s.duration_seconds == 60 and s.answered_at == utc(2015, 2, 4, 23, 44)
    assert s.extras["to"] == "+447700900000" and s.extras["from"] == "+447700900001"
    assert s.extras["network"] == "65512" and "_links" not in s.extras


def test_sdk_example_parses(provider):
    s = respond(provider, SDK_CALL)
    assert s.state is State.DIALING and s.created_at == s.state_since == utc(2020, 1, 1, 12)
    assert s.ended_at is None and s.duration_seconds is None and s.extras["to"] == "+447700900000"


@pytest.mark.parametrize("raw, state", sorted(STATUS_MAP.items()))
def test_every_documented_status_maps(provider, raw, state):
    assert respond(provider, {**DOC_CALL, "status": raw}).state is state


def test_documented_status_list_is_complete():
    reference = "started ringing answered machine human completed timeout failed rejected cancelled busy".split()
    sdk_only = ["unanswered", "transfer", "input", "disconnected"]
    assert set(STATUS_MAP) == {*reference, *sdk_only}


def test_rejected_is_a_failure_with_its_reason(provider):
    s = respond(provider, {**DOC_CALL, "status": "rejected", "duration": "0"})
    assert s.state is State.FAILED and s.failure_reason is FailureReason.REJECTED
    assert s.duration_seconds is None and s.answered_at is None  # no talk time for calls that did not connect


def test_unknown_status_is_not_an_error(provider):
    s = respond(provider, {**DOC_CALL, "status": "teleporting"})
    assert s.state is State.UNKNOWN and s.provider_status == "teleporting"


@pytest.mark.parametrize("code, body, reason", [
    (401, {"type": "UNAUTHORIZED", "error_title": "Unauthorized"}, ErrorReason.UNAUTHORIZED),
    (404, {"type": "https://developer.nexmo.com/api-errors#not-found", "title": "Not Found"}, ErrorReason.NOT_FOUND),
    (429, {"type": "https://developer.nexmo.com/api-errors#throttled", "title": "Too Many Requests"},
     ErrorReason.RATE_LIMITED),
    (500, {"type": "INTERNAL_ERROR"}, ErrorReason.SERVER_ERROR),
])
def test_error_codes_map_to_reasons(provider, code, body, reason):
    with pytest.raises(PollError) as info:
        respond(provider, body, status=code)
    assert info.value.reason is reason


@pytest.mark.parametrize("body", [{"uuid": CALL}, {**DOC_CALL, "status": 1}, {**DOC_CALL, "start_time": "soon"},
                                  {**DOC_CALL, "duration": "sixty"}, {**DOC_CALL, "duration": [60]}])
def test_wrong_shapes_raise(provider, body):
    with pytest.raises((PollError, ValueError, TypeError)):
        respond(provider, body)


# -- event webhooks -------------------------------------------------------------------------------

def test_completed_event(provider):
    listed = provider.parse_webhook(DOC_COMPLETED_EVENT)
    assert listed.params == {"call_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"}
    s = listed.status
    assert s.state is State.COMPLETED and s.ended_at == s.state_since == utc(2020, 1, 1, 12)
    assert s.duration_seconds == 2 and s.extras["to"] == "+447700900000"


@pytest.mark.parametrize("status, state", [("started", State.DIALING), ("ringing", State.DIALING),
                                           ("answered", State.IN_PROGRESS), ("busy", State.BUSY),
                                           ("cancelled", State.CANCELLED), ("unanswered", State.NO_ANSWER),
                                           ("rejected", State.FAILED), ("failed", State.FAILED),
                                           ("timeout", State.NO_ANSWER)])
def test_status_events(provider, status, state):
    """Each event of the webhook reference, with its example fields."""
    event = {"from": "442079460000", "to": "447700900000", "uuid": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
             "conversation_uuid": "CON-aaaaaaaa-bbbb-cccc-dddd-0123456789ab", "status": status,
             "direction": "outbound", "timestamp": "2020-01-01T12:00:00.000Z"}
    s = provider.parse_webhook(event).status
    assert s.state is state and s.state_since == utc(2020, 1, 1, 12)
    assert s.ended_at == (utc(2020, 1, 1, 12) if state.terminal else None)


def test_machine_detection_event_names_the_call_call_uuid(provider):
    event = {"call_uuid": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab", "from": "442079460000", "to": "447700900000",
             "status": "machine", "conversation_uuid": "CON-aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
             "timestamp": "2020-01-01T12:00:00.000Z"}
    listed = provider.parse_webhook(event)
    assert listed.params == {"call_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"}
    assert listed.status.state is State.IN_PROGRESS


def test_failure_detail_refines_the_reason(provider):
    event = {**DOC_COMPLETED_EVENT, "status": "failed", "detail": "invalid_number"}
    s = provider.parse_webhook(event).status
    assert s.failure_reason is FailureReason.UNREACHABLE and s.reason == "invalid_number"
    odd = provider.parse_webhook({**event, "detail": "Call rejected: key -----BEGIN PRIVATE KEY-----"}).status
    assert odd.reason is None  # not a documented detail token: kept in extras only (scrubbed by the host)


@pytest.mark.parametrize("event", [{"status": "completed"}, {"uuid": CALL},
                                   {"reason": "Syntax error in NCCO.", "conversation_uuid": "CON-x",
                                    "timestamp": "2020-01-01T12:00:00.000Z"}])
def test_events_without_a_call_status_are_refused(provider, event):
    with pytest.raises(ValueError):
        provider.parse_webhook(event)


def signed(body: bytes, secret: str, **claims) -> httpx.Request:
    payload = {"iat": int(time.time()), "jti": "1", "iss": "Vonage", "api_key": "abcd1234", "application_id": APP,
               "payload_hash": hashlib.sha256(body).hexdigest(), **claims}
    token = jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm="HS256")
    return httpx.Request("POST", "http://x/api/v1/webhooks/v", content=body,
                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})


@pytest.fixture(scope="module")
def signing():
    secret = "sig-secret-0123456789abcdefghijklmnop"
    return Vonage(VonageSettings(application_id=APP, private_key=PEM, signature_secret=secret))


def test_signed_webhook_verifies(signing):
    body = json.dumps(DOC_COMPLETED_EVENT).encode()
    signing.verify_webhook(signed(body, "sig-secret-0123456789abcdefghijklmnop"))


@pytest.mark.parametrize("make", [
    lambda b: signed(b, "another-secret-0123456789abcdefghijkl"),
    lambda b: _tampered(b),
    lambda b: signed(b, "sig-secret-0123456789abcdefghijklmnop", payload_hash=None),
    lambda b: signed(b, "sig-secret-0123456789abcdefghijklmnop", application_id="bbbbbbbb-bbbb-cccc-dddd-0123456789ab"),
    lambda b: signed(b, "sig-secret-0123456789abcdefghijklmnop", iat=None),
    lambda b: httpx.Request("POST", "http://x/", content=b),
])
def test_bad_signatures_are_refused(signing, make):
    with pytest.raises(WebhookSignatureError) as info:
        signing.verify_webhook(make(json.dumps(DOC_COMPLETED_EVENT).encode()))
    assert "sig-secret" not in str(info.value)


def _tampered(body: bytes) -> httpx.Request:
    good = signed(body, "sig-secret-0123456789abcdefghijklmnop")
    return httpx.Request("POST", good.url, content=body.replace(b"completed", b"cancelled"), headers=good.headers)


def test_without_a_signature_secret_webhooks_are_not_checked(provider):
    provider.verify_webhook(httpx.Request("POST", "http://x/", content=b"{}"))
