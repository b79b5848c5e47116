"""polyai_agents, sans-I/O: requests and every documented response
(docs/providers/reference/polyai-agents-api-v1.openapi.md)."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from outbound_call_exporter import ErrorReason, FailureReason, PollError, State
from outbound_call_exporter_plugins.polyai.agents import AgentsParams, AgentsSettings, PolyAIAgents

CALL = "OUT-550e8400-e29b-41d4-a716-446655440000"
AGENT = "agent-123"
KEY = "key-secret-123"

#: the response schema's `example` values, assembled (the doc gives no other response body)
DOC_EXAMPLE = {"callSid": "OUT-550e8400-e29b-41d4-a716-446655440000", "status": "SUCCESS", "reason": ""}
#: the `status` enum, every value, with its normalized state
DOC_STATUSES = [("QUEUED", State.QUEUED), ("CALLING", State.DIALING), ("SUCCESS", State.COMPLETED),
                ("FAILURE", State.FAILED)]


def provider(**settings):
    return PolyAIAgents(AgentsSettings(api_key=KEY, **settings))


def params(**overrides):
    return AgentsParams(**{"call_id": CALL, "agent_id": AGENT, "environment": "live", **overrides})


def respond(body, status=200, p=None, headers=None):
    p = p or provider()
    call = params()
    response = httpx.Response(status, json=body, headers=headers, request=p.build_request(call))
    return p.parse_response(call, response)


def test_request_matches_the_doc():
    request = provider().build_request(params())
    assert request.method == "GET"
    assert str(request.url) == ("https://api.us.poly.ai/v1/agents/agent-123/telephony/outbound-calls/"
                                "OUT-550e8400-e29b-41d4-a716-446655440000/status?environment=live")
    assert request.headers["X-API-KEY"] == KEY
    assert "authorization" not in request.headers


@pytest.mark.parametrize("region, host", [("us", "api.us.poly.ai"), ("eu", "api.eu.poly.ai"),
                                          ("uk", "api.uk.poly.ai"), ("studio", "api.studio.poly.ai")])
def test_region_selects_the_documented_server(region, host):
    url = provider(region=region).build_request(params()).url
    assert url.scheme == "https" and url.host == host


def test_region_defaults_to_us_and_base_url_overrides_it():
    assert AgentsSettings(api_key=KEY).region == "us"
    p = PolyAIAgents(AgentsSettings(api_key=KEY, region="eu"), "http://127.0.0.1:9/proxy/")
    assert str(p.build_request(params()).url).startswith("http://127.0.0.1:9/proxy/v1/agents/agent-123/")


@pytest.mark.parametrize("environment", ["sandbox", "pre-release", "live"])
def test_every_environment_goes_in_the_query(environment):
    url = provider().build_request(params(environment=environment)).url
    assert url.params.get("environment") == environment and url.query == f"environment={environment}".encode()


@pytest.mark.parametrize("field, value", [
    ("environment", "production"), ("environment", "LIVE"), ("environment", ""),
    ("region", "us-1"), ("region", "ap"),
])
def test_settings_are_validated(field, value):
    with pytest.raises(ValidationError) as info:
        AgentsSettings(api_key=KEY, **{field: value})
    assert info.value.errors()[0]["loc"] == (field,)


def test_environment_is_required_per_call():
    with pytest.raises(ValidationError) as info:
        AgentsParams(call_id=CALL, agent_id=AGENT)
    assert info.value.errors()[0]["loc"] == ("environment",)


def test_path_params_are_encoded_as_one_segment():
    url = provider().build_request(params(agent_id="team:agent.v2")).url
    assert url.raw_path.startswith(b"/v1/agents/team%3Aagent.v2/telephony/")


@pytest.mark.parametrize("agent_id", ["a/b", "..", ".", "", "a b", "x" * 129, "a\n", "a?b"])
def test_bad_agent_ids_are_refused(agent_id):
    with pytest.raises(ValidationError):
        params(agent_id=agent_id)


def test_doc_example_parses():
    status = respond(DOC_EXAMPLE)
    assert status.state is State.COMPLETED and status.provider_status == "SUCCESS"
    assert status.reason is None and status.failure_reason is None
    assert status.created_at is status.ended_at is status.state_since is None
    assert "callSid" not in status.extras


@pytest.mark.parametrize("raw, state", DOC_STATUSES)
def test_every_documented_status_maps(raw, state):
    status = respond({**DOC_EXAMPLE, "status": raw})
    assert status.state is state and status.provider_status == raw


def test_status_map_is_the_documented_enum_in_both_published_cases():
    assert set(PolyAIAgents.status_map) == {r for r, _ in DOC_STATUSES} | {r.lower() for r, _ in DOC_STATUSES}


@pytest.mark.parametrize("reason, failure", [
    ("call queueing: max timeout limit exceeded", FailureReason.QUEUE_TIMEOUT),
    ("Call was not answered", FailureReason.NO_ANSWER),
    ("Destination busy", FailureReason.BUSY),
    ("something else", FailureReason.OTHER),
    ("", None),
])
def test_failure_reason_is_classified_and_the_state_stays_failed(reason, failure):
    status = respond({**DOC_EXAMPLE, "status": "FAILURE", "reason": reason})
    assert status.state is State.FAILED
    assert status.failure_reason is failure
    assert status.reason == (reason or None)


def test_reason_is_kept_for_non_failures_but_not_classified():
    status = respond({**DOC_EXAMPLE, "status": "CALLING", "reason": "dialling"})
    assert status.state is State.DIALING and status.reason == "dialling" and status.failure_reason is None


def test_unknown_status_is_not_an_error():
    status = respond({**DOC_EXAMPLE, "status": "TRANSFERRED"})
    assert status.state is State.UNKNOWN and status.provider_status == "TRANSFERRED"


@pytest.mark.parametrize("code, reason", [
    (400, ErrorReason.CLIENT_ERROR),   # missing environment, invalid call SID, no connector found
    (401, ErrorReason.UNAUTHORIZED),   # missing or invalid API key
    (403, ErrorReason.UNAUTHORIZED),   # insufficient permissions
    (404, ErrorReason.NOT_FOUND),      # not documented: after the ~2 h retention
    (429, ErrorReason.RATE_LIMITED),
    (502, ErrorReason.SERVER_ERROR),   # "retry with exponential backoff": retryable
])
def test_documented_errors_map_to_reasons(code, reason):
    with pytest.raises(PollError) as info:
        respond({"message": "x"}, status=code, headers={"Retry-After": "4"})
    assert info.value.reason is reason
    assert KEY not in str(info.value)
    if code in (429, 502):
        assert info.value.retry_after == 4


@pytest.mark.parametrize("body", [{"callSid": CALL}, {"status": None}, {"status": 3},
                                  {"status": "SUCCESS", "created_at": "noon"}])
def test_wrong_shapes_raise(body):
    with pytest.raises((PollError, ValueError)):
        respond(body)


def test_non_json_body_is_an_invalid_response():
    p = provider()
    call = params()
    response = httpx.Response(200, content=b"<html>", request=p.build_request(call))
    with pytest.raises(PollError) as info:
        p.parse_response(call, response)
    assert info.value.reason is ErrorReason.INVALID_RESPONSE


def test_secret_is_not_in_reprs():
    p = provider()
    assert KEY not in repr(p.settings) and KEY not in str(p.settings)
