"""Every installed plugin with a fake survives the same hostile answers (new plugins join
automatically): each is counted under the host's reason, and every call ends truly.

The answers reach each plugin's own parsing (error statuses, bodies); transport-level faults
(resets, timeouts, oversized bodies) are the host's alone and covered in `test_faults`. One
call per fault, registered together, so each sees one error and retries within a second.
"""

from __future__ import annotations

import pytest

from outbound_call_exporter import State
from outbound_call_exporter.testing import faults
from outbound_call_exporter.plugins import load_registry

from conftest import account, expected_state, make_config, running_service, wait_until
from fault_harness import REASONS, parse_iso, quick_steps

#: one of each, in this order, then the provider answers normally
SEQUENCE = [
    (faults.status(503, body=b"<html><body>503 Service Unavailable</body></html>"), "server_error"),
    (faults.status(500, body=b""), "server_error"),
    (faults.malformed(), "invalid_response"),
    (faults.wrong_shape(), "invalid_response"),
    (faults.wrong_shape(b'{"status": ["completed"], "created_at": {"nested": true}}'), "invalid_response"),
    (faults.wrong_shape(b'"completed"'), "invalid_response"),
    (faults.malformed(b'\xff\xfe{"status": "\xc3'), "invalid_response"),
    (faults.status(418, body=b'{"error": null}'), "client_error"),
    (faults.unknown_status("\u202e\u0000<script>"), None),  # not an error
]


@pytest.mark.parametrize("provider", sorted(load_registry().fakes))
def test_plugin_survives_hostile_answers(tmp_path, registry, provider):
    fake = registry.fakes[provider](seed=3)
    with fake.running():
        config = make_config(tmp_path, [account("acc", provider, fake.url, fake.demo_settings())],
                             request_timeout_seconds=0.5)
        with running_service(config, registry) as svc:
            for fault, _ in SEQUENCE:
                fake.inject(fault, times=1)
            outcomes = [o for o in (State.COMPLETED, State.FAILED, State.BUSY) if o in fake.raw_status]
            calls = [fake.add_call(steps=quick_steps(fake, outcomes[i % len(outcomes)], 1.0),
                                   outcome=outcomes[i % len(outcomes)]) for i in range(len(SEQUENCE))]
            response = svc.client.post("/api/v1/calls", json=[
                {"account": "acc", "call_id": c.call_id, "params": c.params} for c in calls])
            assert response.status_code == 201, response.text
            for call in calls:
                record = wait_until(lambda: (r := svc.call("acc", call.call_id))["watching"] is False and r,
                                    timeout=20, message="every call ends after the faults")
                assert record["state"] == expected_state(registry, fake, call), record
                ended = parse_iso(record["ended_at"])
                if ended is not None:
                    assert abs(ended - call.ended_at(fake.speed)) < 1.0, record
            assert fake.requests["fault"] == len(SEQUENCE)
            labels = {"provider": provider, "account": "acc"}
            expected = {r: sum(1 for _, why in SEQUENCE if why == r) for r in REASONS}
            counted = {r: svc.metric("outbound_call_status_request_errors_total", reason=r, **labels)
                       for r in REASONS}
            assert counted == expected
            assert sum(svc.call("acc", c.call_id)["poll_errors"] for c in calls) == sum(expected.values())
            assert svc.metric("outbound_call_account_up", **labels) == 1
            assert svc.client.get("/-/healthy").status_code == 200
