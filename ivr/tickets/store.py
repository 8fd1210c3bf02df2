"""Tickets in Redis, with the outbox of tickets the helpdesk has yet to take.

Keys (``{p}`` is the prefix, ``hotline`` by default):

    {p}:ticket:{id}      string, JSON Ticket; expires RESOLVED_RETENTION_S after resolution
    {p}:tickets          sorted set of ticket ids, scored by creation time
    {p}:tickets:outbox   sorted set of ticket ids to deliver, scored by the next attempt's time
    {p}:tickets:{status}:{priority}
                         sorted set of the ids of unresolved tickets (status open or acked)
                         of that priority, scored by creation time: counted for metrics
    {p}:tickets:indexed  set once `reindex` has indexed the tickets saved before these

A ticket is added by one Lua script, so adding the same ticket twice (a spool
replayed again after a crash) leaves one copy: the script compares uids.
Redis errors propagate as ``redis.RedisError``; callers decide what to do.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Iterator
from typing import cast

import redis
from redis.client import Pipeline

from ivr.tickets.errors import UnknownTicket
from ivr.tickets.ids import ticket_id
from ivr.tickets.model import Priority, Ticket, TicketStatus
from trunks.replicated import execute

logger = logging.getLogger(__name__)

RESOLVED_RETENTION_S = 365 * 86400
"""How long a resolved ticket is kept."""
LIST_LIMIT = 50
"""Tickets returned by `tickets()` unless told otherwise."""
MAX_ID_ATTEMPTS = 50
"""Ids tried for one ticket before giving up; with 90 million ids, two is already rare."""
_BATCH = 200
UNRESOLVED = (TicketStatus.OPEN, TicketStatus.ACKED)
"""The statuses whose tickets are indexed by priority."""

_INDEX = """
local function index(open_key, acked_key, status, score, id)
    if status == 'open' then redis.call('ZADD', open_key, score, id)
    else redis.call('ZREM', open_key, id) end
    if status == 'acked' then redis.call('ZADD', acked_key, score, id)
    else redis.call('ZREM', acked_key, id) end
end
"""
_ADD = _INDEX + """
local existing = redis.call('GET', KEYS[1])
if existing then
    local ok, doc = pcall(cjson.decode, existing)
    if ok and type(doc) == 'table' and doc['uid'] == ARGV[2] then return 'duplicate' end
    return 'taken'
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
if ARGV[5] == '1' then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4]) end
index(KEYS[4], KEYS[5], ARGV[6], ARGV[3], ARGV[4])
return 'stored'
"""
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #due == 0 then return false end
redis.call('ZADD', KEYS[1], ARGV[2], due[1])
return due[1]
"""
_REPLACE = _INDEX + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] == '' then
    redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
else
    redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
if ARGV[4] == 'done' then
    redis.call('ZREM', KEYS[2], ARGV[6])
elseif ARGV[4] == 'retry' then
    redis.call('ZADD', KEYS[2], 'XX', ARGV[5], ARGV[6])
