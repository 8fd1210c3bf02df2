"""``/api/tickets``: the newest tickets, optionally of one status."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ivr.http.replies import limit
from ivr.operations import BadRequest
from ivr.tickets.model import TicketStatus
from ivr.tickets.store import TicketStore


def blueprint(tickets: TicketStore) -> Blueprint:
    routes = Blueprint("tickets", __name__, url_prefix="/api/tickets")

    @routes.get("")
    def ticket_list() -> Response:
        status = request.args.get("status")
        try:
            wanted = None if status is None else TicketStatus(status)
        except ValueError:
            raise BadRequest(f"status: expected one of "
                             f"{', '.join(s.value for s in TicketStatus)}") from None
        return jsonify([t.to_dict() for t in tickets.tickets(wanted, limit())])

    return routes


__all__ = ["blueprint"]
