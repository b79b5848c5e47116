"""List, progress and webhook parsing (sans-I/O, the docs' examples) and the fakes' list endpoints."""

from __future__ import annotations

import httpx
import pytest

from outbound_call_exporter import State
from outbound_call_exporter.testing import Step
from outbound_call_exporter_plugins.telzino import Telzino, TelzinoSettings
from outbound_call_exporter_plugins.telzino.fake import TelzinoFake
from outbound_call_exporter_plugins.trillet import Trillet, TrilletSettings
from outbound_call_exporter_plugins.trillet.fake import TrilletFake

AGENT = "123e4567-e89b-12d3-a456-426614174000"

#: docs/providers/reference/discovery-endpoints.md, "Telzino — list an agent's outbound calls" (ids completed to UUIDs)
TELZINO_LIST = {
    "data": [{"id": "0fc6daf8-7251-4553-9488-867ba0b82d8e", "agent_id": AGENT, "to_number": "+18135551234",
              "status": "completed", "request_metadata": {"crm_id": "123"},
              "transcript_id": "de79aee6-ae41-4003-a3f4-ba9d77b59bd8",
              "created_at": "2026-06-11T12:49:28.898751+00:00", "answered_at": "2026-06-11T12:50:03.843960+00:00",
              "ended_at": "2026-06-11T12:54:15.354244+00:00", "duration": 251, "error": None,
              "sip_status_code": None}],
    "pagination": {"page": 1, "limit": 25, "total": 1, "totalPages": 1, "hasNext": False, "hasPrev": False},
}
#: docs/providers/reference/discovery-endpoints.md, "Trillet — list the jobs of a batch"
TRILLET_LIST = {
    "calls": [
        {"jobId": "call_123", "status": "completed", "phone_number": "+1234567890", "startTime": 1703097600000,
         "endTime": 1703097642000, "duration": 42, "metadata": {"first_name": "John"}},
        {"jobId": "call_124", "status": "failed", "phone_number": "+1987654321", "startTime": 1703097600000,
         "endTime": 1703097615000, "error": "Number busy", "metadata": {"first_name": "Jane"}}],
    "pagination": {"page": 1, "limit": 20, "total": 150, "totalPages": 8, "hasNext": True, "hasPrev": False},
    "summary": {"total": 150, "waiting": 45, "active": 5, "completed": 95, "failed": 5},
}
#: docs/providers/reference/discovery-endpoints.md, "Trillet — batch progress"
TRILLET_PROGRESS = {
    "status": "processing", "isComplete": False, "waiting": 45, "active": 5, "completed": 95, "failed": 5,
    "total": 150, "startTime": 1703097600000, "lastCompletedTime": 1703101200000, "completedTime": None,
    "averageCallDuration": 45.2,
    "recent_calls": [{"jobId": "call_123", "status": "completed", "completedAt": 1703101200000, "duration": 42}],
}


def _response(request: httpx.Request, body) -> httpx.Response:
    return httpx.Response(200, json=body, request=request)


def test_telzino_list_request_and_doc_example():
    p = Telzino(TelzinoSettings(token="t"))
    request = p.build_list_request({"agent_id": AGENT}, 2, "dialing")
    assert str(request.url) == f"https://api.telzino.com/v1/agents/{AGENT}/outbound-calls?page=2&limit=100&status=dialing"
    assert request.headers["Authorization"] == "Bearer t"
    page = p.parse_list_response({"agent_id": AGENT}, _response(request, TELZINO_LIST))
    assert not page.has_next
    [listed] = page.calls
    assert listed.params == {"call_id": "0fc6daf8-7251-4553-9488-867ba0b82d8e", "agent_id": AGENT}
    assert listed.status.state is State.COMPLETED and listed.status.duration_seconds == 251


