"""polyai_connector, sans-I/O: requests and every documented response
(docs/providers/reference/polyai-connector-outbound-call.md)."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import pytest
from pydantic import ValidationError

from outbound_call_exporter import ErrorReason, Event, PollError, State
from outbound_call_exporter_plugins.polyai.connector import (STATUS_MAP, ConnectorParams, ConnectorSettings,
                                                             PolyAIConnector)

CALL = "OUT-550e8400-e29b-41d4-a716-446655440000"
CONNECTOR = "your-connector-id"  # the doc example's value: the echoed secret

#: the doc's "Response example", verbatim
DOC_EXAMPLE = {
    "call_sid": "OUT-550e8400-e29b-41d4-a716-446655440000",
    "account_id": "your-account-id",
    "project_id": "your-project-id",
    "client_env": "production",
    "connector_id": "your-connector-id",
    "created_at": "2024-03-15T10:00:00Z",
    "status": "completed",
    "last_updated": "2024-03-15T10:05:30Z",
    "event_history": [
        {"CREATED": "2024-03-15T10:00:00Z"},
        {"queued": "2024-03-15T10:00:01Z"},
        {"ringing": "2024-03-15T10:00:05Z"},
        {"in-progress": "2024-03-15T10:00:12Z"},
        {"completed": "2024-03-15T10:05:30Z"},
    ],
}
#: the response template at the top of the doc page, verbatim (placeholders, not a response)
DOC_TEMPLATE = {
    "call_sid": "<string>", "account_id": "<string>", "project_id": "<string>", "client_env": "<string>",
    "connector_id": "<string>", "created_at": "<string>", "status": "<string>", "last_updated": "<string>",
    "event_history": [{}],
}
#: the nine documented statuses, as spelled in the doc
DOC_STATUSES = [("CREATED", State.QUEUED), ("queued", State.QUEUED), ("ringing", State.DIALING),
                ("in-progress", State.IN_PROGRESS), ("completed", State.COMPLETED), ("failed", State.FAILED),
                ("no-answer", State.NO_ANSWER), ("busy", State.BUSY), ("cancelled", State.CANCELLED)]


def at(minute, second):
    return datetime(2024, 3, 15, 10, minute, second, tzinfo=timezone.utc)


def provider(base_url=None):
    return PolyAIConnector(ConnectorSettings(connector_id=CONNECTOR, account_id="your-account-id",
                                             project_id="your-project-id"), base_url)


def params(**overrides):
    return ConnectorParams(**{"call_id": CALL, "account_id": "your-account-id", "project_id": "your-project-id",
                              **overrides})


def respond(body, status=200):
    p = provider()
    call = params()
    return p.parse_response(call, httpx.Response(status, json=body, request=p.build_request(call)))


def test_request_matches_the_doc_curl_example():
    request = provider().build_request(params())
    assert request.method == "GET"
    assert str(request.url) == ("https://api.us-1.platform.polyai.app/api/v1/your-account-id/your-project-id/"
                                "outbound-call/status/OUT-550e8400-e29b-41d4-a716-446655440000")
    assert request.headers["X-CONNECTOR-ID"] == CONNECTOR


def test_base_url_override_and_segment_encoding():
    request = provider("https://api.uk-1.platform.polyai.app/").build_request(
        params(account_id="acct:1", project_id="proj.2"))
    assert request.url.host == "api.uk-1.platform.polyai.app"
    assert request.url.raw_path == (b"/api/v1/acct%3A1/proj.2/outbound-call/status/"
                                    b"OUT-550e8400-e29b-41d4-a716-446655440000")


@pytest.mark.parametrize("field", ["account_id", "project_id"])
@pytest.mark.parametrize("value", ["a/b", "..", "", "a b", "%2e%2e"])
def test_bad_path_params_are_refused(field, value):
    with pytest.raises(ValidationError) as info:
        params(**{field: value})
    assert info.value.errors()[0]["loc"] == (field,)


def test_path_params_are_required_per_call():
    with pytest.raises(ValidationError) as info:
        ConnectorParams(call_id=CALL)
    assert {e["loc"] for e in info.value.errors()} == {("account_id",), ("project_id",)}


def test_doc_example_parses_with_the_providers_clock():
    status = respond(DOC_EXAMPLE)
    assert status.state is State.COMPLETED and status.provider_status == "completed"
    assert status.created_at == at(0, 0)
    assert status.answered_at == at(0, 12)
    assert status.ended_at == status.state_since == at(5, 30)
    assert status.duration_seconds == 318.0  # talk time: completed - in-progress
    assert status.events == (
        Event(State.QUEUED, "CREATED", at(0, 0)), Event(State.QUEUED, "queued", at(0, 1)),
        Event(State.DIALING, "ringing", at(0, 5)), Event(State.IN_PROGRESS, "in-progress", at(0, 12)),
        Event(State.COMPLETED, "completed", at(5, 30)),
    )
    assert status.failure_reason is None and status.reason is None


def test_the_echoed_connector_id_is_dropped():
    status = respond(DOC_EXAMPLE)
    assert status.extras == {"client_env": "production"}
    assert CONNECTOR not in repr(status)


def test_doc_template_is_refused_as_an_invalid_response():
    # "<string>" timestamps and an empty event are placeholders, not data: counted invalid_response
    with pytest.raises(ValueError):
        respond(DOC_TEMPLATE)


@pytest.mark.parametrize("raw, state", DOC_STATUSES)
def test_every_documented_status_maps(raw, state):
    history = DOC_EXAMPLE["event_history"][:3] + [{raw: "2024-03-15T10:00:20Z"}]
    status = respond({**DOC_EXAMPLE, "status": raw, "last_updated": "2024-03-15T10:00:20Z",
                      "event_history": history})
    assert status.state is state and status.provider_status == raw
    assert status.state_since == at(0, 20)
    assert status.ended_at == (at(0, 20) if state.terminal else None)


def test_status_map_is_exactly_the_documented_list():
    assert STATUS_MAP == dict(DOC_STATUSES)


@pytest.mark.parametrize("raw", ["created", "COMPLETED", "in_progress", "no_answer", "canceled"])
def test_other_spellings_are_unknown_not_guessed(raw):
    assert respond({**DOC_EXAMPLE, "status": raw}).state is State.UNKNOWN


@pytest.mark.parametrize("raw, state", [("no-answer", State.NO_ANSWER), ("busy", State.BUSY),
                                        ("cancelled", State.CANCELLED)])
def test_unanswered_terminal_states_have_no_answer_time(raw, state):
    history = DOC_EXAMPLE["event_history"][:3] + [{raw: "2024-03-15T10:00:50Z"}]
    status = respond({**DOC_EXAMPLE, "status": raw, "last_updated": "2024-03-15T10:00:50Z",
                      "event_history": history})
    assert status.state is state
    assert status.answered_at is None and status.duration_seconds is None
    assert status.ended_at == at(0, 50)


def test_status_and_timestamp_objects_are_accepted_too():
    history = [{"status": "CREATED", "timestamp": "2024-03-15T10:00:00Z"},
               {"status": "ringing", "timestamp": "2024-03-15T10:00:05Z"}]
    status = respond({**DOC_EXAMPLE, "status": "ringing", "event_history": history})
    assert status.events == (Event(State.QUEUED, "CREATED", at(0, 0)), Event(State.DIALING, "ringing", at(0, 5)))
    assert status.state_since == at(0, 5)


def test_unknown_status_in_history_is_kept_as_unknown():
    history = DOC_EXAMPLE["event_history"][:1] + [{"transferring": "2024-03-15T10:00:03Z"}]
    status = respond({**DOC_EXAMPLE, "status": "transferring", "event_history": history})
    assert status.state is State.UNKNOWN
    assert status.events[-1] == Event(State.UNKNOWN, "transferring", at(0, 3))


def test_without_history_the_record_timestamps_are_used():
    body = {k: v for k, v in DOC_EXAMPLE.items() if k != "event_history"}
    status = respond(body)
    assert status.events == ()
    assert status.created_at == at(0, 0) and status.ended_at == status.state_since == at(5, 30)
    assert status.answered_at is None


def test_history_without_created_at_gives_the_creation_time():
    body = {k: v for k, v in DOC_EXAMPLE.items() if k != "created_at"}
    assert respond(body).created_at == at(0, 0)


@pytest.mark.parametrize("history", [
    "CREATED", [["CREATED", "2024-03-15T10:00:00Z"]], [{}], [{"CREATED": "soon"}],
    [{"a": "2024-03-15T10:00:00Z", "b": "2024-03-15T10:00:00Z"}], [{"status": 1, "timestamp": 0}],
])
def test_malformed_history_is_an_invalid_response(history):
    with pytest.raises(ValueError):
        respond({**DOC_EXAMPLE, "event_history": history})


@pytest.mark.parametrize("code, reason", [
    (400, ErrorReason.CLIENT_ERROR),   # invalid call SID format
    (401, ErrorReason.UNAUTHORIZED),   # invalid or missing connector ID
    (404, ErrorReason.NOT_FOUND),      # unknown, other connector, or expired after ~2 h
    (500, ErrorReason.SERVER_ERROR),   # "retry with exponential backoff": retryable
])
def test_documented_errors_map_to_reasons(code, reason):
    with pytest.raises(PollError) as info:
        respond({"error": "x"}, status=code)
    assert info.value.reason is reason
    assert CONNECTOR not in str(info.value)


def test_cadence_follows_the_polling_recommendations():
    cadence = PolyAIConnector.cadence
    assert 2 <= cadence[State.QUEUED] <= 5 and 2 <= cadence[State.DIALING] <= 5
    assert 10 <= cadence[State.IN_PROGRESS] <= 30
