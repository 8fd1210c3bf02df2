"""Tickets in a real Redis: adding once, listing, status changes, the desk that opens them."""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

import pytest
import redis

from ivr.tickets.config import SlaHours, TicketSettings
from ivr.tickets.desk import TicketDesk
from ivr.tickets.errors import InvalidTransition, UnknownTicket
from ivr.tickets.ids import ticket_id
from ivr.tickets.model import Candidate, Priority, TicketStatus, Turn
from ivr.tickets.spool import Spool
from ivr.tickets.store import RESOLVED_RETENTION_S, AddOutcome, TicketStore
from tests.ivr.tickets.peers import make_ticket, stored_uids


@pytest.fixture
def store(redis_client: redis.Redis) -> TicketStore:
    return TicketStore(redis_client, "hotline", deliver=True, clock=lambda: 5000.0)


def test_a_ticket_is_added_once(store: TicketStore, redis_client: redis.Redis) -> None:
    ticket = make_ticket()
    assert store.add(ticket) == (AddOutcome.STORED, ticket)
    assert store.add(ticket) == (AddOutcome.DUPLICATE, ticket)
    assert stored_uids(redis_client) == [ticket.uid]
    assert store.get(ticket.id) == ticket
    assert store.outbox_size() == 1


def test_without_delivery_the_outbox_stays_empty(redis_client: redis.Redis) -> None:
    store = TicketStore(redis_client, "hotline", deliver=False)
    store.add(make_ticket())
    assert store.outbox_size() == 0


def test_a_taken_id_moves_the_ticket_to_its_next_id(store: TicketStore) -> None:
    squatter, ticket = make_ticket(), make_ticket()
    store.add(dataclasses.replace(squatter, id=ticket.id))
    outcome, saved = store.add(ticket)
    assert outcome == AddOutcome.STORED
    assert saved.id == ticket_id(ticket.uid, 1) and saved.previous_id is None
    assert store.add(ticket) == (AddOutcome.DUPLICATE, saved)  # the same rename, found stored

    heard = make_ticket()
    store.add(dataclasses.replace(squatter, id=heard.id, uid="other"))
    _, saved = store.add(heard, heard=True)
    assert (saved.id, saved.previous_id) == (ticket_id(heard.uid, 1), heard.id)


def test_listing_is_newest_first_and_filters_by_status(store: TicketStore) -> None:
    tickets = [make_ticket(created_at=1000.0 + i) for i in range(5)]
    for ticket in tickets:
        store.add(ticket)
    store.ack(tickets[1].id)
    store.resolve(tickets[3].id)
    assert [t.uid for t in store.tickets()] == [t.uid for t in reversed(tickets)]
    assert [t.uid for t in store.tickets(limit=2)] == [tickets[4].uid, tickets[3].uid]
    assert [t.uid for t in store.tickets(TicketStatus.OPEN)] == \
        [tickets[4].uid, tickets[2].uid, tickets[0].uid]
    assert [t.id for t in store.tickets(TicketStatus.ACKED)] == [tickets[1].id]


def test_ack_then_resolve_and_wrong_moves(store: TicketStore, redis_client: redis.Redis) -> None:
    ticket = make_ticket()
    store.add(ticket)
    acked = store.ack(ticket.id)
    assert (acked.status, acked.acked_at) == (TicketStatus.ACKED, 5000.0)
    assert redis_client.ttl(f"hotline:ticket:{ticket.id}") == -1
    with pytest.raises(InvalidTransition, match="is already acked"):
        store.ack(ticket.id)
    resolved = store.resolve(ticket.id)
    assert (resolved.status, resolved.resolved_at) == (TicketStatus.RESOLVED, 5000.0)
    assert store.get(ticket.id) == resolved
    assert 0 < redis_client.ttl(f"hotline:ticket:{ticket.id}") <= RESOLVED_RETENTION_S
    with pytest.raises(InvalidTransition, match="is resolved; it cannot become acked"):
        store.ack(ticket.id)
    store.mark_failed(ticket.id, "503", 9999.0)  # delivery bookkeeping keeps the expiry
    assert redis_client.ttl(f"hotline:ticket:{ticket.id}") > 0


def test_unknown_ids(store: TicketStore) -> None:
    for action in (store.get, store.ack, store.resolve):
        with pytest.raises(UnknownTicket, match="no ticket 1234-5678"):
            action("1234-5678")


