"""Twilio plugin, sans-I/O: the request, the documented examples, callbacks and their signature.

The examples are docs/providers/reference/twilio.md's (Twilio's own docs, verbatim).
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import httpx
import pytest
from pydantic import ValidationError

from outbound_call_exporter import ErrorReason, FailureReason, PollError, State, WebhookSignatureError
from outbound_call_exporter_plugins.twilio import STATUS_MAP, Twilio, TwilioParams, TwilioSettings
from outbound_call_exporter_plugins.twilio.signature import signature

ACCOUNT = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
KEY = "SK" + "b" * 32
CALL = "CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

#: "Make outbound phone calls", the Call resource in the response (subresource_uris shortened)
DOC_CALL = {
    "account_sid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "answered_by": None, "api_version": "2010-04-01",
    "caller_name": None, "date_created": "Tue, 31 Aug 2010 20:36:28 +0000",
    "date_updated": "Tue, 31 Aug 2010 20:36:44 +0000", "direction": "inbound", "duration": "15",
    "end_time": "Tue, 31 Aug 2010 20:36:44 +0000", "forwarded_from": "+141586753093", "from": "+14158675308",
    "from_formatted": "(415) 867-5308", "group_sid": None, "parent_call_sid": None,
    "phone_number_sid": "PNaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "price": "-0.03000", "price_unit": "USD",
    "sid": "CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "start_time": "Tue, 31 Aug 2010 20:36:29 +0000",
    "status": "completed",
    "subresource_uris": {"notifications": "/2010-04-01/Accounts/ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/"
                                          "Calls/CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/Notifications.json"},
    "to": "+14158675309", "to_formatted": "(415) 867-5309", "trunk_sid": None,
    "uri": "/2010-04-01/Accounts/ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/Calls/CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.json",
    "queue_time": "1000",
}
#: the request validators' published vector
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
                 "From": "+14158675309", "To": "+18005551212"}
VECTOR_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)


@pytest.fixture
def provider():
    return Twilio(TwilioSettings(account_sid=ACCOUNT, auth_token="tok-123"))


def respond(provider, body, status=200, headers=None):
    call = TwilioParams(call_id=CALL)
    request = provider.build_request(call)
    return provider.parse_response(call, httpx.Response(status, json=body, headers=headers, request=request))


def basic(request) -> str:
    return base64.b64decode(request.headers["Authorization"].removeprefix("Basic ")).decode()


def test_request_matches_the_doc(provider):
    request = provider.build_request(TwilioParams(call_id=CALL))
    assert request.method == "GET"
    assert str(request.url) == f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json"
    assert basic(request) == f"{ACCOUNT}:tok-123"


def test_api_key_authenticates_when_given():
    p = Twilio(TwilioSettings(account_sid=ACCOUNT, auth_token="tok", api_key_sid=KEY, api_key_secret="sec"))
    assert basic(p.build_request(TwilioParams(call_id=CALL))) == f"{KEY}:sec"


@pytest.mark.parametrize("settings, host", [
    ({}, "api.twilio.com"),
    ({"region": "ie1"}, "api.dublin.ie1.twilio.com"),
    ({"region": "au1"}, "api.sydney.au1.twilio.com"),
    ({"region": "jp1", "edge": "tokyo"}, "api.tokyo.jp1.twilio.com"),
    ({"edge": "umatilla"}, "api.umatilla.us1.twilio.com"),
])
def test_regions_and_edges(settings, host):
    assert Twilio.default_base_url_for(TwilioSettings(account_sid=ACCOUNT, auth_token="t", **settings)) \
        == f"https://{host}"


@pytest.mark.parametrize("settings", [
    {"account_sid": ACCOUNT},  # no credential
    {"account_sid": ACCOUNT, "api_key_sid": KEY},  # key without its secret
    {"account_sid": ACCOUNT, "api_key_secret": "s"},
    {"account_sid": "AC123", "auth_token": "t"},
    {"account_sid": ACCOUNT, "auth_token": "t", "region": "ie2"},
    {"account_sid": ACCOUNT, "auth_token": "t", "webhook_url": "https://x.example/hook?token=1"},
])
def test_bad_settings_are_refused(settings):
    with pytest.raises(ValidationError):
        TwilioSettings(**settings)


@pytest.mark.parametrize("sid", ["CA123", "ca" + "a" * 32, "CA" + "g" * 32, "CA" + "a" * 33])
def test_call_ids_are_call_sids(sid):
    with pytest.raises(ValidationError):
        TwilioParams(call_id=sid)


def test_doc_example_parses(provider):
    status = respond(provider, DOC_CALL)
    assert status.state is State.COMPLETED and status.provider_status == "completed"
    assert status.created_at == at("2010-08-31 20:36:28")
    assert status.ended_at == status.state_since == at("2010-08-31 20:36:44")
    assert status.duration_seconds == 15
    assert status.answered_at == at("2010-08-31 20:36:29")  # end_time - duration: the doc's start_time
    assert status.extras["to"] == "+14158675309" and status.extras["queue_time"] == "1000"
    assert "subresource_uris" not in status.extras and status.failure_reason is None


@pytest.mark.parametrize("raw, state", sorted(STATUS_MAP.items()))
def test_every_documented_status_maps(provider, raw, state):
    assert respond(provider, {**DOC_CALL, "status": raw}).state is state


def test_documented_status_list_is_complete():
    # the Call resource's CallEnumStatus, plus the callbacks' `initiated`
    documented = "queued ringing in-progress completed busy failed no-answer canceled".split()
    assert set(STATUS_MAP) == {*documented, "initiated"}


def test_unfinished_calls_have_no_end(provider):
    ringing = respond(provider, {**DOC_CALL, "status": "ringing", "end_time": None, "duration": None})
    assert ringing.state is State.DIALING and ringing.ended_at is None and ringing.answered_at is None
    assert ringing.state_since == at("2010-08-31 20:36:29")  # start_time: when dialling began
    queued = respond(provider, {**DOC_CALL, "status": "queued", "start_time": None, "end_time": None,
                                "duration": None})
    assert queued.state_since == queued.created_at == at("2010-08-31 20:36:28")


def test_busy_call_ends_at_its_last_update(provider):
    # end_time and duration are empty for a call that did not complete
    status = respond(provider, {**DOC_CALL, "status": "busy", "end_time": None, "duration": None})
    assert status.state is State.BUSY and status.ended_at == at("2010-08-31 20:36:44")
    assert status.answered_at is None and status.duration_seconds is None


def test_unknown_status_is_not_an_error(provider):
    status = respond(provider, {**DOC_CALL, "status": "teleporting"})
    assert status.state is State.UNKNOWN and status.provider_status == "teleporting"


@pytest.mark.parametrize("code, body, reason", [
    (401, {"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003",
           "status": 401}, ErrorReason.UNAUTHORIZED),
    (404, {"code": 20404, "message": "The requested resource was not found",
           "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404}, ErrorReason.NOT_FOUND),
    (429, {"code": 20429, "message": "Too Many Requests", "status": 429}, ErrorReason.RATE_LIMITED),
    (400, {"code": 20001, "message": "x", "status": 400}, ErrorReason.CLIENT_ERROR),
    (503, {"code": 20503, "message": "Service unavailable", "status": 503}, ErrorReason.SERVER_ERROR),
])
def test_error_bodies_map_to_reasons(provider, code, body, reason):
    with pytest.raises(PollError) as info:
        respond(provider, body, status=code, headers={"Retry-After": "3"})
    assert info.value.reason is reason and "tok-123" not in str(info.value)
    if code == 429:
        assert info.value.retry_after == 3


@pytest.mark.parametrize("body", [
    {"sid": CALL}, {**DOC_CALL, "status": 5}, {**DOC_CALL, "date_created": "yesterday"},
    {**DOC_CALL, "date_created": 1283286988}, {**DOC_CALL, "duration": "fifteen"}, {**DOC_CALL, "duration": "-1"},
    {**DOC_CALL, "duration": True},
])
def test_wrong_shapes_raise(provider, body):
    with pytest.raises((PollError, ValueError, TypeError)):
        respond(provider, body)


# -- status callbacks and their signature ----------------------------------------------------------

def callback(**fields):
    base = {"AccountSid": ACCOUNT, "CallSid": CALL, "CallStatus": "completed", "CallDuration": "15",
            "Timestamp": "Tue, 31 Aug 2010 20:36:44 +0000", "To": "+14158675309", "From": "+14158675308",
            "Direction": "outbound-api", "ApiVersion": "2010-04-01"}
    return {k: v for k, v in {**base, **fields}.items() if v is not None}


def test_completed_callback(provider):
    listed = provider.parse_webhook(callback())
    assert listed.params == {"call_id": CALL}
    s = listed.status
    assert s.state is State.COMPLETED and s.ended_at == s.state_since == at("2010-08-31 20:36:44")
    assert s.duration_seconds == 15 and s.answered_at == at("2010-08-31 20:36:29")


def test_failed_callback_carries_its_sip_code(provider):
    s = provider.parse_webhook(callback(CallStatus="failed", CallDuration=None, SipResponseCode="404")).status
    assert s.state is State.FAILED and s.sip_status_code == 404 and s.failure_reason is FailureReason.UNREACHABLE
    s = provider.parse_webhook(callback(CallStatus="busy", CallDuration=None, SipResponseCode="486")).status
    assert s.state is State.BUSY and s.sip_status_code == 486 and s.failure_reason is None


def test_progress_callbacks(provider):
    for raw, state in (("initiated", State.DIALING), ("ringing", State.DIALING), ("in-progress", State.IN_PROGRESS)):
        s = provider.parse_webhook(callback(CallStatus=raw, CallDuration=None)).status
        assert s.state is state and s.ended_at is None and s.state_since == at("2010-08-31 20:36:44")


@pytest.mark.parametrize("fields", [{"CallSid": None}, {"CallStatus": None}, {"CallSid": ""},
                                    {"AccountSid": "AC" + "0" * 32}, {"Timestamp": "soon"}])
def test_bad_callbacks_raise(provider, fields):
    with pytest.raises(ValueError):
        provider.parse_webhook(callback(**fields))


def test_signature_matches_the_published_vector():
    assert signature("12345", VECTOR_URL, VECTOR_PARAMS) == VECTOR_SIGNATURE


def form_request(url, params, sig, content_type="application/x-www-form-urlencoded"):
    headers = {"Content-Type": content_type} | ({"X-Twilio-Signature": sig} if sig else {})
    return httpx.Request("POST", url, headers=headers, content=httpx.QueryParams(params).__str__().encode())


def test_verify_accepts_the_published_vector():
    p = Twilio(TwilioSettings(account_sid=ACCOUNT, auth_token="12345"))
    p.verify_webhook(form_request(VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE))
    p.verify_webhook(form_request(VECTOR_URL.replace(".com/", ".com:443/"), VECTOR_PARAMS, VECTOR_SIGNATURE))


@pytest.mark.parametrize("url, params, sig", [
    (VECTOR_URL, {**VECTOR_PARAMS, "Digits": "9999"}, VECTOR_SIGNATURE),
    (VECTOR_URL.replace("bar=2", "bar=3"), VECTOR_PARAMS, VECTOR_SIGNATURE),
    (VECTOR_URL.replace("https", "http"), VECTOR_PARAMS, VECTOR_SIGNATURE),
    (VECTOR_URL, VECTOR_PARAMS, None),
    (VECTOR_URL, VECTOR_PARAMS, "not-base64"),
])
def test_verify_refuses_anything_else(url, params, sig):
    p = Twilio(TwilioSettings(account_sid=ACCOUNT, auth_token="12345"))
    with pytest.raises(WebhookSignatureError) as info:
        p.verify_webhook(form_request(url, params, sig))
    assert "12345" not in str(info.value)


def test_webhook_url_setting_replaces_what_the_exporter_sees():
    """Behind an ingress the exporter is called on another URL; the query string is kept."""
    public = "https://mycompany.com/myapp.php"
    p = Twilio(TwilioSettings(account_sid=ACCOUNT, auth_token="12345", webhook_url=public))
    seen = "http://10.0.0.7:9877/api/v1/webhooks/twilio-main?foo=1&bar=2"
    p.verify_webhook(form_request(seen, VECTOR_PARAMS, VECTOR_SIGNATURE))
    with pytest.raises(WebhookSignatureError):
        Twilio(TwilioSettings(account_sid=ACCOUNT, auth_token="12345")).verify_webhook(
            form_request(seen, VECTOR_PARAMS, VECTOR_SIGNATURE))


def test_json_body_is_checked_against_body_sha256():
    import hashlib

    body = b'{"property": "value"}'
    url = f"https://example.com/hook?bodySHA256={hashlib.sha256(body).hexdigest()}"
    p = Twilio(TwilioSettings(account_sid=ACCOUNT, auth_token="12345"))
    good = httpx.Request("POST", url, content=body, headers={"Content-Type": "application/json",
                                                             "X-Twilio-Signature": signature("12345", url, {})})
    p.verify_webhook(good)
    tampered = httpx.Request("POST", url, content=body + b" ", headers=good.headers)
    with pytest.raises(WebhookSignatureError):
        p.verify_webhook(tampered)


def test_api_key_only_account_cannot_verify():
    p = Twilio(TwilioSettings(account_sid=ACCOUNT, api_key_sid=KEY, api_key_secret="s"))
    with pytest.raises(WebhookSignatureError, match="auth_token"):
        p.verify_webhook(form_request(VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE))
