"""Call records saved as the call moves: the writer never makes a call wait on Redis,
keeps only each call's latest state, and loses nothing while Redis is away."""

from __future__ import annotations

import time

import redis

from ivr.records import CallRecord, CallStore, RecordWriter
from tests.conftest import wait_for
from tests.ivr.tickets.peers import fast_client
from tests.peers import RedisServer


def test_the_latest_state_of_a_live_call_is_saved(redis_client: redis.Redis) -> None:
    store = CallStore(redis_client)
    writer = RecordWriter(store)
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
        record.ended_at, record.outcome = 1060.0, "completed"
        assert writer.save(record)
        ended = store.get("call-live-1")
        assert ended is not None and ended.outcome == "completed" and ended.ended_at == 1060.0
    finally:
        writer.stop()


def test_a_paused_redis_never_holds_up_the_call_and_loses_no_record(
        own_redis: RedisServer) -> None:
    store = CallStore(fast_client(own_redis))
    writer = RecordWriter(store, retry_s=0.1)
    writer.start()
    record = CallRecord("call-paused-1", "carrier-a", "13900000000", "400", 1000.0)
    own_redis.pause()
    try:
        started = time.monotonic()
        for node in ("welcome", "menu", "thanks"):
            record.visit(node)
            writer.update(record)
        assert time.monotonic() - started < 0.1, "updates return at once"
        record.outcome = "completed"
        assert not writer.save(record, wait_s=0.3), "not stored while Redis hangs"
    finally:
        own_redis.resume()
    try:
        wait_for(lambda: (r := store.get("call-paused-1")) is not None
                 and r.outcome == "completed", what="the record saved once Redis is back")
        saved = store.get("call-paused-1")
        assert saved is not None and saved.path == ["welcome", "menu", "thanks"]
    finally:
        writer.stop()
