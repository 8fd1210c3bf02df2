"""Delivery to a fake helpdesk on loopback: once per ticket, through outages of both ends."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from ivr.tickets import build_tickets
from ivr.tickets.config import HelpdeskSettings, TicketSettings
from ivr.tickets.desk import TicketDesk
from ivr.tickets.helpdesk import Helpdesk
from ivr.tickets.model import Ticket, Turn
from ivr.tickets.outbox import Outbox
from ivr.tickets.spool import Spool
from ivr.tickets.store import AddOutcome, TicketStore
from tests.conftest import wait_for
from tests.ivr.tickets.peers import (
    TOKEN,
    FakeHelpdesk,
    fast_client,
    make_ticket,
    persistent_redis,
    stored_uids,
)

FAST = dict(timeout_s=0.3, retry_base_s=0.05, retry_max_s=0.2)
"""Helpdesk settings scaled down: attempts follow each other within a fraction of a second."""


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def helpdesk() -> Iterator[FakeHelpdesk]:
    with FakeHelpdesk().running() as fake:
        yield fake


def parts(client: redis.Redis, fake: FakeHelpdesk, tmp_path: Path,
          clock: Callable[[], float] = time.time, token: str = TOKEN,
          **settings: float) -> tuple[TicketDesk, Outbox, TicketStore]:
    config = HelpdeskSettings(url=fake.url, token=token, **{**FAST, **settings})
    store = TicketStore(client, deliver=True, clock=clock)
    spool = Spool(tmp_path / "spool.jsonl")
    outbox = Outbox(store, Helpdesk(fake.url, token, config.timeout_s), spool, config,
                    clock=clock, poll_interval_s=0.02, redis_retry_s=(0.05, 0.2))
    desk = TicketDesk(store, spool, TicketSettings(helpdesk=config), "node-1", clock=clock,
                      on_saved=outbox.wake)
    return desk, outbox, store


def open_ticket(desk: TicketDesk, n: int) -> Ticket:
    return desk.open(caller=f"+86138000000{n:02d}", call_id=f"call-{n}", trunk="carrier-a",
                     reason="no confident answer", transcript=[Turn("caller", f"question {n}")])


def outbox_score(client: redis.Redis, ticket_id: str) -> float:
    """When the ticket's next delivery attempt is due."""
    score = client.zscore("hotline:tickets:outbox", ticket_id)
    assert score is not None
    return float(score)


