"""One replica on a real PostgreSQL: what it does while its own fenced writes are not in yet.

A call that finished here is polled by no one again even if a row read before its terminal
write (an inbox item, a partition load) says it is still ringing: the write-behind queue is
the truth until it is flushed, and exactly one terminal row reaches the history. A webhook
received by a replica that does not poll the call reaches the owner held to the privacy policy.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from outbound_call_exporter import State
from outbound_call_exporter.config import Config
from outbound_call_exporter.leases import partition_of
from outbound_call_exporter.testing import FakeCall, Step
from outbound_call_exporter_plugins.telzino.fake import TelzinoFake

from conftest import RunningService, account, running_service, store_rows, stored_text, wait_until
from test_privacy import CRM, REASON_NUMBER, WEBHOOK_TOKEN


@contextmanager
def writes_held(pg_url: str) -> Iterator[tuple[RunningService, FakeCall]]:
    """One replica whose poll results wait for an explicit flush, and a call registered there
    that goes busy after 0.6 s."""
    fake = TelzinoFake(speed=1.0)
    with fake.running():
        config = Config(listen_address="127.0.0.1:0", store_url=pg_url,
                        accounts=[account("tz", "telzino", fake.url, fake.demo_settings())])
        with running_service(config) as svc:
            svc.service.store.flush_interval = 3600.0  # from the next tick on
            time.sleep(0.5)
            call = fake.add_call(steps=[Step("queued", 0.0), Step(fake.raw_status[State.BUSY], 0.6)],
                                 outcome=State.BUSY)
            assert svc.client.post("/api/v1/calls", json={"account": "tz", "call_id": call.call_id}).status_code == 201
            yield svc, call


def test_a_call_finished_here_is_not_revived_by_a_row_read_before_its_write(pg_url: str) -> None:
    with writes_held(pg_url) as (svc, call):
        store, poller = svc.service.store, svc.service.pollers["tz"]
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


def test_a_webhook_received_by_another_replica_is_handed_over_held_to_the_policy(registry, pg_url: str) -> None:
    """Replica `other` receives the webhook of a call `owner` polls: what travels through the
    database (every inbox row is copied aside by a trigger here) is the parsed call, masked."""
    fake = registry.fakes["telzino"](seed=3)
    with fake.running():
        slow = {"queued": 60, "dialing": 60, "in_progress": 60, "unknown": 60}  # the webhook comes first
        acc = account("tz", "telzino", fake.url, fake.demo_settings(), webhook_token=WEBHOOK_TOKEN,
                      poll_interval_seconds=slow)
        config = Config(listen_address="127.0.0.1:0", store_url=pg_url, accounts=[acc])
        with running_service(config, registry) as owner:
            wait_until(lambda: owner.metric("outbound_call_exporter_partitions_owned") == 256, message="all owned")
            store_rows(config, "CREATE TABLE inbox_seen AS SELECT kind, body FROM oce_inbox WITH NO DATA")
            store_rows(config, "CREATE FUNCTION inbox_seen() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                               " INSERT INTO inbox_seen VALUES (NEW.kind, NEW.body); RETURN NEW; END $$")
            store_rows(config, "CREATE TRIGGER inbox_seen AFTER INSERT ON oce_inbox FOR EACH ROW"
                               " EXECUTE FUNCTION inbox_seen()")
            with running_service(config, registry) as other:
                call = next(c for c in (fake.add_call(steps=[Step("queued", 0.0)]) for _ in range(50))
                            if not other.service.ownership.owns("tz", c.call_id))
                assert other.client.post("/api/v1/calls", json={"account": "tz", "call_id": call.call_id,
                                                                "params": call.params}).status_code == 201
                wait_until(lambda: call.call_id in owner.service.pollers["tz"].calls, message="the owner watches it")
                body = {"id": call.call_id, "agent_id": call.params["agent_id"], "status": "failed",
                        "to_number": "+18135551234", "request_metadata": {"crm_id": CRM},
                        "error": f"could not reach {REASON_NUMBER}"}
                response = other.client.post("/api/v1/webhooks/tz", json=body,
                                             headers={"X-Webhook-Token": WEBHOOK_TOKEN})
                assert response.json() == {"result": "accepted"}
                record = wait_until(lambda: (r := owner.call("tz", call.call_id))["state"] == "failed" and r,
                                    message="the owner applied the handed-over webhook")
                assert record["extras"]["to_number"] == "+1•••••••34" and "request_metadata" not in record["extras"]
                assert record["reason"] == "could not reach +44•••••••56"
    assert [k for (k,) in store_rows(config, "SELECT kind FROM inbox_seen")].count("push") == 1
    stored = stored_text(config)
    assert call.call_id in stored and "81355512" not in stored and CRM not in stored and "79111234" not in stored


def test_a_call_finished_under_an_epoch_since_lost_is_polled_again_and_counted_once(pg_url: str) -> None:
    """Its terminal write is still queued when the partition changes hands and comes back under
    a newer epoch (another replica took it and handed it back): that write will be refused, so
    the call is loaded and polled again, and one terminal row and one count come of it."""
    with writes_held(pg_url) as (svc, call):
        store, poller = svc.service.store, svc.service.pollers["tz"]
        wait_until(lambda: call.call_id in poller.finishing, timeout=10, message="finished, write pending")
        [(epoch,)] = store_rows(svc.service.config, "UPDATE oce_leases SET epoch = epoch + 1"
                                " WHERE partition = ? RETURNING epoch", partition_of("tz", call.call_id))
        wait_until(lambda: poller.finishing.get(call.call_id, (0, 0))[1] == epoch, timeout=15,
                   message="polled again and finished under the new epoch")
        svc.run(store.flush())
        labels = {"provider": "telzino", "account": "tz", "state": "busy"}
        assert svc.metric("outbound_calls_finished_total", **labels) == 1
        record = svc.call("tz", call.call_id)
        assert [h["state"] for h in record["history"] if State(h["state"]).terminal] == ["busy"]
