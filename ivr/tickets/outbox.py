"""The outbox: moves tickets on until they are where they belong.

One thread, on every pass, first replays the spool into Redis (when Redis is
back), then posts each ticket due in Redis's outbox to the helpdesk. A failed
post is tried again after an exponential backoff with jitter, capped at
``retry_max_s``, for as long as it takes: nothing is dropped. The schedule
lives in Redis, so a restarted server (or another node) carries on where this
one stopped; a claimed ticket is hidden from other nodes for the length of
one attempt.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import redis

from ivr.tickets.config import HelpdeskSettings
from ivr.tickets.errors import DeliveryFailed, HelpdeskRejected, UnknownTicket
from ivr.tickets.helpdesk import Helpdesk
from ivr.tickets.spool import Spool
from ivr.tickets.store import TicketStore

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0
"""How often the outbox looks for due tickets when nothing wakes it."""
LEASE_MARGIN_S = 30.0
"""Added to the helpdesk timeout while a ticket is claimed, in case this node dies mid-post."""
REDIS_RETRY_S = (0.5, 10.0)
"""First and longest wait before the next pass after Redis failed."""
STOP_TIMEOUT_S = 15.0
"""How long `stop()` waits for a pass in progress (it may be waiting on the helpdesk)."""
_RETRIED_CLIENT_ERRORS = frozenset({408, 425, 429})
"""4xx statuses that say "try again"; other 4xx usually need a person to fix something."""


def retry_delay(attempts: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Seconds to wait after `attempts` failed attempts: doubling from `base_s`, capped
    at `max_s`, the upper half random so tickets that failed together spread out."""
    ceiling = min(max_s, base_s * 2.0 ** min(attempts - 1, 60))
    return ceiling / 2 + rng.uniform(0.0, ceiling / 2)


class Outbox:
    """Replays the spool and delivers tickets, from its own thread or by `drain()` calls."""

    def __init__(self, store: TicketStore, helpdesk: Helpdesk | None, spool: Spool | None,
                 settings: HelpdeskSettings, *, clock: Callable[[], float] = time.time,
                 poll_interval_s: float = POLL_INTERVAL_S, lease_margin_s: float = LEASE_MARGIN_S,
                 redis_retry_s: tuple[float, float] = REDIS_RETRY_S,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.helpdesk = helpdesk
        self.spool = spool
        self.settings = settings
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self.lease_s = settings.timeout_s + lease_margin_s
        self.redis_retry_s = redis_retry_s
        self._rng = rng or random.Random()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ticket-outbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self.helpdesk is not None:
            self.helpdesk.close()

    def wake(self) -> None:
        """Start a pass now, e.g. after a ticket was opened."""
        self._wake.set()

    def drain(self) -> int:
        """One pass: replay the spool, then attempt every due ticket once; return how many
        were delivered. redis.RedisError propagates."""
        if self.spool is not None and self.spool.pending():
            self._replay(self.spool)
        delivered = 0
        while self.helpdesk is not None and not self._stopping:
            ticket_id = self.store.claim_due(self.clock(), self.lease_s)
            if ticket_id is None:
                break
            delivered += self._deliver(self.helpdesk, ticket_id)
        return delivered

    def _run(self) -> None:
        backoff = self.redis_retry_s[0]
        while not self._stopping:
            self._wake.clear()
            wait = self.poll_interval_s
            try:
                self.drain()
                backoff = self.redis_retry_s[0]
            except redis.RedisError as exc:
                logger.warning("Tickets: Redis unreachable, next try in %.1f s: %s", backoff, exc)
                wait, backoff = backoff, min(backoff * 2, self.redis_retry_s[1])
            except Exception:  # a bug must not end delivery for good
                logger.exception("Ticket outbox pass failed")
            self._wake.wait(wait)

    def _replay(self, spool: Spool) -> None:
        """Replay the spool; a failure other than Redis being away must not hold up delivery
        of the tickets already in Redis, so it is logged and tried again next pass."""
        try:
            spool.replay(self.store)
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception:
            logger.exception("Replaying the ticket spool %s failed; trying again next pass",
                             spool.path)

    def _deliver(self, helpdesk: Helpdesk, ticket_id: str) -> int:
        """Attempt one claimed ticket; 1 if the helpdesk took it, else 0."""
        try:
            ticket = self.store.get(ticket_id)
        except (UnknownTicket, ValueError) as exc:
            logger.error("Ticket %s left the outbox undelivered: %s", ticket_id, exc)
            self.store.forget_delivery(ticket_id)
            return 0
        attempt = ticket.delivery_attempts + 1
        try:
            status = helpdesk.deliver(ticket)
        except DeliveryFailed as exc:
            self._failed(ticket_id, attempt, exc)
            return 0
        try:
            self.store.mark_delivered(ticket_id, self.clock())
        except UnknownTicket:
            self.store.forget_delivery(ticket_id)
        logger.info("Ticket %s delivered to the helpdesk (HTTP %d, attempt %d)",
                    ticket_id, status, attempt)
        return 1

    def _failed(self, ticket_id: str, attempt: int, error: DeliveryFailed) -> None:
        delay = retry_delay(attempt, self.settings.retry_base_s, self.settings.retry_max_s,
                            self._rng)
        level = logging.WARNING
        if isinstance(error, HelpdeskRejected):
            if error.retry_after_s is not None:
                delay = min(max(delay, error.retry_after_s), self.settings.retry_max_s)
            if 400 <= error.status < 500 and error.status not in _RETRIED_CLIENT_ERRORS:
                level = logging.ERROR
        logger.log(level, "Ticket %s not delivered (attempt %d), next attempt in %.1f s: %s",
                   ticket_id, attempt, delay, error)
        try:
            self.store.mark_failed(ticket_id, str(error), self.clock() + delay)
        except UnknownTicket:
            self.store.forget_delivery(ticket_id)