def test_an_unreadable_ticket_is_skipped_in_lists_and_named_in_errors(
        store: TicketStore, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    good = make_ticket(created_at=1.0)
    store.add(good)
    redis_client.set("hotline:ticket:1111-2222", "{broken")
    redis_client.zadd("hotline:tickets", {"1111-2222": 2.0})
    assert [t.uid for t in store.tickets()] == [good.uid]
    assert "Ticket 1111-2222 in Redis cannot be read" in caplog.text
    with pytest.raises(ValueError, match="not valid JSON"):
        store.get("1111-2222")


def test_expired_tickets_leave_the_index(store: TicketStore, redis_client: redis.Redis) -> None:
    ticket = make_ticket()
    store.add(ticket)
    redis_client.delete(f"hotline:ticket:{ticket.id}")
    assert store.tickets() == []
    assert redis_client.zcard("hotline:tickets") == 0


def test_concurrent_updates_are_not_lost(store: TicketStore) -> None:
    ticket = make_ticket()
    store.add(ticket)
    failures = 40

    def fail_many() -> None:
        for i in range(failures):
            store.mark_failed(ticket.id, f"failure {i}", 1.0)

    worker = threading.Thread(target=fail_many)
    worker.start()
    store.ack(ticket.id)
    worker.join()
    final = store.get(ticket.id)
    assert final.status == TicketStatus.ACKED
    assert final.delivery_attempts == failures


def test_outbox_claims_hide_a_ticket_until_the_lease_ends(store: TicketStore) -> None:
    ticket = make_ticket(created_at=100.0)
    store.add(ticket)
    assert store.claim_due(50.0, 10.0) is None  # not due yet
    assert store.claim_due(200.0, 10.0) == ticket.id
    assert store.claim_due(205.0, 10.0) is None  # claimed
    assert store.claim_due(211.0, 10.0) == ticket.id  # the claimer died: lease over
    store.mark_failed(ticket.id, "503 Service Unavailable", 300.0)
    assert store.claim_due(299.0, 10.0) is None
    assert store.claim_due(300.0, 10.0) == ticket.id
    delivered = store.mark_delivered(ticket.id, 301.0)
    assert (delivered.delivered_at, delivered.delivery_attempts) == (301.0, 2)
    assert delivered.delivery_error is None
    assert store.outbox_size() == 0 and store.claim_due(1e12, 10.0) is None


# The desk


def test_desk_opens_a_prioritised_ticket_in_redis(
        store: TicketStore, redis_client: redis.Redis, tmp_path: Path) -> None:
    settings = TicketSettings(sla_hours=SlaHours(P1=2))
    woken: list[bool] = []
    desk = TicketDesk(store, Spool(tmp_path / "spool.jsonl"), settings, "node-1",
                      clock=lambda: 1000.0, on_saved=lambda: woken.append(True))
    ticket = desk.open(
        caller="+8613800000000", call_id="call-9", trunk="carrier-a",
        reason="answer did not help",
        transcript=[Turn("bot", "How can I help?"),
                    Turn("caller", "the mixer smells of smoke and the line is stopped")],
        candidates=[Candidate("mixer-noise", "Mixer is noisy", 0.4, "mixers", Priority.P3),
                    Candidate("mixer-smell", "Mixer smells", 0.7, "mixers", Priority.P3)])
    assert store.get(ticket.id) == ticket
    assert ticket.priority == Priority.P1
    assert ticket.priority_reasons == ("FAQ mixer-smell has priority P3",
                                       "production stopped ('line is stopped'): P3 -> P2",
                                       "safety ('smoke'): P2 -> P1")
    assert ticket.sla_due_at == 1000.0 + 2 * 3600
    assert (ticket.category, ticket.node, ticket.status) == ("mixers", "node-1",
                                                             TicketStatus.OPEN)
    assert woken == [True]
    assert not (tmp_path / "spool.jsonl").exists()


def test_desk_category_falls_back_to_general(store: TicketStore, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    desk = TicketDesk(store, Spool(tmp_path / "spool.jsonl"), TicketSettings())
    with caplog.at_level(logging.INFO, logger="ivr.tickets.desk"):
        ticket = desk.open(caller="100", call_id="c", trunk="t", reason="asked for a person")
    assert (ticket.category, ticket.priority) == ("general", Priority.P3)
    assert f"Ticket {ticket.id} opened for call c from 100: P3, general" in caplog.text


def test_reindex_counts_tickets_saved_before_the_priority_indexes(
        store: TicketStore, redis_client: redis.Redis) -> None:
    first, second = make_ticket(priority=Priority.P1), make_ticket(priority=Priority.P2)
    store.add(first)
    store.add(second)
    store.ack(second.id)
    store.add(done := make_ticket())
    store.resolve(done.id)
    for key in redis_client.scan_iter("hotline:tickets:*:P*"):  # as an older version left it
        redis_client.delete(key)
    assert sum(store.count_unresolved().values()) == 0
    assert store.reindex() == 2
    counts = {k: v for k, v in store.count_unresolved().items() if v}
    assert counts == {(TicketStatus.OPEN, Priority.P1): 1, (TicketStatus.ACKED, Priority.P2): 1}
    assert store.reindex() == 0  # once per Redis
