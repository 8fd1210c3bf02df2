"""Errors raised by the tickets package.

    TicketError
     +-- UnknownTicket            no ticket has that id
     +-- InvalidTransition        a status change the ticket's status does not allow
     +-- TicketNotSaved           neither Redis nor the local spool took a new ticket
     +-- DeliveryFailed           one POST to the helpdesk did not succeed
          +-- HelpdeskUnreachable no answer: connection refused, timeout, DNS
          +-- HelpdeskRejected    the helpdesk answered with a status other than 2xx or 409

Parsers (ticket ids, spool lines) raise ``ValueError`` on bad input, as every
parser in this code base does.
"""

from __future__ import annotations


class TicketError(Exception):
    """Base of the tickets package's errors."""


class UnknownTicket(TicketError):
    def __init__(self, ticket_id: str) -> None:
        super().__init__(ticket_id)
        self.ticket_id = ticket_id

    def __str__(self) -> str:
        return f"no ticket {self.ticket_id}"


class InvalidTransition(TicketError):
    def __init__(self, ticket_id: str, current: str, wanted: str) -> None:
        super().__init__(ticket_id, current, wanted)
        self.ticket_id, self.current, self.wanted = ticket_id, current, wanted

    def __str__(self) -> str:
        if self.current == self.wanted:
            return f"ticket {self.ticket_id} is already {self.current}"
        return f"ticket {self.ticket_id} is {self.current}; it cannot become {self.wanted}"


class TicketNotSaved(TicketError):
    """The ticket is only in memory (and in the log line that reported this)."""

    def __init__(self, ticket_id: str, reason: str) -> None:
        super().__init__(ticket_id, reason)
        self.ticket_id, self.reason = ticket_id, reason

    def __str__(self) -> str:
        return f"ticket {self.ticket_id} not saved: {self.reason}"


class DeliveryFailed(TicketError):
    """One failed delivery attempt; `str()` is the reason kept on the ticket."""


class HelpdeskUnreachable(DeliveryFailed):
    def __init__(self, detail: str) -> None:
        super().__init__(f"helpdesk unreachable: {detail}")


class HelpdeskRejected(DeliveryFailed):
    def __init__(self, status: int, detail: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"helpdesk answered {status} {detail}".rstrip())
        self.status = status
        self.retry_after_s = retry_after_s
