"""The trunk monitor: probes every trunk from one event loop and keeps their health.

One thread runs a selector over every trunk's probe socket plus a wake-up
socket, and sleeps until the earliest deadline (next probe, retransmission,
timeout). Probe results and passive signals (`report_failure`, called by the
call layer from any thread) feed each trunk's `TrunkHealth`. Redis writes go
through a `Publisher` thread, so a slow or absent Redis never delays a probe
and loses nothing: transitions queue up until Redis is back. The operators'
overrides are read by a thread of their own (`LastKnown`), so a routing decision
waits at most `overrides_wait_s` for them and otherwise routes by the last ones read.
"""

from __future__ import annotations

import logging
import queue
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import redis

from trunks.bounded import WAIT_S, LastKnown, Reading
from trunks.config import TrunkConfig
from trunks.errors import UnknownTrunk
from trunks.health import HealthSnapshot, Transition, TrunkHealth
from trunks.overrides import Override
from trunks.probe import OptionsProbe, Probe, ProbeOutcome
from trunks.store import TrunkStore
from trunks.waker import Waker, stop_loop

logger = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
"""How often the monitor tells Redis it is alive; the mark expires after 3x this."""
REDIS_RETRY_S = (0.5, 5.0)
"""First and longest wait between attempts to write to an unreachable Redis."""
LOOP_ERROR_PAUSE_S = 0.5
"""Pause after an unexpected error in the loop, so a persistent one does not spin."""
MAX_QUEUED_TRANSITIONS = 10_000
"""Transitions kept while Redis is unreachable; the oldest are dropped beyond this."""


@dataclass(frozen=True)
class TrunkView:
    """Every trunk's configuration, health and override, read at one moment."""

    trunks: tuple[TrunkConfig, ...]
    health: Mapping[str, HealthSnapshot]
    overrides: Mapping[str, Override]
    overrides_error: str | None = None
    """Why the overrides are not fresh from Redis (unreachable, or too slow), if they
    are not: then they are the last ones read."""


@dataclass
class _Watch:
    trunk: TrunkConfig
    probe: Probe
    health: TrunkHealth
    last_sent: float = float("-inf")
    """When the latest probe was due (its planned time, not the send time)."""

    def next_probe(self) -> float:
        return self.last_sent + self.health.probe_interval()


