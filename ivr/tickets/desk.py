"""Where the voice bot opens a ticket when it cannot help a caller.

`TicketDesk.open` returns only once the ticket is safe: in Redis, or, when
Redis cannot be reached or has not answered within `wait_s`, fsynced to the local
spool that the outbox replays later. The caller can then be told the ticket's id.
A save that was too slow goes on in the background; if it lands after all, the
replay finds the ticket there already (by its uid) and stores nothing twice. Only
if both fail does it raise `TicketNotSaved`, after logging the whole ticket so that
a person can still recover it from the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import redis
from prometheus_client import Counter

from ivr.tickets.config import TicketSettings
from ivr.tickets.errors import TicketNotSaved
from ivr.tickets.ids import new_uid, ticket_id
from ivr.tickets.model import Candidate, Ticket, Turn
from ivr.tickets.priority import best_candidate, decide_priority, sla_due
from ivr.tickets.spool import Spool
from ivr.tickets.store import TicketStore
from trunks.bounded import WAIT_S, within

logger = logging.getLogger(__name__)

UNCATEGORISED = "general"
"""The category of a ticket whose best candidate has none (or that has no candidates)."""

TICKETS_OPENED = Counter("hotline_tickets_opened", "Tickets opened (saved in Redis or "
                          "spooled), by priority", ["priority"], registry=None)
"""Process-wide; `ivr.metrics` registers it with each server's registry."""


class TicketDesk:
    """Opens tickets; thread-safe (each call's worker thread may open one)."""

    def __init__(self, store: TicketStore, spool: Spool, settings: TicketSettings,
                 node: str = "", *, clock: Callable[[], float] = time.time,
                 on_saved: Callable[[], None] | None = None, wait_s: float = WAIT_S) -> None:
        """`wait_s`: how long the caller waits for Redis to take a ticket before it is
        spooled instead."""
        self.store = store
        self.wait_s = wait_s
        self.spool = spool
        self.settings = settings
        self.node = node
        self.clock = clock
        self.on_saved = on_saved
        """Called after each ticket is saved; the server passes `Outbox.wake`."""
        self.on_opened: Callable[[Ticket], None] | None = None
        """Called with each ticket opened (saved or spooled): the server alerts on P1s."""

    def open(self, *, caller: str, call_id: str, trunk: str, reason: str,
             transcript: Sequence[Turn] = (), candidates: Sequence[Candidate] = (),
             category: str | None = None) -> Ticket:
        """Create, prioritise and save a ticket; return it as saved (tell the caller its id)."""
        ticket = self.build(caller=caller, call_id=call_id, trunk=trunk, reason=reason,
                            transcript=transcript, candidates=candidates, category=category)
        built = ticket
        try:
            _, ticket = within(lambda: self.store.add(built), self.wait_s, name="ticket")
            where = "Redis"
        except redis.RedisError as exc:  # TooSlow included
            logger.warning("Ticket %s: Redis unreachable, spooling it: %s", ticket.id, exc)
            self._spool(ticket)
            where = str(self.spool.path)
        TICKETS_OPENED.labels(str(ticket.priority)).inc()
        logger.info("Ticket %s opened for call %s from %s: %s, %s, due %s (saved in %s)",
                    ticket.id, call_id, caller, ticket.priority, ticket.category,
                    time.strftime("%Y-%m-%d %H:%M", time.localtime(ticket.sla_due_at)), where)
        if self.on_saved is not None:
            self.on_saved()
        if self.on_opened is not None:
            self.on_opened(ticket)
        return ticket

    def build(self, *, caller: str, call_id: str, trunk: str, reason: str,
              transcript: Sequence[Turn] = (), candidates: Sequence[Candidate] = (),
              category: str | None = None) -> Ticket:
        """The ticket `open` would save, without saving it."""
        now = self.clock()
        uid = new_uid()
        decision = decide_priority(candidates, transcript, self.settings.default_priority)
        best = best_candidate(candidates)
        return Ticket(
            id=ticket_id(uid), uid=uid, created_at=now, caller=caller, call_id=call_id,
            trunk=trunk, reason=reason,
            category=category or (best.category if best else None) or UNCATEGORISED,
            priority=decision.priority, priority_reasons=decision.reasons,
            sla_due_at=sla_due(now, decision.priority, self.settings.sla_hours),
            transcript=tuple(transcript), candidates=tuple(candidates), node=self.node)

    def _spool(self, ticket: Ticket) -> None:
        try:
            self.spool.append(ticket)
        except OSError as exc:
            logger.critical("Ticket %s NOT SAVED (Redis unreachable, spool %s failed: %s); "
                            "the ticket: %s", ticket.id, self.spool.path, exc, ticket.to_json())
            raise TicketNotSaved(ticket.id, f"Redis unreachable and spool failed: {exc}") \
                from exc
