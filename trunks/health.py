"""Trunk health: the state machine fed by probe results and passive signals.

    UNKNOWN --ok--> UP --fail or signal--> SUSPECT --down_after fails--> DOWN
                    ^                        |                           |
                    +---------ok-------------+                           ok
                    ^                                                    v
                    +------------ up_after oks ------------------- RECOVERING
                                                    (a fail goes back to DOWN)

The machine is pure: it never reads a clock or does I/O. Callers pass the wall
time of each result, and it tells them how soon to probe next.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from trunks.config import ProbeSettings

logger = logging.getLogger(__name__)

RTT_WINDOW = 100
"""Number of recent RTT samples kept for the p95."""
SRTT_GAIN = 0.125
"""Weight of a new sample in the smoothed RTT (RFC 6298's alpha)."""


class TrunkState(enum.StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"
    RECOVERING = "recovering"


USABLE_STATES = frozenset({TrunkState.UP, TrunkState.SUSPECT, TrunkState.UNKNOWN})
"""States in which a trunk may take new calls (SUSPECT and UNKNOWN after UP ones)."""


@dataclass(frozen=True)
class Transition:
    trunk: str
    old: TrunkState
    new: TrunkState
    at: float
    reason: str


@dataclass(frozen=True)
class HealthSnapshot:
    """What the rest of the system (and Redis) sees of one trunk's health."""

    trunk: str
    state: TrunkState
    since: float
    rtt_last_ms: float | None
    rtt_smoothed_ms: float | None
    rtt_p95_ms: float | None
    last_error: str | None
    last_probe: float | None
    recovered_at: float | None = None
    """When the trunk last came back UP after being DOWN (None: it never was DOWN)."""


class RttStats:
    """Last, smoothed and 95th percentile round-trip time, in seconds."""

    def __init__(self, window: int = RTT_WINDOW) -> None:
        self.last: float | None = None
        self.smoothed: float | None = None
        self._samples: deque[float] = deque(maxlen=window)

    def add(self, rtt_s: float) -> None:
        self.last = rtt_s
        self.smoothed = rtt_s if self.smoothed is None else (
            self.smoothed + SRTT_GAIN * (rtt_s - self.smoothed))
        self._samples.append(rtt_s)

    @property
    def p95(self) -> float | None:
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


class TrunkHealth:
    """The health of one trunk, with hysteresis in both directions."""

    def __init__(self, trunk: str, settings: ProbeSettings, now: float,
                 on_transition: Callable[[Transition], None] | None = None) -> None:
        self.trunk = trunk
        self.settings = settings
        self.state = TrunkState.UNKNOWN
        self.since = now
        self.rtt = RttStats()
        self.last_error: str | None = None
        self.last_probe: float | None = None
        self.recovered_at: float | None = None
        self._failures = 0
        self._successes = 0
        self._on_transition = on_transition

    def probe_succeeded(self, rtt_s: float, now: float) -> None:
        """Record a probe answered in `rtt_s` seconds."""
        self.rtt.add(rtt_s)
        self.last_probe = now
        self._failures = 0
        if self.state in (TrunkState.DOWN, TrunkState.RECOVERING):
            self._successes += 1
            if self._successes >= self.settings.up_after:
                self._set_state(TrunkState.UP, now, f"{self._successes} good probes")
            elif self.state is TrunkState.DOWN:
                self._set_state(TrunkState.RECOVERING, now, "probe answered")
        elif self.state is not TrunkState.UP:
            self._set_state(TrunkState.UP, now, "probe answered")

    def probe_failed(self, error: str, now: float) -> None:
        """Record a failed probe; `error` becomes the trunk's last error."""
        self.last_error = error
        self.last_probe = now
        self._successes = 0
        self._failures += 1
        if self.state is TrunkState.RECOVERING:
            self._set_state(TrunkState.DOWN, now, error)
        elif self.state is not TrunkState.DOWN:
            if self._failures >= self.settings.down_after:
                self._set_state(TrunkState.DOWN, now, f"{self._failures} failed probes: {error}")
            elif self.state is not TrunkState.SUSPECT:
                self._set_state(TrunkState.SUSPECT, now, error)

    def signal(self, reason: str, now: float) -> None:
        """Record a passive sign of trouble (a failed call set-up, say).

        It only makes an UP trunk suspect, which starts fast confirmation probes;
        the probes, not the signal, decide whether it goes down.
        """
        self.last_error = reason
        if self.state in (TrunkState.UP, TrunkState.UNKNOWN):
            self._set_state(TrunkState.SUSPECT, now, reason)

    def probe_interval(self) -> float:
        """Seconds from one probe to the next in the current state."""
        if self.state is TrunkState.UP:
            return self.settings.interval_s
        if self.state is TrunkState.DOWN:
            return self.settings.down_interval_s
        return self.settings.fast_interval_s

    def snapshot(self) -> HealthSnapshot:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000.0, 2)

        return HealthSnapshot(self.trunk, self.state, self.since, ms(self.rtt.last),
                              ms(self.rtt.smoothed), ms(self.rtt.p95), self.last_error,
                              self.last_probe, self.recovered_at)

    def _set_state(self, new: TrunkState, now: float, reason: str) -> None:
        old, self.state, self.since = self.state, new, now
        if new is TrunkState.UP:
            self._successes = 0
            if old is TrunkState.RECOVERING or old is TrunkState.DOWN:
                self.recovered_at = now
        logger.info("Trunk(%s) %s -> %s: %s", self.trunk, old, new, reason)
        if self._on_transition is not None:
            self._on_transition(Transition(self.trunk, old, new, now, reason))
