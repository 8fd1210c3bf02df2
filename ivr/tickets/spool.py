"""The ticket spool: tickets that Redis could not take, one JSON line each, in a
`SpoolFile` (`ivr.spool_file` draws its files: the spool, the one set aside for a
replay, the unreadable lines).

Replaying twice cannot duplicate a ticket: `TicketStore.add` recognises a
ticket it already holds by its uid.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from ivr.spool_file import BadLine, SpoolFile, parse_lines
from ivr.tickets.model import Ticket
from ivr.tickets.store import AddOutcome, TicketStore

logger = logging.getLogger(__name__)

MAX_REPLAY_ROUNDS = 3
"""Spool files taken in one `replay()`: the set-aside one, then the fresh one, then a spare."""


@dataclass(frozen=True)
class ReplayReport:
    stored: int = 0
    duplicates: int = 0
    """Tickets Redis already had: an earlier replay stored them before it was cut short."""
    bad: int = 0


def parse_spool(data: bytes) -> tuple[list[Ticket], list[BadLine]]:
    """The tickets in a spool file's bytes, and the lines that are not tickets."""
    return parse_lines(data, Ticket.from_json)


class Spool:
    """An append-only file of tickets waiting for Redis; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        self.file = SpoolFile(path, "ticket")
        self.path, self.replaying, self.bad = self.file.path, self.file.replaying, self.file.bad
        self._replay_lock = threading.Lock()

    def append(self, ticket: Ticket) -> None:
        """Add `ticket` durably: on disk, fsynced, when this returns; OSError otherwise."""
        self.file.append([ticket.to_json().encode()])
        logger.debug("Ticket %s spooled to %s", ticket.id, self.path)

    def pending(self) -> bool:
        """Whether any tickets wait to be replayed."""
        return self.file.pending()

    def replay(self, store: TicketStore) -> ReplayReport:
        """Move every spooled ticket into Redis; redis.RedisError leaves the rest for later."""
        total = ReplayReport()
        with self._replay_lock:
            for _ in range(MAX_REPLAY_ROUNDS):
                if not self.file.set_aside():
                    break
                report = self._replay_file(store)
                total = ReplayReport(total.stored + report.stored,
                                     total.duplicates + report.duplicates, total.bad + report.bad)
        return total

    def _replay_file(self, store: TicketStore) -> ReplayReport:
        tickets, bad = parse_spool(self.file.read_aside())
        stored = duplicates = 0
        for ticket in tickets:
            outcome, saved = store.add(ticket, heard=True)
            if outcome == AddOutcome.DUPLICATE:
                duplicates += 1
                continue
            stored += 1
            if saved.id != ticket.id:
                logger.warning("Ticket %s from the spool is stored as %s: its id was taken",
                               ticket.id, saved.id)
        self.file.replayed(bad)
        logger.info("Spool %s replayed: %d tickets stored, %d already in Redis, %d unreadable",
                    self.path, stored, duplicates, len(bad))
        return ReplayReport(stored, duplicates, len(bad))
