"""Redis on the call path, with a bound on the wait: a hung Redis (its port open, nothing
answering) must not hold a caller for a client's socket timeout.

`LastKnown` keeps a value read by a thread of its own (the trunks' overrides, a drill's
lock): `get()` asks for a fresh read and waits at most `wait_s` for it, else answers
with the last value read and why it is not fresh. A read that has already hung for
longer than `wait_s` is not waited for again, so during an outage only the first caller
waits. The thread also reads every `refresh_s`, so the last known value is recent when
Redis goes away between calls.

`within()` runs one operation (a ticket's save, say) in a thread of its own and waits
at most `wait_s` for it; the operation goes on in the background after that, so it must
be safe to do again (the caller's fallback may repeat it later).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import redis

logger = logging.getLogger(__name__)

WAIT_S = 0.2
"""How long a caller waits on Redis before it goes on without it."""
REFRESH_S = 5.0
"""How often a `LastKnown` reads when nobody asks."""
STOP_TIMEOUT_S = 5.0

T = TypeVar("T")


class TooSlow(redis.TimeoutError):
    """Redis did not answer within the caller's bound; `str()` says how long that was.
    A `redis.TimeoutError`, so code that copes with Redis being away copes with this."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"Redis did not answer within {wait_s:g} s")
        self.wait_s = wait_s


@dataclass(frozen=True)
class Reading(Generic[T]):
    """What a `LastKnown` answers: the latest value read, and whether it is fresh."""

    value: T | None
    """None if nothing was ever read."""
    read_at: float | None
    """When `value` was read (wall clock), if it was."""
    error: str | None = None
    """Why `value` is not fresh (Redis unreachable, or too slow); None if it is."""


class LastKnown(Generic[T]):
    """A value `read` from Redis by a thread of its own, for callers that must not wait
    on Redis longer than `wait_s`. Before `start` (and after `stop`) `get` reads on the
    caller's thread."""

    def __init__(self, name: str, read: Callable[[], T], *, wait_s: float = WAIT_S,
                 refresh_s: float = REFRESH_S, clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.wait_s = wait_s
        self.refresh_s = refresh_s
        self._read = read
        self._clock, self._wallclock = clock, wallclock
        self._value: T | None = None
        self._read_at: float | None = None
        self._error: str | None = "not read yet"
        self._asked = 0
        """Requests for a fresh read so far."""
        self._answered = 0
        """Requests that the latest finished read covers (those made before it started)."""
        self._reading_since: float | None = None
        self._next_read = clock()
        self._stopping = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"last-known-{name}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def get(self) -> Reading[T]:
        """A read started after this call, if one ends within `wait_s`; else the last
        value read, with the reason it is not fresh."""
        if not self._thread.is_alive():
            value, error = self._attempt()
            return Reading(value, self._wallclock(), None) if error is None \
                else Reading(self._value, self._read_at, error)
        with self._cond:
            self._asked += 1
            ticket = self._asked
            self._cond.notify_all()
            deadline = self._clock() + self.wait_s
            while self._answered < ticket and not self._hung():
                left = deadline - self._clock()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._answered >= ticket:
                return Reading(self._value, self._read_at, self._error)
            return Reading(self._value, self._read_at, str(TooSlow(self.wait_s)))

    def _hung(self) -> bool:
        """Whether the read under way started more than `wait_s` ago (so before the
        request that waits: that one needs the next read)."""
        return self._reading_since is not None and \
            self._clock() - self._reading_since > self.wait_s

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and self._asked == self._answered \
                        and self._clock() < self._next_read:
                    self._cond.wait(self._next_read - self._clock())
                if self._stopping:
                    return
                covers = self._asked
                self._reading_since = self._clock()
            value, error = self._attempt()
            with self._cond:
                if error is None:
                    self._value, self._read_at = value, self._wallclock()
                self._note(error)
                self._reading_since = None
                self._answered = covers
                self._next_read = self._clock() + self.refresh_s
                self._cond.notify_all()

    def _attempt(self) -> tuple[T | None, str | None]:
        try:
            return self._read(), None
        except redis.RedisError as exc:
            return None, f"Redis unreachable: {exc}"
        except Exception as exc:  # a bad value must not end the thread
            logger.exception("%s: reading it failed", self.name)
            return None, f"{type(exc).__name__}: {exc}"

    def _note(self, error: str | None) -> None:
        """Log when the reads start or stop failing (with the lock held)."""
        if error is not None and self._error is None:
            since = "never read" if self._read_at is None else \
                f"using what was read at {time.strftime('%H:%M:%S', time.localtime(self._read_at))}"
            logger.warning("%s: %s; %s", self.name, error, since)
        elif error is None and self._error is not None and self._error != "not read yet":
            logger.info("%s: read from Redis again", self.name)
        self._error = error


def within(operation: Callable[[], T], wait_s: float = WAIT_S, name: str = "redis") -> T:
    """The result of `operation`, run in a thread of its own; TooSlow if it takes longer
    than `wait_s` (it goes on in the background), or the exception it raised."""
    done = threading.Event()
    outcome: list[T] = []
    failure: list[Exception] = []

    def run() -> None:
        try:
            outcome.append(operation())
        except Exception as exc:  # handed to the caller, if it still waits
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name=f"bounded-{name}", daemon=True).start()
    if not done.wait(wait_s):
        raise TooSlow(wait_s)
    if failure:
        raise failure[0]
    return outcome[0]


__all__ = ["LastKnown", "Reading", "TooSlow", "within"]