end
index(KEYS[3], KEYS[4], ARGV[7], ARGV[8], ARGV[6])
return 1
"""


class AddOutcome(enum.StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    """Redis already had this very ticket (same uid); nothing changed."""


class TicketStore:
    """Reads and writes tickets in one Redis database; `deliver` puts new ones in the outbox."""

    def __init__(self, client: redis.Redis, prefix: str = "hotline", *, deliver: bool = False,
                 clock: Callable[[], float] = time.time, replicas: int = 0,
                 replica_wait_ms: int = 100) -> None:
        """`replicas`: how many replicas must confirm a new ticket before `add` returns
        (`trunks.replicated`; else it raises, and the desk spools the ticket)."""
        self.replicas, self.replica_wait_ms = replicas, replica_wait_ms
        self.redis = client
        self.prefix = prefix
        self.deliver = deliver
        self.clock = clock
        self._add = client.register_script(_ADD)
        self._claim = client.register_script(_CLAIM)
        self._replace = client.register_script(_REPLACE)

    def add(self, ticket: Ticket, *, heard: bool = False) -> tuple[AddOutcome, Ticket]:
        """Store a new ticket once; return the outcome and the ticket as stored.

        If its id is taken by another ticket, the next id derived from its uid
        is tried. `heard` says the caller already heard the first id; it is then
        kept as `previous_id` so a person can match the caller's number.
        """
        original, attempt = ticket.id, 0
        while attempt < MAX_ID_ATTEMPTS:
            keys = [self._key(ticket.id), self._index, self._outbox,
                    *self._status_indexes(ticket)]
            args: list[str | float] = [ticket.to_json(), ticket.uid, ticket.created_at,
                                       ticket.id, "1" if self.deliver else "0",
                                       str(ticket.status)]
            (reply,) = execute(self.redis, self._adder(keys, args), self.replicas,
                               self.replica_wait_ms)
            result = _text(reply)
            if result != "taken":
                return AddOutcome(result), ticket
            attempt += 1
            renamed = ticket_id(ticket.uid, attempt)
            logger.warning("Ticket id %s is taken by another ticket; trying %s", ticket.id,
                           renamed)
            ticket = dataclasses.replace(ticket, id=renamed,
                                         previous_id=original if heard else None)
        raise RuntimeError(f"no free ticket id for uid {ticket.uid} after "
                           f"{MAX_ID_ATTEMPTS} attempts")

    def _adder(self, keys: list[str], args: list[str | float]) -> Callable[[Pipeline], None]:
        """The add script with `keys` and `args`, queued on a pipeline."""
        def add(pipe: Pipeline) -> None:
            self._add(keys=keys, args=args, client=pipe)
        return add

    def get(self, ticket_id: str) -> Ticket:
        """The ticket; UnknownTicket if there is none, ValueError if it cannot be read."""
        text = cast(str | None, self.redis.get(self._key(ticket_id)))
        if text is None:
            raise UnknownTicket(ticket_id)
        return Ticket.from_json(text)

    def tickets(self, status: TicketStatus | None = None,
                limit: int = LIST_LIMIT) -> list[Ticket]:
        """Up to `limit` tickets (in `status`, if given), newest first."""
        found: list[Ticket] = []
        for ticket in self._newest_first():
            if status is None or ticket.status == status:
                found.append(ticket)
                if len(found) == limit:
                    break
        return found

    def ack(self, ticket_id: str) -> Ticket:
        return self._update(ticket_id, lambda t: t.moved_to(TicketStatus.ACKED, self.clock()))

    def resolve(self, ticket_id: str) -> Ticket:
        return self._update(ticket_id, lambda t: t.moved_to(TicketStatus.RESOLVED, self.clock()),
                            expire_s=RESOLVED_RETENTION_S)

    # The outbox, worked by `ivr.tickets.outbox.Outbox`.

    def claim_due(self, now: float, lease_s: float) -> str | None:
        """The id of a ticket due for delivery, hidden from other claims for `lease_s`."""
        return _text(self._claim(keys=[self._outbox], args=[now, now + lease_s])) or None

    def mark_delivered(self, ticket_id: str, at: float) -> Ticket:
        """Record a delivery and take the ticket out of the outbox."""
        def change(ticket: Ticket) -> Ticket:
            return dataclasses.replace(ticket, delivered_at=at, delivery_error=None,
                                       delivery_attempts=ticket.delivery_attempts + 1)

        return self._update(ticket_id, change, outbox="done")

    def mark_failed(self, ticket_id: str, error: str, retry_at: float) -> Ticket:
        """Record a failed attempt and schedule the next one for `retry_at`."""
        def change(ticket: Ticket) -> Ticket:
            return dataclasses.replace(ticket, delivery_error=error,
                                       delivery_attempts=ticket.delivery_attempts + 1)

        return self._update(ticket_id, change, outbox="retry", retry_at=retry_at)

    def forget_delivery(self, ticket_id: str) -> None:
        """Take an id out of the outbox (its ticket has expired or cannot be read)."""
        self.redis.zrem(self._outbox, ticket_id)

    def outbox_size(self) -> int:
        return self.redis.zcard(self._outbox)

    def count_unresolved(self) -> dict[tuple[TicketStatus, Priority], int]:
        """How many tickets are open and acked, by priority: one ZCARD each, no scan."""
        pipe = self.redis.pipeline(transaction=False)
        wanted = [(status, priority) for status in UNRESOLVED for priority in Priority]
        for status, priority in wanted:
            pipe.zcard(self._status_index(status, priority))
        return dict(zip(wanted, (int(n) for n in pipe.execute()), strict=True))

    def reindex(self) -> int:
        """Put the unresolved tickets saved before the per-priority indexes existed into
        them: once per Redis (a marker key says it was done). Returns how many."""
        if not self.redis.set(f"{self.prefix}:tickets:indexed", "1", nx=True):
            return 0
        unresolved = [t.id for t in self._newest_first() if t.status in UNRESOLVED]
        for unresolved_id in unresolved:
            self._update(unresolved_id, lambda t: t)
        return len(unresolved)

    def _update(self, ticket_id: str, change: Callable[[Ticket], Ticket],
                expire_s: int | None = None, outbox: str = "",
                retry_at: float = 0.0) -> Ticket:
        """Apply `change` to the stored ticket, again if it changed meanwhile (compare and
        set); `outbox` "done" takes it out of the outbox, "retry" reschedules it."""
        key = self._key(ticket_id)
        while True:
            text = cast(str | None, self.redis.get(key))
            if text is None:
                raise UnknownTicket(ticket_id)
            ticket = change(Ticket.from_json(text))
            replaced = self._replace(
                keys=[key, self._outbox, *self._status_indexes(ticket)],
                args=[text, ticket.to_json(), "" if expire_s is None else expire_s, outbox,
                      retry_at, ticket_id, str(ticket.status), ticket.created_at])
            if replaced:
                return ticket

    def _newest_first(self) -> Iterator[Ticket]:
        start = 0
        while True:
            ids = cast(list[str], self.redis.zrevrange(self._index, start, start + _BATCH - 1))
            if not ids:
                return
            texts = cast(list[str | None], self.redis.mget([self._key(i) for i in ids]))
            gone = [i for i, text in zip(ids, texts, strict=True) if text is None]
            if gone:  # resolved tickets past their retention
                self.redis.zrem(self._index, *gone)
            for ticket_id_, text in zip(ids, texts, strict=True):
                if text is None:
                    continue
                try:
                    yield Ticket.from_json(text)
                except ValueError as exc:
                    logger.error("Ticket %s in Redis cannot be read: %s", ticket_id_, exc)
            start += _BATCH - len(gone)

    @property
    def _index(self) -> str:
        return f"{self.prefix}:tickets"

    @property
    def _outbox(self) -> str:
        return f"{self.prefix}:tickets:outbox"

    def _key(self, ticket_id: str) -> str:
        return f"{self.prefix}:ticket:{ticket_id}"

    def _status_index(self, status: TicketStatus, priority: Priority) -> str:
        return f"{self.prefix}:tickets:{status}:{priority}"

    def _status_indexes(self, ticket: Ticket) -> list[str]:
        """The open and acked indexes of the ticket's priority (it belongs in one or none)."""
        return [self._status_index(status, ticket.priority) for status in UNRESOLVED]


def _text(value: object) -> str:
    """A script's reply as text, whether the client decodes responses or not."""
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
