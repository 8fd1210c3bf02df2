"""`hotline tickets ...`: see, acknowledge and resolve tickets the voice bot opened."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click
import redis

from ivr.cli.common import (
    BadUsage,
    CliError,
    config_option,
    json_option,
    load,
    local_time,
    print_json,
    print_table,
    redis_client,
)
from ivr.tickets.errors import InvalidTransition, UnknownTicket
from ivr.tickets.ids import parse_ticket_id, spoken_ticket_id
from ivr.tickets.model import Ticket, TicketStatus
from ivr.tickets.store import LIST_LIMIT, TicketStore

T = TypeVar("T")


@click.group()
def tickets() -> None:
    """See and update tickets opened when the voice bot could not help."""


@tickets.command("list")
@click.option("--status", type=click.Choice([s.value for s in TicketStatus]), default=None,
              help="Only tickets with this status.")
@click.option("--limit", default=LIST_LIMIT, show_default=True, type=click.IntRange(1))
@config_option
@json_option
def list_tickets(status: str | None, limit: int, config: str | None, as_json: bool) -> None:
    """Show the most recent tickets, newest first."""
    wanted = TicketStatus(status) if status else None
    found = _store(config, lambda store: store.tickets(wanted, limit))
    if as_json:
        print_json([t.to_readable_dict() for t in found])
        return
    if not found:
        click.echo("No tickets" + (f" with status {status}." if status else "."))
        return
    print_table(["ID", "OPENED", "PRI", "STATUS", "DUE", "CALLER", "CATEGORY", "HELPDESK"],
                [[t.id, local_time(t.created_at), t.priority.value, t.status.value,
                  local_time(t.sla_due_at), t.caller, t.category, _delivery(t)] for t in found])


@tickets.command("show")
@click.argument("ticket_id")
@config_option
@json_option
def show_ticket(ticket_id: str, config: str | None, as_json: bool) -> None:
    """Show one ticket in full.

    TICKET_ID as the caller heard it: 4729-1830, 4729 1830 or 47291830.
    """
    wanted = _parse(ticket_id)
    ticket = _store(config, lambda store: store.get(wanted))
    if as_json:
        print_json(ticket.to_readable_dict())
        return
    data = ticket.to_readable_dict()
    transcript, candidates = data.pop("transcript"), data.pop("candidates")
    reasons = data.pop("priority_reasons")
    data["helpdesk"] = _delivery(ticket)
    for key, value in data.items():
        click.echo(f"{key + ':':<19}{'-' if value in (None, '') else value}")
    click.echo(f"{'spoken as:':<19}{spoken_ticket_id(ticket.id)}")
    click.echo("priority because:" + ("  -" if not reasons else ""))
    for reason in reasons:
        click.echo(f"  {reason}")
    click.echo("transcript:" + ("         -" if not transcript else ""))
    for turn in transcript:
        click.echo(f"  {turn['speaker']}: {turn['text']}")
    click.echo("candidates:" + ("         -" if not candidates else ""))
    for candidate in candidates:
        extra = ", ".join(f"{k} {candidate[k]}" for k in ("category", "priority") if candidate[k])
        click.echo(f"  {candidate['score']:.2f}  {candidate['faq_id']}: {candidate['question']}"
                   + (f" ({extra})" if extra else ""))


@tickets.command("ack")
@click.argument("ticket_id")
@config_option
def ack_ticket(ticket_id: str, config: str | None) -> None:
    """Acknowledge a ticket: someone is on it."""
    wanted = _parse(ticket_id)
    ticket = _store(config, lambda store: store.ack(wanted))
    click.echo(f"Ticket {ticket.id} acked.")


@tickets.command("resolve")
@click.argument("ticket_id")
@config_option
def resolve_ticket(ticket_id: str, config: str | None) -> None:
    """Resolve a ticket: the caller has been helped."""
    wanted = _parse(ticket_id)
    ticket = _store(config, lambda store: store.resolve(wanted))
    click.echo(f"Ticket {ticket.id} resolved.")


def _parse(ticket_id: str) -> str:
    try:
        return parse_ticket_id(ticket_id)
    except ValueError as exc:
        raise BadUsage(str(exc)) from exc


def _store(config: str | None, act: Callable[[TicketStore], T]) -> T:
    settings = load(config)
    store = TicketStore(redis_client(settings), settings.redis.prefix)
    try:
        return act(store)
    except (UnknownTicket, InvalidTransition) as exc:
        raise BadUsage(str(exc)) from exc
    except ValueError as exc:  # a stored ticket that cannot be parsed
        raise CliError(f"ticket in Redis cannot be read: {exc}") from exc
    except redis.RedisError as exc:
        raise CliError(f"Redis failed while handling tickets: {exc}") from exc


def _delivery(ticket: Ticket) -> str:
    if ticket.delivered_at is not None:
        return "delivered"
    if ticket.delivery_attempts:
        return f"retrying ({ticket.delivery_attempts} attempts)"
    return "-"
