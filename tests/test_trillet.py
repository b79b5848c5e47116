"""Trillet plugin, sans-I/O: requests, every documented response, the not-found body. No server."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from outbound_call_exporter import ErrorReason, FailureReason, PollError, State
from outbound_call_exporter.config import param_defaults
from outbound_call_exporter_plugins.trillet import STATUS_MAP, Trillet, TrilletParams, TrilletSettings

BATCH = "batch_7891011121314"
KEY = "tr-key-5f1e2d"
WORKSPACE = "ws_123"
DOC = Path(__file__).resolve().parents[1] / "docs" / "providers" / "reference" / "trillet-batch-calls.md"


def ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=timezone.utc)


#: every example response in docs/providers/reference/trillet-batch-calls.md, verbatim
COMPLETED = {
    "jobId": "call_123",
    "status": "completed",
    "phone_number": "+1234567890",
    "startTime": 1703097600000,
    "endTime": 1703097642000,
    "duration": 42,
    "result": {
        "callId": "call_abc123",
        "transcript": "Hello John, this is an automated call...",
        "outcome": "successful",
        "metadata": {"first_name": "John", "last_name": "Doe", "email": "john.doe@example.com"},
    },
}
FAILED = {
    "jobId": "call_124",
    "status": "failed",
    "phone_number": "+1987654321",
    "startTime": 1703097600000,
    "endTime": 1703097615000,
    "error": "Number busy - unable to connect after 3 attempts",
}
ACTIVE = {
    "jobId": "call_125",
    "status": "active",
    "phone_number": "+1555666777",
    "startTime": 1703097700000,
}
DOC_EXAMPLES = [COMPLETED, FAILED, ACTIVE]

#: what each example must parse to
EXPECTED = {
    "call_123": dict(state=State.COMPLETED, provider_status="completed", reason=None,
                     created_at=None, answered_at=ms(1703097600000), ended_at=ms(1703097642000),
                     state_since=ms(1703097642000), duration_seconds=42.0, failure_reason=None,
                     sip_status_code=None,
                     extras={"phone_number": "+1234567890",
                             "result": {"callId": "call_abc123", "outcome": "successful"}}),
    "call_124": dict(state=State.FAILED, provider_status="failed",
                     reason="Number busy - unable to connect after 3 attempts",
                     created_at=None, answered_at=None, ended_at=ms(1703097615000),
                     state_since=ms(1703097615000), duration_seconds=None, failure_reason=FailureReason.BUSY,
                     sip_status_code=None,
                     extras={"phone_number": "+1987654321",
                             "error": "Number busy - unable to connect after 3 attempts"}),
    "call_125": dict(state=State.IN_PROGRESS, provider_status="active", reason=None,
                     created_at=None, answered_at=None, ended_at=None,
                     state_since=ms(1703097700000), duration_seconds=None, failure_reason=None,
                     sip_status_code=None, extras={"phone_number": "+1555666777"}),
}


@pytest.fixture
def provider():
    return Trillet(TrilletSettings(api_key=KEY, workspace_id=WORKSPACE, batch_id=BATCH))


def respond(provider, body, status=200, job="call_123", headers=None, **kwargs):
    call = TrilletParams(call_id=job, batch_id=BATCH)
    response = httpx.Response(status, json=body, headers=headers, request=provider.build_request(call), **kwargs)
    return provider.parse_response(call, response)


# -- requests ---------------------------------------------------------------------------------


def test_request_matches_the_doc(provider):
    request = provider.build_request(TrilletParams(call_id="call_123", batch_id=BATCH))
    assert request.method == "GET"
    assert str(request.url) == "https://api.trillet.ai/v1/api/batch-calls/batch_7891011121314/calls/call_123"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["x-workspace-id"] == WORKSPACE
    assert "authorization" not in request.headers


def test_base_url_override_keeps_a_path_prefix():
    p = Trillet(TrilletSettings(api_key=KEY, workspace_id=WORKSPACE), "http://127.0.0.1:8080/proxy/")
    url = p.build_request(TrilletParams(call_id="call_1", batch_id="b1")).url
    assert str(url) == "http://127.0.0.1:8080/proxy/v1/api/batch-calls/b1/calls/call_1"


@pytest.mark.parametrize("job, batch", [("a:b", "x.y"), ("job-1_2", "B:9"), ("...", "a..b")])
def test_ids_are_single_encoded_path_segments(provider, job, batch):
    url = provider.build_request(TrilletParams(call_id=job, batch_id=batch)).url
    segments = url.raw_path.decode().split("/")
    assert segments[-4:] == ["batch-calls", batch.replace(":", "%3A"), "calls", job.replace(":", "%3A")]


@pytest.mark.parametrize("field, value", [
    ("call_id", "call/123"), ("call_id", ".."), ("call_id", ""), ("call_id", "a" * 129), ("call_id", "a b"),
    ("batch_id", "../x"), ("batch_id", "."), ("batch_id", "b?x=1"), ("batch_id", "b%2F"),
])
def test_unsafe_ids_are_refused_at_registration(field, value):
    good = {"call_id": "call_1", "batch_id": BATCH}
    with pytest.raises(ValidationError):
        TrilletParams(**{**good, field: value})


def test_batch_id_setting_is_the_params_default():
    settings = TrilletSettings(api_key=KEY, workspace_id=WORKSPACE, batch_id=BATCH)
    assert param_defaults(settings, TrilletParams) == {"batch_id": BATCH}
    assert param_defaults(TrilletSettings(api_key=KEY, workspace_id=WORKSPACE), TrilletParams) == {}


@pytest.mark.parametrize("settings", [
    {"workspace_id": WORKSPACE},                                   # api_key required
    {"api_key": KEY},                                              # workspace_id required
    {"api_key": "has space", "workspace_id": WORKSPACE},
    {"api_key": "line\nbreak", "workspace_id": WORKSPACE},
    {"api_key": "", "workspace_id": WORKSPACE},
    {"api_key": KEY, "workspace_id": "ws\r\nx-evil: 1"},
    {"api_key": KEY, "workspace_id": WORKSPACE, "token": "x"},    # unknown key
])
def test_bad_settings_are_refused_without_echoing_the_key(settings):
    with pytest.raises(ValidationError) as info:
        TrilletSettings(**settings)
    assert "line\nbreak" not in str(info.value.errors(include_input=False))


def test_api_key_stays_out_of_reprs():
    settings = TrilletSettings(api_key=KEY, workspace_id=WORKSPACE)
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())


# -- responses --------------------------------------------------------------------------------


@pytest.mark.parametrize("body", DOC_EXAMPLES, ids=[b["jobId"] for b in DOC_EXAMPLES])
def test_every_doc_example_parses(provider, body):
    status = respond(provider, body, job=body["jobId"])
    for name, expected in EXPECTED[body["jobId"]].items():
        assert getattr(status, name) == expected, name
    assert "transcript" not in str(status.extras) and "metadata" not in str(status.extras)


def test_doc_examples_here_are_the_docs_examples():
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S)
    assert [json.loads(b) for b in blocks] == DOC_EXAMPLES


@pytest.mark.parametrize("raw, state", sorted(STATUS_MAP.items()))
def test_every_documented_status_maps(provider, raw, state):
    assert respond(provider, {**ACTIVE, "status": raw}).state is state


def test_documented_status_list_is_complete():
    assert set(STATUS_MAP) == {"waiting", "active", "completed", "failed"}
    if DOC.exists():
        documented = set(re.findall(r"^\s*- `([a-z_]+)` - ", DOC.read_text(), re.M))
        assert documented == set(STATUS_MAP)


def test_waiting_job_has_no_times(provider):
    status = respond(provider, {"jobId": "call_126", "status": "waiting", "phone_number": "+1"}, job="call_126")
    assert status.state is State.QUEUED and status.provider_status == "waiting"
    assert status.state_since is None and status.ended_at is None and status.answered_at is None


def test_unknown_status_is_not_an_error(provider):
    status = respond(provider, {**ACTIVE, "status": "ringing"})
    assert status.state is State.UNKNOWN and status.provider_status == "ringing"


@pytest.mark.parametrize("text, reason", [
    ("Number busy - unable to connect after 3 attempts", FailureReason.BUSY),
    ("No answer - unable to connect after 3 attempts", FailureReason.NO_ANSWER),
    ("Call was not answered", FailureReason.NO_ANSWER),
    ("Invalid phone number", FailureReason.UNREACHABLE),
    ("Unable to connect after 3 attempts", FailureReason.UNREACHABLE),
    ("Call rejected by callee", FailureReason.REJECTED),
    ("Batch cancelled", FailureReason.CANCELLED),
    ("Agent crashed", FailureReason.OTHER),
    (None, None),
])
def test_failure_text_is_classified_and_the_state_stays_failed(provider, text, reason):
    body = {**FAILED, "error": text}
    status = respond(provider, body)
    assert status.state is State.FAILED
    assert status.failure_reason is reason
    assert status.reason == text


def test_error_text_on_a_completed_call_is_no_failure_reason(provider):
    assert respond(provider, {**COMPLETED, "error": "busy"}).failure_reason is None


# -- not found and errors -------------------------------------------------------------------------


NOT_FOUND_BODY = {"status": "not_found", "error": "Call not found"}


@pytest.mark.parametrize("status", [404, 200])
def test_not_found_body_is_not_found_not_a_status(provider, status):
    with pytest.raises(PollError) as info:
        respond(provider, NOT_FOUND_BODY, status=status)
    assert info.value.reason is ErrorReason.NOT_FOUND
    assert "not_found" not in STATUS_MAP


@pytest.mark.parametrize("content", [b"", b"Not Found", b'{"error": "Call not found"}'])
def test_404_without_the_documented_body_is_not_found_too(provider, content):
    call = TrilletParams(call_id="call_1", batch_id=BATCH)
    response = httpx.Response(404, content=content, request=provider.build_request(call))
    with pytest.raises(PollError) as info:
        provider.parse_response(call, response)
    assert info.value.reason is ErrorReason.NOT_FOUND


@pytest.mark.parametrize("code, reason", [
    (401, ErrorReason.UNAUTHORIZED), (403, ErrorReason.UNAUTHORIZED), (429, ErrorReason.RATE_LIMITED),
    (400, ErrorReason.CLIENT_ERROR), (500, ErrorReason.SERVER_ERROR), (503, ErrorReason.SERVER_ERROR),
])
def test_http_errors_map_to_reasons(provider, code, reason):
    with pytest.raises(PollError) as info:
        respond(provider, {"status": "error", "error": "Server error retrieving call status"}, status=code,
                headers={"Retry-After": "7"})
    assert info.value.reason is reason
    assert KEY not in str(info.value) and WORKSPACE not in str(info.value)
    if code in (429, 500, 503):
        assert info.value.retry_after == 7


@pytest.mark.parametrize("body", [
    {"jobId": "call_1"}, {**ACTIVE, "status": 3}, {**ACTIVE, "startTime": "yesterday"},
    {**COMPLETED, "endTime": True}, {**COMPLETED, "duration": "42"}, {**ACTIVE, "startTime": [1]},
])
def test_wrong_shapes_raise(provider, body):
    with pytest.raises((PollError, ValueError, TypeError)):
        respond(provider, body)


@pytest.mark.parametrize("content", [b"[]", b"not json", b'"completed"'])
def test_non_object_bodies_are_invalid_responses(provider, content):
    call = TrilletParams(call_id="call_1", batch_id=BATCH)
    response = httpx.Response(200, content=content, request=provider.build_request(call))
    with pytest.raises(PollError) as info:
        provider.parse_response(call, response)
    assert info.value.reason is ErrorReason.INVALID_RESPONSE


def test_epoch_milliseconds_are_not_read_as_seconds(provider):
    status = respond(provider, COMPLETED)
    assert status.ended_at.year == 2023 and status.ended_at.microsecond == 0


def test_api_key_echoed_in_error_text_is_redacted(provider):
    status = respond(provider, {**FAILED, "error": f"Number busy; key {KEY} rejected"})
    assert KEY not in str(status) and status.reason == "Number busy; key [redacted] rejected"
    assert status.failure_reason is FailureReason.BUSY