class TrunkMonitor:
    """Watches a set of trunks; thread-safe for `report_failure`, `snapshots`, `view`."""

    def __init__(self, trunks: Sequence[TrunkConfig], store: TrunkStore, node: str, *,
                 clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time,
                 probe_factory: Callable[[TrunkConfig], Probe] = OptionsProbe,
                 heartbeat_s: float = HEARTBEAT_S,
                 overrides_wait_s: float = WAIT_S,
                 on_transition: Callable[[Transition], None] | None = None) -> None:
        """`on_transition` hears every state change, on the monitor's thread with its
        lock held: it must return at once and must not call back into the monitor.
        `overrides_wait_s`: how long `view` waits for Redis to give the overrides."""
        self.node = node
        self.store = store
        self._clock, self._wallclock = clock, wallclock
        self._publisher = Publisher(store, node, heartbeat_s)
        self._on_transition = on_transition
        self._watches = {
            t.name: _Watch(t, probe_factory(t), TrunkHealth(
                t.name, t.probe, wallclock(), self._transition))
            for t in trunks}
        names = list(self._watches)
        self._overrides = LastKnown("Trunk overrides", lambda: store.overrides(names),
                                    wait_s=overrides_wait_s, wallclock=wallclock)
        self._signals: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._waker = Waker()
        self._thread = threading.Thread(target=self._run, name="trunk-monitor", daemon=True)

    @property
    def trunks(self) -> list[TrunkConfig]:
        return [w.trunk for w in self._watches.values()]

    def start(self) -> None:
        self._publisher.start()
        self._overrides.start()
        self._thread.start()
        logger.info("Trunk monitor started on node %s for %s", self.node,
                    ", ".join(self._watches) or "no trunks")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop probing, flush what Redis has not yet received, and release sockets."""
        self._overrides.stop(timeout)
        if not stop_loop(self._stopping, self._waker, self._thread, timeout):
            return
        self._publisher.stop(timeout)
        for watch in self._watches.values():
            watch.probe.close()
        self._waker.close()

    def report_failure(self, trunk: str, reason: str) -> None:
        """Report a passive sign of trouble on `trunk` (a call set-up that failed, an
        ICMP error, a registration refused); fast confirmation probes follow."""
        if trunk not in self._watches:
            raise UnknownTrunk(trunk, list(self._watches))
        self._signals.put((trunk, reason))
        self._waker.wake()

    def snapshots(self) -> dict[str, HealthSnapshot]:
        with self._lock:
            return {name: w.health.snapshot() for name, w in self._watches.items()}

    def view(self) -> TrunkView:
        """One read of every trunk's state, for a routing decision: this node's health and
        the operators' overrides. Redis has `overrides_wait_s` to answer; after that, or
        while it is unreachable, the view has the overrides read last (those not yet
        expired), and says why."""
        health = self.snapshots()
        reading = self._overrides.get()
        now = self._wallclock()
        overrides = {name: o for name, o in (reading.value or {}).items()
                     if o.expires_at is None or o.expires_at > now}
        return TrunkView(tuple(self.trunks), health, overrides, _staleness(reading))

    def _transition(self, transition: Transition) -> None:
        self._publisher.transition(transition)
        if self._on_transition is not None:
            try:
                self._on_transition(transition)
            except Exception:  # a listener's bug must not stop health keeping
                logger.exception("Transition listener failed on %s", transition)

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._waker.reader, selectors.EVENT_READ)
            while not self._stopping.is_set():
                try:
                    self._step(selector)
                except Exception:  # a bug must not silently freeze every trunk's health
                    logger.exception("Trunk monitor loop failed; continuing")
                    self._stopping.wait(LOOP_ERROR_PAUSE_S)

    def _step(self, selector: selectors.BaseSelector) -> None:
        self._send_due_probes(selector)
        timeout = max(0.0, self._next_deadline() - self._clock())
        for key, _ in selector.select(timeout):
            if key.fileobj is self._waker.reader:
                self._drain_signals()
            else:
                watch: _Watch = key.data
                self._apply(watch, watch.probe.on_readable(self._clock()))
        for watch in self._watches.values():
            self._apply(watch, watch.probe.on_timer(self._clock()))

    def _send_due_probes(self, selector: selectors.BaseSelector) -> None:
        for watch in self._watches.values():
            now, due = self._clock(), watch.next_probe()
            if now < due:
                continue
            # Keep to the planned grid, so the period does not grow by the loop's wake-up
            # latency; restart the grid after a state change or a stall left it far behind.
            watch.last_sent = due if now - due < watch.health.probe_interval() else now
            outcomes = watch.probe.send(now)
            fd = watch.probe.fileno()
            if fd is not None and fd not in selector.get_map():
                selector.register(fd, selectors.EVENT_READ, watch)
            self._apply(watch, outcomes)

    def _next_deadline(self) -> float:
        deadlines = [w.next_probe() for w in self._watches.values()]
        deadlines += [d for w in self._watches.values()
                      if (d := w.probe.next_deadline()) is not None]
        return min(deadlines, default=self._clock() + HEARTBEAT_S)

    def _drain_signals(self) -> None:
        self._waker.drain()
        while True:
            try:
                trunk, reason = self._signals.get_nowait()
            except queue.Empty:
                return
            watch = self._watches[trunk]
            with self._lock:
                watch.health.signal(reason, self._wallclock())
            self._publisher.snapshot(watch.health.snapshot())

    def _apply(self, watch: _Watch, outcomes: list[ProbeOutcome]) -> None:
        if not outcomes:
            return
        with self._lock:
            for outcome in outcomes:
                if outcome.error is not None:
                    watch.health.probe_failed(str(outcome.error), self._wallclock())
                elif outcome.rtt_s is not None:
                    watch.health.probe_succeeded(outcome.rtt_s, self._wallclock())
            snapshot = watch.health.snapshot()
        self._publisher.snapshot(snapshot)


class Publisher:
    """Writes health to Redis from its own thread, retrying until Redis takes it."""

    def __init__(self, store: TrunkStore, node: str, heartbeat_s: float) -> None:
        self.store = store
        self.node = node
        self.heartbeat_s = heartbeat_s
        self._snapshots: dict[str, HealthSnapshot] = {}
        self._transitions: deque[Transition] = deque(maxlen=MAX_QUEUED_TRANSITIONS)
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="trunk-publisher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def snapshot(self, snapshot: HealthSnapshot) -> None:
        with self._cond:
            self._snapshots[snapshot.trunk] = snapshot
            self._cond.notify()

    def transition(self, transition: Transition) -> None:
        with self._cond:
            self._transitions.append(transition)
            self._cond.notify()

    def _run(self) -> None:
        backoff = REDIS_RETRY_S[0]
        next_beat = 0.0
        while True:
            with self._cond:
                if not self._stopping and not self._snapshots and not self._transitions:
                    self._cond.wait(max(0.0, next_beat - time.monotonic()))
                stopping = self._stopping
            try:
                if time.monotonic() >= next_beat and not stopping:
                    self.store.heartbeat(self.node, 3 * self.heartbeat_s)
                    next_beat = time.monotonic() + self.heartbeat_s
                self._flush()
            except redis.RedisError as exc:
                if stopping:
                    logger.error("Redis unreachable at shutdown; %d transitions not saved: %s",
                                 len(self._transitions), exc)
                    return
                logger.warning("Redis unreachable, retrying in %.1f s: %s", backoff, exc)
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping, backoff)
                backoff = min(backoff * 2, REDIS_RETRY_S[1])
                continue
            backoff = REDIS_RETRY_S[0]
            if stopping:
                return

    def _flush(self) -> None:
        while True:
            with self._cond:
                if self._transitions:
                    transition: Transition | None = self._transitions[0]
                    snapshot = None
                elif self._snapshots:
                    transition, snapshot = None, self._snapshots.popitem()[1]
                else:
                    return
            if transition is not None:
                self.store.add_transition(self.node, transition)
                with self._cond:
                    self._transitions.popleft()
            elif snapshot is not None:
                try:
                    self.store.save_health(self.node, snapshot)
                except redis.RedisError:
                    with self._cond:  # keep it unless a newer one arrived meanwhile
                        self._snapshots.setdefault(snapshot.trunk, snapshot)
                    raise


def _staleness(reading: Reading[dict[str, Override]]) -> str | None:
    """Why the overrides in a view are not fresh, and from when they are; None if fresh."""
    if reading.error is None:
        return None
    if reading.read_at is None:
        return f"{reading.error}; no overrides known"
    return f"{reading.error}; overrides as read at " \
        f"{time.strftime('%H:%M:%S', time.localtime(reading.read_at))}"
