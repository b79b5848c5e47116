"""`outbound_call_exporter.testing`: the public test-support API plugin authors build fakes on."""

from __future__ import annotations

import time

import httpx
import pytest

from outbound_call_exporter import testing
from outbound_call_exporter.testing import Step, faults
from outbound_call_exporter.testing.faults import Answer, Fault, Head, Reset, Sleep
from outbound_call_exporter_plugins.telzino.fake import TelzinoFake

AGENT = TelzinoFake.agent_id


def test_every_public_name_is_importable_and_the_fakes_build_on_it():
    assert sorted(testing.__all__) == sorted(set(testing.__all__))
    for name in testing.__all__:
        assert getattr(testing, name) is not None
    assert issubclass(TelzinoFake, testing.FakeProvider)


@pytest.fixture
def fake():
    f = TelzinoFake()
    with f.running():
        yield f


def _get(fake: TelzinoFake, call_id: str) -> httpx.Response:
    url = f"{fake.url}/v1/agents/{AGENT}/outbound-calls/{call_id}"
    return httpx.get(url, headers={"Authorization": f"Bearer {fake.credentials['token']}"}, timeout=5, trust_env=False)


def test_faults_compose_from_pieces_and_are_counted_by_name(fake):
    call = fake.add_call(steps=[Step("queued", 0)])
    fake.inject(Fault(Sleep(0.2), Answer(503, b'{"error": "later"}', retry_after="7"), name="slow-503"))
    started = time.monotonic()
    slow = _get(fake, call.call_id)
    assert time.monotonic() - started >= 0.2
    assert slow.status_code == 503 and slow.headers["Retry-After"] == "7" and slow.json() == {"error": "later"}
    fake.inject(Fault(Head(b'{"status": "'), Reset(), name="cut"))
    with pytest.raises(httpx.HTTPError):
        _get(fake, call.call_id)
    fake.inject(faults.unknown_status("teleporting"))
    assert _get(fake, call.call_id).json()["status"] == "teleporting"
    assert _get(fake, call.call_id).json()["status"] == "queued"  # each injected once
    assert fake.requests["fault:slow-503"] == fake.requests["fault:cut"] == fake.requests["fault:unknown_status"] == 1
    assert fake.requests["fault"] == 3 and fake.requests["status"] == 4