def test_each_ticket_is_delivered_once_with_its_key(
        redis_client: redis.Redis, helpdesk: FakeHelpdesk, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    desk, outbox, store = parts(redis_client, helpdesk, tmp_path)
    outbox.start()
    try:
        with caplog.at_level(logging.INFO, logger="ivr.tickets.outbox"):
            tickets = [open_ticket(desk, n) for n in range(3)]
            wait_for(lambda: store.outbox_size() == 0, 5.0, "deliveries")
    finally:
        outbox.stop()
    assert helpdesk.problems == []
    assert sorted(helpdesk.created) == sorted(t.uid for t in tickets)
    assert sorted(helpdesk.keys_received()) == sorted(t.uid for t in tickets)
    body = helpdesk.created[tickets[0].uid]
    assert (body["id"], body["caller"], body["call_id"]) == (tickets[0].id, "+8613800000000",
                                                            "call-0")
    assert body["transcript"] == [{"speaker": "caller", "text": "question 0", "at": None}]
    for ticket in tickets:
        saved = store.get(ticket.id)
        assert saved.delivered_at is not None and saved.delivery_attempts == 1
        assert f"Ticket {ticket.id} delivered to the helpdesk (HTTP 201, attempt 1)" in \
            caplog.text


def test_a_helpdesk_that_is_down_gets_the_tickets_when_it_is_back(
        redis_client: redis.Redis, helpdesk: FakeHelpdesk, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    helpdesk.down_for = 5
    desk, outbox, store = parts(redis_client, helpdesk, tmp_path)
    outbox.start()
    try:
        tickets = [open_ticket(desk, n) for n in range(2)]
        wait_for(lambda: store.outbox_size() == 0, 10.0, "deliveries after the outage")
    finally:
        outbox.stop()
    assert helpdesk.problems == []
    assert sorted(helpdesk.created) == sorted(t.uid for t in tickets)
    assert sum(store.get(t.id).delivery_attempts for t in tickets) == 5 + 2
    assert "not delivered (attempt 1), next attempt in" in caplog.text
    assert "helpdesk answered 503 Service Unavailable" in caplog.text


def test_a_retry_after_a_timeout_does_not_create_the_ticket_twice(
        redis_client: redis.Redis, helpdesk: FakeHelpdesk, tmp_path: Path) -> None:
    helpdesk.slow_first_s = 0.8  # longer than the 0.3 s timeout; the ticket is created anyway
    desk, outbox, store = parts(redis_client, helpdesk, tmp_path)
    outbox.start()
    try:
        ticket = open_ticket(desk, 1)
        wait_for(lambda: store.outbox_size() == 0, 5.0, "the retried delivery")
    finally:
        outbox.stop()
    saved = store.get(ticket.id)
    assert saved.delivery_attempts == 2 and saved.delivered_at is not None
    assert helpdesk.keys_received() == [ticket.uid, ticket.uid]
    assert [r.answered for r in helpdesk.received] == [201, 200]
    assert list(helpdesk.created) == [ticket.uid]


def test_backoff_grows_and_a_restarted_outbox_carries_on(
        redis_client: redis.Redis, helpdesk: FakeHelpdesk, tmp_path: Path) -> None:
    helpdesk.down_for = 100
    clock = Clock()
    desk, outbox, store = parts(redis_client, helpdesk, tmp_path, clock, retry_base_s=1.0,
                                retry_max_s=4.0)
    ticket = open_ticket(desk, 1)
    due: list[float] = []
    for _ in range(5):
        assert outbox.drain() == 0
        due.append(outbox_score(redis_client, ticket.id) - clock.now)
        assert outbox.drain() == 0  # not due again yet: nothing sent
        clock.now += 10.0
    assert len(helpdesk.received) == 5
    assert [c / 2 <= d <= c for d, c in zip(due, [1, 2, 4, 4, 4], strict=True)] == [True] * 5
    outbox.stop()

    helpdesk.down_for = 0
    _, again, _ = parts(redis_client, helpdesk, tmp_path, clock)
    assert again.drain() == 1
    again.stop()
    assert store.get(ticket.id).delivery_attempts == 6
    assert list(helpdesk.created) == [ticket.uid]


def test_retry_after_is_honoured_within_the_cap(
        redis_client: redis.Redis, helpdesk: FakeHelpdesk, tmp_path: Path) -> None:
    helpdesk.down_for, helpdesk.down_status, helpdesk.retry_after = 2, 429, "60"
    clock = Clock()
    desk, outbox, _ = parts(redis_client, helpdesk, tmp_path, clock, retry_base_s=1.0,
                            retry_max_s=30.0)
    ticket = open_ticket(desk, 1)
    outbox.drain()
    assert outbox_score(redis_client, ticket.id) == clock.now + 30.0
    outbox.stop()


def test_a_rejected_ticket_is_kept_and_reported_as_an_error(
        redis_client: redis.Redis, helpdesk: FakeHelpdesk, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    desk, outbox, store = parts(redis_client, helpdesk, tmp_path, Clock(), token="wrong")
    ticket = open_ticket(desk, 1)
    outbox.drain()
    outbox.stop()
    assert helpdesk.problems == ["authorization 'Bearer wrong'"]
    saved = store.get(ticket.id)
    assert saved.delivery_error is not None and "answered 400" in saved.delivery_error
    assert store.outbox_size() == 1
    assert any(r.levelno == logging.ERROR and ticket.id in r.getMessage() for r in caplog.records)


def test_redis_and_helpdesk_down_mid_run_nothing_lost_nothing_doubled(
        tmp_path: Path, helpdesk: FakeHelpdesk, caplog: pytest.LogCaptureFixture) -> None:
    server = persistent_redis(tmp_path / "redis")
    server.start()
    client = fast_client(server)
    desk, outbox, store = parts(client, helpdesk, tmp_path)
    outbox.start()
    try:
        before = [open_ticket(desk, n) for n in range(2)]
        wait_for(lambda: len(helpdesk.created) == 2, 5.0, "the first deliveries")
        helpdesk.down_for = len(helpdesk.received) + 4
        server.stop()
        during = [open_ticket(desk, n) for n in range(2, 5)]
        assert desk.spool.pending()
        server.start()
        wait_for(lambda: len(helpdesk.created) == 5, 10.0, "deliveries after both outages")
    finally:
        outbox.stop()
        server.stop()
    everything = sorted(t.uid for t in before + during)
    assert helpdesk.problems == []
    assert sorted(helpdesk.created) == everything
    assert not desk.spool.pending()
    assert "Tickets: Redis unreachable" in caplog.text
    server.start()
    try:
        assert sorted(stored_uids(client)) == everything
        assert store.outbox_size() == 0
    finally:
        client.close()
        server.stop()


def test_build_tickets_wires_delivery_only_with_a_url(
        redis_client: redis.Redis, helpdesk: FakeHelpdesk, tmp_path: Path) -> None:
    quiet = TicketSettings()
    desk, outbox = build_tickets(quiet, redis_client, prefix="hotline", data_dir=tmp_path,
                                 node="node-1")
    assert outbox.helpdesk is None and not desk.store.deliver
    assert desk.spool.path == tmp_path / "tickets" / "spool.jsonl"
    outbox.start()
    outbox.stop()

    settings = TicketSettings.model_validate(
        {"helpdesk": {"url": helpdesk.url, "token": TOKEN, **FAST}})
    desk, outbox = build_tickets(settings, redis_client, prefix="hotline", data_dir=tmp_path,
                                 node="node-1")
    outbox.start()
    try:
        ticket = open_ticket(desk, 1)
        wait_for(lambda: ticket.uid in helpdesk.created, 5.0, "the delivery")
    finally:
        outbox.stop()
    assert helpdesk.problems == []


def test_a_spool_that_cannot_be_replayed_does_not_hold_up_delivery(
        redis_client: redis.Redis, helpdesk: FakeHelpdesk, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    desk, outbox, store = parts(redis_client, helpdesk, tmp_path, clock)
    in_redis = open_ticket(desk, 1)
    desk.spool.append(make_ticket())

    def refuse(ticket: Ticket, *, heard: bool = False) -> tuple[AddOutcome, Ticket]:
        raise redis.ResponseError("NOPERM this user has no permissions to run 'evalsha'")

    outbox.store = TicketStore(redis_client, deliver=True, clock=clock)
    outbox.store.add = refuse  # type: ignore[method-assign]
    assert outbox.drain() == 1
    outbox.stop()
    assert list(helpdesk.created) == [in_redis.uid]
    assert desk.spool.pending()
    assert "Replaying the ticket spool" in caplog.text and "NOPERM" in caplog.text
    assert store.outbox_size() == 0
