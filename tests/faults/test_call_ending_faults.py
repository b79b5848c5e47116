"""Faults that end a call rather than retry it: 404 (retention passed, or never known within
`not_found_grace_seconds`) and `max_watch_seconds`. (Moved from tests/test_polling_errors.py;
its retry cases live on, extended, in test_faults.)"""

from __future__ import annotations

import time

from outbound_call_exporter.testing import Step
from outbound_call_exporter_plugins.telzino.fake import TelzinoFake

from conftest import account, make_config, running_service, wait_until

LABELS = {"provider": "telzino", "account": "tz"}


def test_not_found_after_seen_expires_and_never_seen_gets_grace(tmp_path, registry):
    fake = TelzinoFake(speed=1.0, retention_seconds=0.5)
    with fake.running():
        config = make_config(tmp_path, [account("tz", "telzino", fake.url, fake.demo_settings(),
                                                not_found_grace_seconds=1.5)])
        with running_service(config, registry) as svc:
            seen = fake.add_call(steps=[Step("queued", 0), Step("in_progress", 0.1)])
            svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": seen.call_id})
            wait_until(lambda: svc.call("tz", seen.call_id)["provider_status"] == "in_progress")
            del fake.calls[fake.key(seen.call_id, seen.params)]  # the provider forgets it
            wait_until(lambda: svc.call("tz", seen.call_id)["state"] == "expired", message="expired after 404")

            ghost = "0fc6daf8-7251-4553-9488-867ba0b82d8e"
            registered = time.monotonic()
            svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": ghost,
                                                   "params": {"agent_id": fake.agent_id}})
            wait_until(lambda: svc.call("tz", ghost)["state"] == "expired", message="ghost expires after grace")
            assert time.monotonic() - registered >= 1.4
            assert svc.call("tz", ghost)["poll_errors"] >= 2
            assert svc.metric("outbound_calls_finished_total", state="expired", **LABELS) == 2
            assert svc.metric("outbound_call_time_to_terminal_seconds_count", state="completed", **LABELS) == 0


def test_max_watch_seconds_expires_a_call_that_never_ends(tmp_path, registry):
    fake = TelzinoFake(speed=1.0)
    with fake.running():
        config = make_config(tmp_path, [account("tz", "telzino", fake.url, fake.demo_settings())],
                             max_watch_seconds=1.0)
        with running_service(config, registry) as svc:
            call = fake.add_call(steps=[Step("queued", 0), Step("dialing", 0.1)])
            svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": call.call_id})
            wait_until(lambda: svc.call("tz", call.call_id)["state"] == "expired", message="expired")
            assert "max_watch_seconds" in svc.call("tz", call.call_id)["reason"]
            assert svc.metric("outbound_calls", state="dialing", **LABELS) == 0
