"""One replica on a real PostgreSQL: what it does while its own fenced writes are not in yet.

A call that finished here is polled by no one again even if a row read before its terminal
write (an inbox item, a partition load) says it is still ringing: the write-behind queue is
the truth until it is flushed, and exactly one terminal row reaches the history.
"""

from __future__ import annotations

import time

from outbound_call_exporter import State
from outbound_call_exporter.config import Config
from outbound_call_exporter.testing import Step
from outbound_call_exporter_plugins.telzino.fake import TelzinoFake

from conftest import account, running_service, wait_until


def test_a_call_finished_here_is_not_revived_by_a_row_read_before_its_write(pg_url: str) -> None:
    fake = TelzinoFake(speed=1.0)
    with fake.running():
        config = Config(listen_address="127.0.0.1:0", store_url=pg_url,
                        accounts=[account("tz", "telzino", fake.url, fake.demo_settings())])
        with running_service(config) as svc:
            store, poller = svc.service.store, svc.service.pollers["tz"]
            store.flush_interval = 3600.0  # from the next tick on, writes wait for an explicit flush
            time.sleep(0.5)
            call = fake.add_call(steps=[Step("queued", 0.0), Step(fake.raw_status[State.BUSY], 0.6)],
                                 outcome=State.BUSY)
            assert svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": call.call_id}).status_code == 201
            seq = poller.calls[call.call_id].seq
            stale = svc.run(store.active([seq]))
            assert [r.state for r in stale] == ["queued"]
            wait_until(lambda: call.call_id in poller.finishing, timeout=10, message="finished, write pending")

            async def adopt() -> int:
                return svc.service.registrar.adopt(stale)

            assert svc.run(adopt()) == 0 and call.call_id not in poller.calls
            assert svc.metric("outbound_calls_finished_total", provider="telzino", account="tz", state="busy") == 0
            svc.run(store.flush())
            assert not poller.finishing
            assert svc.metric("outbound_calls_finished_total", provider="telzino", account="tz", state="busy") == 1
            record = svc.call("tz", call.call_id)
            assert record["state"] == "busy"
            assert [h["state"] for h in record["history"] if State(h["state"]).terminal] == ["busy"]
