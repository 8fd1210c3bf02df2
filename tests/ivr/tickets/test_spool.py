"""The spool: tickets survive a Redis outage, fsynced, and reach Redis exactly once.

These tests stop and start their own redis-server (with an fsynced AOF, so
what it held before the stop is still there after the start).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ivr.tickets.config import TicketSettings
from ivr.tickets.desk import TicketDesk
from ivr.tickets.errors import TicketNotSaved
from ivr.tickets.model import Ticket, Turn
from ivr.tickets.spool import Spool
from ivr.tickets.store import AddOutcome, TicketStore
from tests.conftest import wait_for
from tests.ivr.tickets.peers import fast_client, make_ticket, stored_uids
from tests.peers import RedisServer


@pytest.fixture
def client(own_redis: RedisServer) -> Iterator[redis.Redis]:
    client = fast_client(own_redis)
    yield client
    client.close()


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "var" / "tickets" / "spool.jsonl")


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What was fsynced: "file" or "directory", in order."""
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append("directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return synced


class FlakyStore(TicketStore):
    """A store whose Redis connection drops after `good` adds (a replay cut short)."""

    def __init__(self, client: redis.Redis, good: int) -> None:
        super().__init__(client)
        self.good = good

    def add(self, ticket: Ticket, *, heard: bool = False) -> tuple[AddOutcome, Ticket]:
        if self.good == 0:
            raise redis.ConnectionError("Connection reset by peer")
        self.good -= 1
        return super().add(ticket, heard=heard)


def open_ticket(desk: TicketDesk, n: int) -> Ticket:
    return desk.open(caller=f"+86138000000{n:02d}", call_id=f"call-{n}", trunk="carrier-a",
                     reason="no confident answer",
                     transcript=[Turn("caller", f"question number {n}")])


def test_redis_stopped_mid_run_then_every_ticket_is_stored_exactly_once(
        own_redis: RedisServer, client: redis.Redis, spool: Spool, fsyncs: list[str],
        caplog: pytest.LogCaptureFixture) -> None:
    store = TicketStore(client, deliver=True)
    desk = TicketDesk(store, spool, TicketSettings())
    before = [open_ticket(desk, n) for n in range(2)]
    assert not spool.pending() and fsyncs == []

    own_redis.stop()
    during = [open_ticket(desk, n) for n in range(2, 5)]
    assert "Redis unreachable, spooling it" in caplog.text
    lines = spool.path.read_text().splitlines()
    assert [json.loads(line)["uid"] for line in lines] == [t.uid for t in during]
    assert fsyncs == ["directory", "file", "directory", "file", "file"]  # new dir, new file
    assert stat.S_IMODE(spool.path.stat().st_mode) == 0o600
    with pytest.raises(redis.ConnectionError):
        spool.replay(store)
    assert spool.pending() and spool.replaying.exists()  # set aside, kept until replayed

    own_redis.start()
    report = spool.replay(store)
    assert (report.stored, report.duplicates, report.bad) == (3, 0, 0)
    assert sorted(stored_uids(client)) == sorted(t.uid for t in before + during)
    assert {t.id for t in store.tickets()} == {t.id for t in before + during}
    assert store.outbox_size() == 5
    assert not spool.pending()
    assert spool.replay(store).stored == 0


def test_a_replay_cut_short_and_repeated_stores_each_ticket_once(
        client: redis.Redis, spool: Spool) -> None:
    tickets = [make_ticket() for _ in range(5)]
    for ticket in tickets:
        spool.append(ticket)
    with pytest.raises(redis.ConnectionError):
        spool.replay(FlakyStore(client, good=2))
    assert len(stored_uids(client)) == 2
    late = make_ticket()
    spool.append(late)  # Redis still away for the desk: a fresh spool beside the set-aside one
    assert spool.replaying.exists() and spool.path.exists()

    report = spool.replay(TicketStore(client))
    assert (report.stored, report.duplicates) == (4, 2)
    assert sorted(stored_uids(client)) == sorted(t.uid for t in [*tickets, late])
    assert not spool.pending()


def test_a_crash_after_replay_before_removing_the_file_duplicates_nothing(
        client: redis.Redis, spool: Spool) -> None:
    tickets = [make_ticket() for _ in range(3)]
    for ticket in tickets:
        spool.append(ticket)
    saved = spool.path.read_bytes()
    store = TicketStore(client)
    assert spool.replay(store).stored == 3
    spool.replaying.write_bytes(saved)  # as if the process died just before the unlink
    report = spool.replay(store)
    assert (report.stored, report.duplicates) == (0, 3)
    assert sorted(stored_uids(client)) == sorted(t.uid for t in tickets)


def test_a_line_cut_short_by_a_crash_loses_no_good_ticket(
        client: redis.Redis, spool: Spool, caplog: pytest.LogCaptureFixture) -> None:
    first, second, third = make_ticket(), make_ticket(), make_ticket()
    spool.append(first)
    with spool.path.open("ab") as file:
        file.write(b"this line is garbage\n")
    spool.append(second)
    with spool.path.open("ab") as file:
        file.write(third.to_json().encode()[:57])  # the crash: no newline, half a ticket
    spool.append(third)  # after the restart: starts on a line of its own
    report = spool.replay(TicketStore(client))
    assert (report.stored, report.bad) == (3, 2)
    assert sorted(stored_uids(client)) == sorted(t.uid for t in (first, second, third))
    kept = [json.loads(line) for line in spool.bad.read_text().splitlines()]
    assert [(k["line"], k["text"][:10]) for k in kept] == [(2, "this line "), (4, '{"id":"' +
                                                           third.id[:3])]
    assert "Spool" in caplog.text and "is not a ticket, kept in" in caplog.text
    assert not spool.pending()


def test_a_spooled_id_taken_meanwhile_is_renamed_once(client: redis.Redis, spool: Spool) -> None:
    store = TicketStore(client)
    ticket = make_ticket()
    spool.append(ticket)
    squatter = make_ticket(id=ticket.id)
    store.add(squatter)
    saved = spool.path.read_bytes()
    spool.replay(store)
    renamed = [t for t in store.tickets() if t.uid == ticket.uid]
    assert len(renamed) == 1 and renamed[0].previous_id == ticket.id
    spool.replaying.write_bytes(saved)
    assert spool.replay(store).duplicates == 1
    assert sorted(stored_uids(client)) == sorted([ticket.uid, squatter.uid])


def test_a_redis_that_hangs_spools_too(own_redis: RedisServer, spool: Spool) -> None:
    client = fast_client(own_redis, timeout_s=0.2)
    store = TicketStore(client)
    desk = TicketDesk(store, spool, TicketSettings())
    own_redis.pause()
    try:
        ticket = open_ticket(desk, 1)
    finally:
        own_redis.resume()
    assert spool.pending()
    spool.replay(store)
    assert stored_uids(client) == [ticket.uid]  # whether or not the timed-out write landed
    client.close()


def test_a_hung_redis_holds_the_caller_at_most_the_desks_bound(
        own_redis: RedisServer, spool: Spool) -> None:
    client = redis.Redis(unix_socket_path=str(own_redis.socket), decode_responses=True,
                         socket_timeout=2.0)  # a save waits 2 s before it times out
    store = TicketStore(client)
    desk = TicketDesk(store, spool, TicketSettings())
    own_redis.pause()
    try:
        started = time.monotonic()
        ticket = open_ticket(desk, 1)
        assert time.monotonic() - started < 0.5, "spooled after the desk's 0.2 s"
        assert spool.pending()
    finally:
        own_redis.resume()
    report = spool.replay(store)
    assert report.stored + report.duplicates == 1
    wait_for(lambda: stored_uids(client) == [ticket.uid],
             what="the ticket once, the save that went on in the background included")
    client.close()


def test_no_redis_and_no_spool_is_a_clear_error_and_the_ticket_is_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer(tmp_path / "never-started")
    client = fast_client(server)
    (tmp_path / "blocker").write_text("a file where the spool directory should be")
    desk = TicketDesk(TicketStore(client), Spool(tmp_path / "blocker" / "spool.jsonl"),
                      TicketSettings())
    with pytest.raises(TicketNotSaved, match=r"not saved: Redis unreachable and spool failed"):
        open_ticket(desk, 7)
    assert "NOT SAVED" in caplog.text and '"call_id":"call-7"' in caplog.text
    client.close()


def test_replaying_an_absent_spool_does_nothing(client: redis.Redis, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "nowhere" / "spool.jsonl")
    assert not spool.pending()
    assert spool.replay(TicketStore(client)).stored == 0
    shutil.rmtree(tmp_path / "nowhere", ignore_errors=True)