def test_telzino_webhook_body():
    p = Telzino(TelzinoSettings(token="t"))
    listed = p.parse_webhook({"id": "0fc6daf8-7251-4553-9488-867ba0b82d8e", "status": "busy", "sip_status_code": 486,
                              "metadata": {"crm_id": "1"}})
    assert listed.params == {"call_id": "0fc6daf8-7251-4553-9488-867ba0b82d8e"}
    assert listed.status.state is State.BUSY and listed.status.sip_status_code == 486
    for bad in ({"status": "busy"}, {"id": "x"}, {"id": 5, "status": "busy"}):
        with pytest.raises(ValueError):
            p.parse_webhook(bad)


def test_trillet_list_and_progress_doc_examples():
    p = Trillet(TrilletSettings(api_key="k", workspace_id="ws"))
    scope = {"batch_id": "batch_7891011121314"}
    request = p.build_list_request(scope, 1, None)
    assert str(request.url) == ("https://api.trillet.ai/v1/api/batch-calls/batch_7891011121314/calls"
                                "?page=1&limit=100&status=all")
    assert request.headers["x-api-key"] == "k" and request.headers["x-workspace-id"] == "ws"
    page = p.parse_list_response(scope, _response(request, TRILLET_LIST))
    assert page.has_next
    assert [c.params["call_id"] for c in page.calls] == ["call_123", "call_124"]
    assert page.calls[1].status.state is State.FAILED and page.calls[1].status.failure_reason.value == "busy"
    request = p.build_progress_request(scope)
    assert str(request.url) == "https://api.trillet.ai/v1/api/batch-calls/batch_7891011121314/status"
    progress = p.parse_progress_response(scope, _response(request, TRILLET_PROGRESS))
    assert progress.counts == {"waiting": 45, "active": 5, "completed": 95, "failed": 5}
    assert progress.complete is False


def test_capabilities_are_declared():
    assert Telzino.supports("list") and Telzino.supports("webhook") and not Telzino.supports("progress")
    assert Trillet.supports("list") and Trillet.supports("progress") and not Trillet.supports("webhook")


def test_fake_lists_page_and_filter():
    fake = TelzinoFake(speed=1.0)
    with fake.running():
        ids = [fake.add_call(steps=[Step("queued", 0), Step("dialing", 0 if i % 2 else 999)]).call_id
               for i in range(7)]
        p = Telzino(TelzinoSettings(token=fake.credentials["token"]), fake.url)
        seen, page = [], 1
        with httpx.Client() as client:
            while True:
                request = p.build_list_request({"agent_id": fake.agent_id}, page, None)
                request.url = request.url.copy_merge_params({"limit": "3"})
                result = p.parse_list_response({"agent_id": fake.agent_id}, client.send(request))
                seen += [c.params["call_id"] for c in result.calls]
                if not result.has_next:
                    break
                page += 1
            assert seen == ids[::-1] and page == 3
            dialing = p.parse_list_response({"agent_id": fake.agent_id},
                                            client.send(p.build_list_request({"agent_id": fake.agent_id}, 1, "dialing")))
            assert {c.params["call_id"] for c in dialing.calls} == set(ids[1::2])


def test_trillet_fake_progress():
    fake = TrilletFake(speed=1.0)
    with fake.running():
        batch = fake.new_params()["batch_id"]
        for outcome in (State.COMPLETED, State.FAILED):
            fake.add_call(steps=[Step("waiting", 0), Step(fake.raw_status[outcome], 0.01)],
                          params={"batch_id": batch})
        p = Trillet(TrilletSettings(api_key=fake.credentials["api_key"], workspace_id=fake.credentials["workspace_id"]),
                    fake.url)
        with httpx.Client() as client:
            response = client.send(p.build_progress_request({"batch_id": batch}))
            progress = p.parse_progress_response({"batch_id": batch}, response)
            assert progress.complete and progress.counts["completed"] == 1 and progress.counts["failed"] == 1
            assert client.send(p.build_progress_request({"batch_id": "batch_nope"})).status_code == 404
