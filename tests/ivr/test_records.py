"""Call records saved as the call moves: the writer never makes a call wait on Redis,
keeps only each call's latest state, spools records to disk while Redis is away and
stores each once when it is back, and keeps a live call's quality current; a finished
call's legs go to their trunks' quality lists."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis

from ivr.records import (
    QUALITY_KEPT,
    RECORD_RETENTION_S,
    SPOOL_PATH,
    CallRecord,
    CallStore,
    RecordSpool,
    RecordWriter,
)
from tests.conftest import wait_for


@pytest.fixture
def spool(tmp_path: Path) -> RecordSpool:
    return RecordSpool(tmp_path / "var" / SPOOL_PATH)


def test_the_latest_state_of_a_live_call_is_saved(redis_client: redis.Redis,
                                                  spool: RecordSpool) -> None:
    store = CallStore(redis_client)
    writer = RecordWriter(store, spool, node="node-7")
    writer.start()
    try:
        record = CallRecord("call-live-1", "carrier-a", "13900000000", "400", 1000.0)
        writer.update(record)
        record.answered_at = 1001.0
        record.visit("welcome")
        writer.update(record)
        wait_for(lambda: (r := store.get("call-live-1")) is not None and r.path == ["welcome"],
                 what="the live record saved")
        saved = store.get("call-live-1")
        assert saved is not None and saved.answered_at == 1001.0 and saved.ended_at is None
        assert saved.node == "node-7" and record.node is None, "the writer names the node"
        record.ended_at, record.outcome = 1060.0, "completed"
        assert writer.save(record)
        ended = store.get("call-live-1")
        assert ended is not None and ended.outcome == "completed" and ended.ended_at == 1060.0
    finally:
        writer.stop()


def leg(mos: float, lost: float | None = 0.0) -> dict[str, Any]:
    """One leg's quality figures, as `LegQuality.as_dict()` gives them."""
    return {"mos": mos, "received_packets": 500, "received_lost": 0,
            "received_loss_percent": 0.0, "received_jitter_ms": 1.0, "sent_loss_percent": lost,
            "sent_jitter_ms": None if lost is None else 1.0, "rtt_ms": None,
            "reports_received": 0 if lost is None else 3}


class Legs:
    """What a live call's quality reads: the test sets it as the call goes on."""

    def __init__(self) -> None:
        self.caller: dict[str, Any] | None = None
        self.staff: dict[str, Any] | None = None
        self.reads = 0

    def __call__(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        self.reads += 1
        return self.caller, self.staff


def test_a_followed_call_shows_its_quality_while_it_lasts(redis_client: redis.Redis,
                                                          spool: RecordSpool) -> None:
    store = CallStore(redis_client)
    writer = RecordWriter(store, spool, refresh_s=0.05)
    writer.start()
    legs = Legs()
    try:
        record = CallRecord("call-quality-1", "carrier-a", "13900000000", "400", 1000.0)
        writer.follow(record.id, legs)
        legs.caller = leg(4.3)
        record.visit("connect")
        writer.update(record)
        wait_for(lambda: (r := store.get(record.id)) is not None and r.quality == leg(4.3),
                 what="the quality read with the step's snapshot")
        legs.caller = leg(2.9, lost=4.0)  # no new step: only a refresh can show it
        wait_for(lambda: (r := store.get(record.id)) is not None and r.quality == leg(2.9, 4.0),
                 what="the refreshed quality")
        record.add_forward_attempt("alice", "carrier-b", "answered", 200, "OK")
        writer.update(record)
        legs.staff = leg(4.1)
        wait_for(lambda: (r := store.get(record.id)) is not None and len(r.forward_attempts) == 1
                 and r.forward_attempts[0].get("quality") == leg(4.1),
                 what="the bridged staff leg's quality in its attempt")
        saved = store.get(record.id)
        assert saved is not None and saved.path == ["connect"] and saved.ended_at is None

        record.ended_at, record.quality = 1060.0, leg(3.0, 5.0)
        record.note_forward_quality(leg(4.0))
        assert writer.save(record)
        reads = legs.reads
        legs.caller = legs.staff = leg(1.0)
        time.sleep(writer.refresh_s * 4)  # four refreshes' time
        ended = store.get(record.id)
        assert ended is not None and legs.reads == reads, "an ended call is not read again"
        assert ended.quality == leg(3.0, 5.0) and ended.forward_attempts[0]["quality"] == leg(4.0)
    finally:
        writer.stop()


def test_a_failing_quality_read_does_not_stop_the_record(
        redis_client: redis.Redis, spool: RecordSpool, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        raise RuntimeError("stream gone")

    store = CallStore(redis_client)
    writer = RecordWriter(store, spool, refresh_s=0.05)
    writer.start()
    try:
        record = CallRecord("call-quality-2", "carrier-a", "13900000000", "400", 1000.0)
        writer.follow(record.id, broken)
        record.visit("welcome")
        writer.update(record)
        wait_for(lambda: store.get(record.id) is not None, what="the record saved anyway")
        saved = store.get(record.id)
        assert saved is not None and saved.path == ["welcome"] and saved.quality is None
    finally:
        writer.stop()
    assert "Call call-quality-2: reading its quality failed" in caplog.text


def test_finished_calls_fill_each_trunks_quality_list(redis_client: redis.Redis) -> None:
    store = CallStore(redis_client)
    record = CallRecord("call-legs-1", "carrier-a", "13900000000", "400", 1000.0,
                        answered_at=1001.0, quality=leg(4.2))
    record.add_forward_attempt("bob", "carrier-b", "refused", 486, "Busy Here")
    record.add_forward_attempt("alice", "carrier-b", "answered", 200, "OK")
    record.note_forward_quality(leg(2.5, lost=6.0))
    store.save(record)
    assert store.trunk_legs(["carrier-a", "carrier-b"], 20) == {"carrier-a": [], "carrier-b": []}, \
        "a live call's legs are not in the lists yet"
    record.ended_at = 1060.0
    store.save(record)
    store.save(record)  # saved again (a retry): still one leg each
    legs = store.trunk_legs(["carrier-a", "carrier-b"], 20)
    assert legs == {
        "carrier-a": [{"call": "call-legs-1", "leg": "caller", "at": 1060.0, **leg(4.2)}],
        "carrier-b": [{"call": "call-legs-1", "leg": "alice", "at": 1060.0, **leg(2.5, 6.0)}]}

    for n in range(QUALITY_KEPT + 3):
        store.save(CallRecord(f"call-legs-{n + 2}", "carrier-a", "1390", "400", 2000.0 + n,
                              ended_at=2100.0 + n, quality=leg(4.0)))
    store.save(CallRecord("call-silent", "carrier-a", "1390", "400", 3000.0, ended_at=3100.0,
                          quality=leg(4.0) | {"mos": None}))  # no packets, nothing to rate
    kept = store.trunk_legs(["carrier-a"], QUALITY_KEPT + 10)["carrier-a"]
    assert len(kept) == QUALITY_KEPT
    assert [k["call"] for k in kept[:2]] == [f"call-legs-{QUALITY_KEPT + 4}",
                                             f"call-legs-{QUALITY_KEPT + 3}"], "newest first"
    assert redis_client.ttl("hotline:quality:carrier-a") > RECORD_RETENTION_S - 60
