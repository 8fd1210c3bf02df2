"""Which people on call are busy, across the nodes: a lease per person in Redis.

A forward takes the person's lease before ringing them (``SET NX``, with this process's
token), keeps it while their phone rings and while they talk (a thread renews every lease
held every `renew_s`), and gives it up when the attempt ends. So another node does not
ring a person who is on a call, or whose phone is ringing, on any node: `others` leaves
them out of the roster, and a node that loses the race to take a lease moves on to the
next person. The lease of a node that died lapses `lease_s` after its last renewal; a
node that takes a bridged call up from a dead node takes the person's lease over.

Redis is on the call path here, so every operation waits at most `wait_s`
(`trunks.bounded.within`): when Redis is away or slow, a node goes on with what it knows
itself (the people on its own calls), and says so in the log once per outage. After a
failure the call path leaves Redis alone (only the first call of an outage waits) until
the leases' thread finds it answering again, within `CHECK_S`.

Keys: ``{p}:busy:{person}`` (string: the holder's node and token; expiring).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections.abc import Callable, Collection
from typing import TypeVar, cast

import redis

from trunks.bounded import WAIT_S, within

logger = logging.getLogger(__name__)

T = TypeVar("T")

LEASE_S = 15.0
"""A person's lease lapses this long after its holder's last renewal."""
RENEW_S = 5.0
"""How often the leases a process holds are renewed."""
CHECK_S = 1.0
"""How often, after a failure, the leases' thread asks whether Redis answers again."""

_RENEW = """
local renewed = 0
for i, key in ipairs(KEYS) do
    if redis.call('GET', key) == ARGV[1] then
        redis.call('PEXPIRE', key, ARGV[2])
        renewed = renewed + 1
    end
end
return renewed
"""
"""Renew the leases in KEYS that token ARGV[1] holds, for ARGV[2] ms."""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class StaffLeases:
    """This process's leases on the people it rings or bridges; thread-safe."""

    def __init__(self, client: redis.Redis, prefix: str, node: str, *,
                 lease_s: float = LEASE_S, renew_s: float = RENEW_S,
                 wait_s: float = WAIT_S) -> None:
        self.client, self.prefix = client, prefix
        self.lease_s, self.renew_s, self.wait_s = lease_s, renew_s, wait_s
        self.token = f"{node} {secrets.token_hex(6)}"
        """What this process's leases hold: its node's name, then a token of its own."""
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._unreachable = False
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="staff-leases", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (the leases held lapse, or are given up as their calls end)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.renew_s)

    def others(self, people: Collection[str]) -> set[str]:
        """Those of `people` whose lease another process holds (none if Redis cannot
        say within `wait_s`)."""
        people = list(people)
        if not people:
            return set()
        try:
            holders = cast(list[str | None], self._bounded(
                lambda: self.client.mget([self._key(p) for p in people])))
        except redis.RedisError:
            return set()
        return {p for p, holder in zip(people, holders, strict=True)
                if holder is not None and holder != self.token}

    def take(self, person: str, take_over: bool = False) -> bool:
        """Take `person`'s lease before ringing them (`take_over`: whoever holds it, for a
        call taken up from a dead node); False if another process holds it. True when
        Redis cannot say: this process still knows its own calls."""
        ttl = int(self.lease_s * 1000)
        try:
            taken = self._bounded(lambda: self.client.set(
                self._key(person), self.token, px=ttl, nx=not take_over))
        except redis.RedisError:
            taken = True
        if taken:
            with self._lock:
                self._held.add(person)
        return bool(taken)

    def release(self, person: str) -> None:
        """Give `person`'s lease up (if this process still holds it)."""
        with self._lock:
            self._held.discard(person)
        with contextlib.suppress(redis.RedisError):  # else it lapses
            self._bounded(lambda: self._release(keys=[self._key(person)], args=[self.token]))

    def _run(self) -> None:
        while not self._stop.wait(min(self.renew_s, CHECK_S) if self._unreachable
                                  else self.renew_s):
            if self._unreachable:
                try:
                    self.client.ping()
                except redis.RedisError:
                    continue
                self._unreachable = False
                logger.info("Who is busy on other nodes is known again")
            with self._lock:
                held = sorted(self._held)
            if not held:
                continue
            try:
                self._renew(keys=[self._key(p) for p in held],
                            args=[self.token, int(self.lease_s * 1000)])
            except redis.RedisError as exc:
                logger.debug("Staff leases not renewed (Redis unreachable): %s", exc)

    def _bounded(self, operation: Callable[[], T]) -> T:
        """Run a Redis `operation` for at most `wait_s`, unless Redis failed and has not
        answered since (then fail at once); log the first failure of an outage."""
        if self._unreachable:
            raise redis.ConnectionError("Redis has not answered since its last failure")
        try:
            return within(operation, self.wait_s, "staff-leases")
        except redis.RedisError as exc:
            self._unreachable = True
            logger.warning("Who is busy on other nodes is unknown (Redis: %s); going on "
                           "with this node's own calls", exc)
            raise

    def _key(self, person: str) -> str:
        return f"{self.prefix}:busy:{person}"


__all__ = ["LEASE_S", "RENEW_S", "StaffLeases"]
