"""Tickets: what the voice bot could not answer, kept until a person deals with it.

`TicketDesk.open` saves a ticket in Redis, or in a local spool while Redis is
unreachable; `Outbox` replays the spool and delivers tickets to the helpdesk;
`TicketStore` lists, acknowledges and resolves them. `build_tickets` wires the
three from the configuration. Errors are drawn in `ivr.tickets.errors`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import redis

from ivr.tickets.config import HelpdeskSettings, SlaHours, TicketSettings
from ivr.tickets.desk import TicketDesk
from ivr.tickets.errors import (
    DeliveryFailed,
    HelpdeskRejected,
    HelpdeskUnreachable,
    InvalidTransition,
    TicketError,
    TicketNotSaved,
    UnknownTicket,
)
from ivr.tickets.helpdesk import Helpdesk
from ivr.tickets.ids import parse_ticket_id, spoken_ticket_id
from ivr.tickets.model import Candidate, Priority, Ticket, TicketStatus, Turn
from ivr.tickets.outbox import Outbox
from ivr.tickets.spool import Spool
from ivr.tickets.store import TicketStore

__all__ = [
    "Candidate", "DeliveryFailed", "Helpdesk", "HelpdeskRejected", "HelpdeskSettings",
    "HelpdeskUnreachable", "InvalidTransition", "Outbox", "Priority", "SlaHours", "Spool",
    "Ticket", "TicketDesk", "TicketError", "TicketNotSaved", "TicketSettings", "TicketStatus",
    "TicketStore", "Turn", "UnknownTicket", "build_tickets", "parse_ticket_id",
    "spoken_ticket_id",
]


def build_tickets(settings: TicketSettings, client: redis.Redis, *, prefix: str,
                  data_dir: Path, node: str, clock: Callable[[], float] = time.time,
                  replicas: int = 0,
                  replica_wait_ms: int = 100) -> tuple[TicketDesk, Outbox]:
    """The desk that opens tickets and the outbox that moves them on (start() it);
    `replicas` must confirm each new ticket (`TicketStore`)."""
    helpdesk_settings = settings.helpdesk
    helpdesk = None
    if helpdesk_settings.url is not None:
        token = helpdesk_settings.token
        helpdesk = Helpdesk(helpdesk_settings.url,
                            token.get_secret_value() if token is not None else None,
                            helpdesk_settings.timeout_s)
    store = TicketStore(client, prefix, deliver=helpdesk is not None, clock=clock,
                        replicas=replicas, replica_wait_ms=replica_wait_ms)
    spool = Spool(settings.spool_path(data_dir))
    outbox = Outbox(store, helpdesk, spool, helpdesk_settings, clock=clock)
    desk = TicketDesk(store, spool, settings, node, clock=clock, on_saved=outbox.wake)
    return desk, outbox
