"""polyai_platform, sans-I/O: requests and every documented response
(docs/providers/reference/polyai-platform-outbound-calling.md)."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from outbound_call_exporter import ErrorReason, FailureReason, PollError, State
from outbound_call_exporter_plugins.polyai.platform import PlatformParams, PlatformSettings, PolyAIPlatform

CALL = "OUT-550e8400-e29b-41d4-a716-446655440000"
TOKEN = "YOUR_AUTH_TOKEN-secret"

#: the doc's two response examples, verbatim, with the state each must give
DOC_EXAMPLES = [
    ({"status": "success", "reason": ""}, State.COMPLETED, None),
    ({"status": "failure", "reason": "call queueing: max timeout limit exceeded"}, State.FAILED,
     FailureReason.QUEUE_TIMEOUT),
]
#: the documented `status` values
DOC_STATUSES = [("queued", State.QUEUED), ("calling", State.DIALING), ("success", State.COMPLETED),
                ("failure", State.FAILED)]


def provider(**settings):
    return PolyAIPlatform(PlatformSettings(auth_token=TOKEN, **settings))


def respond(body, status=200, headers=None):
    p = provider()
    call = PlatformParams(call_id=CALL)
    return p.parse_response(call, httpx.Response(status, json=body, headers=headers, request=p.build_request(call)))


def test_request_matches_the_doc_curl_example():
    request = provider().build_request(PlatformParams(call_id=CALL))
    assert request.method == "GET"
    assert str(request.url) == ("https://api.us-1.platform.polyai.app/v1/outbound-calling/"
                                "OUT-550e8400-e29b-41d4-a716-446655440000/status")
    assert request.headers["X-PolyAi-Auth-Token"] == TOKEN
    assert not request.url.query


@pytest.mark.parametrize("region", ["us-1", "uk-1", "euw-1"])
def test_region_selects_the_documented_host(region):
    url = provider(region=region).build_request(PlatformParams(call_id=CALL)).url
    assert str(url) == f"https://api.{region}.platform.polyai.app/v1/outbound-calling/{CALL}/status"


@pytest.mark.parametrize("region", ["us", "eu-1", "US-1", ""])
def test_unknown_regions_are_refused(region):
    with pytest.raises(ValidationError):
        PlatformSettings(auth_token=TOKEN, region=region)


def test_region_defaults_to_us_1_and_base_url_overrides_it():
    assert PlatformSettings(auth_token=TOKEN).region == "us-1"
    p = PolyAIPlatform(PlatformSettings(auth_token=TOKEN, region="uk-1"), "http://127.0.0.1:1234")
    assert str(p.build_request(PlatformParams(call_id=CALL)).url) == \
        f"http://127.0.0.1:1234/v1/outbound-calling/{CALL}/status"


def test_no_per_call_params():
    assert set(PlatformParams.model_fields) == {"call_id"}
    with pytest.raises(ValidationError):
        PlatformParams(call_id=CALL, agent_id="x")


@pytest.mark.parametrize("body, state, failure", DOC_EXAMPLES)
def test_doc_examples_parse(body, state, failure):
    status = respond(body)
    assert status.state is state and status.provider_status == body["status"]
    assert status.failure_reason is failure
    assert status.reason == (body["reason"] or None)


@pytest.mark.parametrize("raw, state", DOC_STATUSES)
def test_every_documented_status_maps(raw, state):
    assert respond({"status": raw, "reason": ""}).state is state


def test_terminal_statuses_are_the_documented_ones():
    terminal = {raw for raw, state in PolyAIPlatform.status_map.items() if state.terminal}
    assert terminal == {"success", "failure", "SUCCESS", "FAILURE"}


def test_cadence_follows_the_polling_recommendations():
    cadence = PolyAIPlatform.cadence
    assert 2 <= cadence[State.QUEUED] <= 5 and 2 <= cadence[State.DIALING] <= 5


def test_optional_timestamps_of_another_published_variant_are_used():
    status = respond({"status": "failure", "reason": "", "created_at": "2024-03-15T10:00:00Z",
                      "last_updated": "2024-03-15T10:02:00Z"})
    assert status.created_at.isoformat() == "2024-03-15T10:00:00+00:00"
    assert status.ended_at == status.state_since
    assert status.ended_at.isoformat() == "2024-03-15T10:02:00+00:00"


def test_unknown_status_is_not_an_error():
    assert respond({"status": "transferring", "reason": ""}).state is State.UNKNOWN


@pytest.mark.parametrize("code, reason", [
    (400, ErrorReason.CLIENT_ERROR),   # invalid call SID format
    (401, ErrorReason.UNAUTHORIZED),   # invalid or missing authentication token
    (404, ErrorReason.NOT_FOUND),      # unknown call, or status expired ~2 h after the call ended
    (500, ErrorReason.SERVER_ERROR),   # "retry with exponential backoff": retryable
])
def test_documented_errors_map_to_reasons(code, reason):
    with pytest.raises(PollError) as info:
        respond({"detail": "x"}, status=code)
    assert info.value.reason is reason
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize("body", [{"reason": ""}, {"status": ["success"]}, {"status": "success", "last_updated": "tuesday"}])
def test_wrong_shapes_raise(body):
    with pytest.raises((PollError, ValueError)):
        respond(body)
