"""Writes that matter wait for a replica (Redis WAIT), against a real master and replica:
confirmed, they are on the replica when the call returns; when no replica confirms them
in time they are spooled (a ticket, a call's final record) and land once the replica is
back, so a failover cannot lose what the caller was told or what the call was."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from failover.callbacks import CallbackRecord, Callbacks
from failover.config import CallbackSettings
from ivr.records import CallRecord, CallStore, RecordSpool, RecordWriter
from ivr.tickets import build_tickets
from ivr.tickets.config import TicketSettings
from tests.conftest import wait_for
from tests.redis_sentinel import RedisNode
from trunks.replicated import NotReplicated

pytestmark = pytest.mark.slow


class Pair:
    def __init__(self, workdir: Path) -> None:
        self.master = RedisNode(workdir / "master")
        self.master.start()
        self.replica = RedisNode(workdir / "replica", replica_of=self.master.port)
        self.replica.start()
        self.client = self.master.client()
        wait_for(lambda: self.client.wait(1, 100) == 1, what="the replica in sync")

    def stop(self) -> None:
        self.client.close()
        self.replica.stop()
        self.master.stop()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    pair = Pair(tmp_path)
    yield pair
    pair.stop()


def test_confirmed_writes_are_on_the_replica_when_they_return(pair: Pair,
                                                              tmp_path: Path) -> None:
    store = CallStore(pair.client, replicas=1, replica_wait_ms=500)
    store.save(CallRecord("call-1", "carrier-a", "13900000001", "400", 1000.0, ended_at=1010.0))
    callbacks = Callbacks(pair.client, CallbackSettings(), replicas=1, replica_wait_ms=500)
    callbacks.save(CallbackRecord("cb-1", "call-1", "13900000001", "carrier-a", [], "cut off",
                                  1000.0))
    desk, _ = build_tickets(TicketSettings(), pair.client, prefix="hotline",
                            data_dir=tmp_path / "var", node="node-1", replicas=1,
                            replica_wait_ms=500)
    ticket = desk.open(caller="13900000001", call_id="call-1", trunk="carrier-a",
                       reason="the bot could not help")
    assert desk.spool.pending() == 0
    replica = pair.replica.client()
    try:
        for key in ("hotline:call:call-1", "hotline:callback:cb-1",
                    f"hotline:ticket:{ticket.id}"):
            assert replica.get(key) is not None, f"{key} not on the replica on return"
    finally:
        replica.close()


def test_with_no_replica_confirming_a_ticket_is_spooled_and_lands_later(
        pair: Pair, tmp_path: Path) -> None:
    desk, outbox = build_tickets(TicketSettings(), pair.client, prefix="hotline",
                                 data_dir=tmp_path / "var", node="node-1", replicas=1,
                                 replica_wait_ms=50)
    pair.replica.pause()  # connected, silent: WAIT counts nobody
    try:
        with pytest.raises(NotReplicated):
            Callbacks(pair.client, CallbackSettings(), replicas=1, replica_wait_ms=50).save(
                CallbackRecord("cb-2", "call-2", "1", "carrier-a", [], "cut off", 1.0))
        started = time.monotonic()
        ticket = desk.open(caller="13900000002", call_id="call-2", trunk="carrier-a",
                           reason="the bot could not help")
        assert time.monotonic() - started < 0.5, "the caller is not held up"
        assert desk.spool.pending() == 1, "spooled: the master alone has it"
    finally:
        pair.replica.resume()
    outbox.start()
    try:
        wait_for(lambda: desk.spool.pending() == 0, timeout=15, what="the spool replayed")
    finally:
        outbox.stop()
    replica = pair.replica.client()
    try:
        wait_for(lambda: replica.get(f"hotline:ticket:{ticket.id}") is not None,
                 what="the ticket on the replica")
    finally:
        replica.close()


def test_with_no_replica_confirming_a_final_record_is_spooled_and_lands_later(
        pair: Pair, tmp_path: Path) -> None:
    store = CallStore(pair.client, replicas=1, replica_wait_ms=50)
    writer = RecordWriter(store, RecordSpool(tmp_path / "spool.jsonl"), retry_s=0.2)
    writer.start()
    try:
        record = CallRecord("call-3", "carrier-a", "13900000003", "400", 1000.0)
        writer.update(record)  # live: the master's word is enough
        wait_for(lambda: pair.client.get("hotline:call:call-3") is not None,
                 what="the live record")
        pair.replica.pause()
        try:
            record.ended_at, record.outcome = 1010.0, "completed"
            assert writer.save(record), "spooled at once"
            assert writer.spool.pending()
        finally:
            pair.replica.resume()
        wait_for(lambda: not writer.spool.pending(), timeout=15, what="the spool replayed")
    finally:
        writer.stop()
    replica = pair.replica.client()
    try:
        saved = replica.get("hotline:call:call-3")
        assert saved is not None and CallRecord.from_json(saved).outcome == "completed"
    finally:
        replica.close()
