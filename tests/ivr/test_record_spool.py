"""Call records while Redis is away: the writer spools them to disk instead of making a
call wait, replays the spool when Redis answers (after a restart too), and stores each
call's latest snapshot once, however often the replay is run."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
import redis

from ivr.records import SPOOL_PATH, CallRecord, CallStore, RecordSpool, RecordWriter, WriterState
from tests.conftest import wait_for
from tests.ivr.test_records import leg
from tests.ivr.tickets.peers import fast_client
from tests.peers import RedisServer


@pytest.fixture
def spool(tmp_path: Path) -> RecordSpool:
    return RecordSpool(tmp_path / "var" / SPOOL_PATH)


def record(call_id: str, *path: str) -> CallRecord:
    """A call started now (older ones drop out of the index of calls)."""
    return CallRecord(call_id, "carrier-a", "13900000000", "400", time.time(), path=list(path))


def test_a_hung_redis_holds_up_no_call_and_its_records_land_when_it_is_back(
        own_redis: RedisServer, spool: RecordSpool) -> None:
    client = fast_client(own_redis)
    store = CallStore(client)
    writer = RecordWriter(store, spool, retry_s=0.1)
    writer.start()
    call = record("call-hung-1")
    own_redis.pause()
    try:
        started = time.monotonic()
        for node in ("welcome", "menu", "thanks"):
            call.visit(node)
            writer.update(call)
        assert time.monotonic() - started < 0.1, "updates return at once"
        call.ended_at, call.outcome = time.time(), "completed"
        assert writer.save(call), "spooled while Redis hangs"
        assert writer.state is WriterState.SPOOLING and spool.pending()
    finally:
        own_redis.resume()
    try:
        later = record("call-hung-2", "welcome")  # comes as Redis comes back
        writer.update(later)
        wait_for(lambda: writer.state is WriterState.STORING, what="the spool replayed")
        assert not spool.pending()
        saved = store.get("call-hung-1")
        assert saved is not None and saved.outcome == "completed"
        assert saved.path == ["welcome", "menu", "thanks"]
        later.visit("menu")
        assert writer.save(later)
        newest = store.get("call-hung-2")
        assert newest is not None and newest.path == ["welcome", "menu"]
    finally:
        writer.stop()
        client.close()


def test_records_spooled_while_redis_is_down_are_stored_once_after_a_restart(
        own_redis: RedisServer, spool: RecordSpool) -> None:
    client = fast_client(own_redis)
    store = CallStore(client)
    writer = RecordWriter(store, spool, retry_s=0.1)
    writer.start()
    own_redis.kill()
    calls = [record(f"call-down-{n}", "welcome") for n in range(3)]
    for call in calls:
        call.ended_at, call.outcome, call.quality = time.time(), "completed", leg(4.2)
        assert writer.save(call)
    writer.stop()  # the node stops before Redis is back
    assert spool.pending()

    own_redis.start()
    again = RecordWriter(store, spool, retry_s=0.1)
    assert again.state is WriterState.SPOOLING, "a spool left over is replayed first"
    again.start()
    try:
        wait_for(lambda: not spool.pending(), what="the spool replayed")
        assert again.state is WriterState.STORING
    finally:
        again.stop()
    assert sorted(client.zrange("hotline:calls", 0, -1)) == [c.id for c in calls]
    for call in calls:
        saved = store.get(call.id)
        assert saved is not None and saved.outcome == "completed"
    assert len(store.trunk_legs(["carrier-a"], 10)["carrier-a"]) == 3
    client.close()


def test_while_spooling_a_live_calls_quality_refreshes_are_not_spooled(
        own_redis: RedisServer, spool: RecordSpool) -> None:
    client = fast_client(own_redis)
    writer = RecordWriter(CallStore(client), spool, retry_s=10.0, refresh_s=0.05)
    writer.start()
    own_redis.kill()
    quality = {"caller": leg(4.2)}
    call = record("call-live-1", "welcome")
    writer.follow(call.id, lambda: (quality["caller"], None))
    try:
        writer.update(call)
        wait_for(lambda: spool.pending(), what="the step spooled")
        for mos in (3.9, 3.5, 3.1):
            quality["caller"] = leg(mos)
            time.sleep(0.15)  # three refreshes' time
        call.visit("menu")
        writer.update(call)  # a step: spooled, with the quality read now
        wait_for(lambda: len(spool.path.read_text().splitlines()) >= 2, what="the step")
        time.sleep(0.15)
        lines = [json.loads(line) for line in spool.path.read_text().splitlines()]
        assert [(line["path"], line["quality"]["mos"]) for line in lines] == [
            (["welcome"], 4.2), (["welcome", "menu"], 3.1)], "the steps only"
    finally:
        writer.stop()
        client.close()


def test_a_replay_stores_the_latest_snapshot_of_each_call_once(
        redis_client: redis.Redis, spool: RecordSpool) -> None:
    store = CallStore(redis_client)
    first = record("call-spooled-1", "welcome")
    early = dataclasses.asdict(first)
    first.visit("menu")
    first.ended_at, first.quality = time.time(), leg(4.2)
    spool.append([early, dataclasses.asdict(record("call-spooled-2", "welcome")),
                  dataclasses.asdict(first)])
    data = spool.path.read_bytes()
    assert spool.replay(store) == 2
    saved = store.get("call-spooled-1")
    assert saved is not None and saved.path == ["welcome", "menu"]
    assert saved.ended_at == first.ended_at

    spool.file.replaying.write_bytes(data)  # as if the process died just before the unlink
    assert spool.replay(store) == 2
    assert not spool.pending()
    assert sorted(redis_client.zrange("hotline:calls", 0, -1)) == ["call-spooled-1",
                                                                  "call-spooled-2"]
    assert len(store.trunk_legs(["carrier-a"], 10)["carrier-a"]) == 1, "one leg, not two"


def test_a_replay_cut_short_keeps_the_rest_and_order(
        own_redis: RedisServer, spool: RecordSpool) -> None:
    client = fast_client(own_redis)
    store = CallStore(client)
    old = record("call-cut-1", "welcome")
    spool.append([dataclasses.asdict(old)])
    own_redis.kill()
    with pytest.raises(redis.ConnectionError):
        spool.replay(store)
    assert spool.file.replaying.exists(), "set aside, kept until replayed"
    old.visit("menu")
    spool.append([dataclasses.asdict(old)])  # newer, in the fresh spool beside it
    own_redis.start()
    assert spool.replay(store) == 2, "the set-aside file first, then the fresh one"
    saved = store.get("call-cut-1")
    assert saved is not None and saved.path == ["welcome", "menu"]
    client.close()


def test_unreadable_lines_are_kept_aside_and_the_rest_stored(
        redis_client: redis.Redis, spool: RecordSpool,
        caplog: pytest.LogCaptureFixture) -> None:
    spool.append([dataclasses.asdict(record("call-good-1", "welcome"))])
    with spool.path.open("ab") as file:
        file.write(b'{"id": "call-bad", "trunk"')  # a write cut short by a crash
    spool.append([dataclasses.asdict(record("call-good-2", "welcome"))])
    assert spool.replay(CallStore(redis_client)) == 2
    kept = [json.loads(line) for line in spool.file.bad.read_text().splitlines()]
    assert [k["text"] for k in kept] == ['{"id": "call-bad", "trunk"']
    assert "is not a call record, kept in" in caplog.text
    assert not spool.pending()


def test_a_spool_that_fails_too_does_not_keep_the_writer_from_stopping(
        own_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_text("")
    spool = RecordSpool(tmp_path / "file" / "spool.jsonl")  # its directory is a file
    client = fast_client(own_redis)
    writer = RecordWriter(CallStore(client), spool, retry_s=0.1)
    writer.start()
    own_redis.kill()
    call = record("call-lost-1", "welcome")
    assert not writer.save(call, wait_s=0.3)
    writer.stop()
    assert "1 call records lost at shutdown" in caplog.text
    client.close()
