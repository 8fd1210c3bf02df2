"""Routing decisions: which trunk carries a call, and who on call can take one.

The router puts together three things the trunks package keeps apart:

- trunk health and operator overrides (`TrunkMonitor.select`: drained, DOWN and
  RECOVERING trunks are out; forced ones first);
- a hold-down: a trunk that came back UP after an outage less than `hold_down_s`
  ago goes to the end of the list, used only when nothing else is, so a carrier
  that flaps does not pull calls back and forth;
- on-call availability: a person already talking to a forwarded caller is not
  rung again for another.

Each `Need` (a forward to staff, a drill call, a call-back) gets a `RoutePlan`;
`dial` places a call by the current plan, so every retry sees fresh health.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from trunks.config import TrunkConfig
from trunks.health import HealthSnapshot
from trunks.selection import CallNeeds
from trunks.voip.endpoint import SipEndpoint
from trunks.voip.outbound import OutboundCall

logger = logging.getLogger(__name__)


class Need(enum.StrEnum):
    FORWARD = "forward"
    """Ring a person on call for a caller."""
    DRILL = "drill"
    """A drill's test call, through one chosen trunk only."""
    CALLBACK = "callback"
    """Call back a caller whose call a trunk failure cut off."""


@dataclass(frozen=True)
class RoutePlan:
    """The trunks to try for a need, best first, and why others are left out."""

    need: Need
    trunks: tuple[str, ...]
    held_down: tuple[str, ...] = ()
    """Trunks at the end of `trunks` because they recovered only recently."""
    left_out: Mapping[str, str] = field(default_factory=dict)
    """Trunk name -> reason (tried already, not the drill's trunk, not usable, no endpoint)."""


class Dialer(Protocol):
    def dial(self, number: str, ring_s: float, exclude: frozenset[str],
             need: Need = Need.FORWARD) -> tuple[str, OutboundCall] | None:
        """Call `number` through the best trunk not in `exclude`; (trunk, call), or
        None when no trunk is left."""

    def available(self, people: Sequence[str]) -> list[str]:
        """`people` (keys) without those busy on a forwarded call, in the same order."""

    def busy(self, person: str) -> AbstractContextManager[None]:
        """Mark `person` busy for the duration of the block."""


class Monitor(Protocol):
    def select(self, needs: CallNeeds | None = None) -> list[TrunkConfig]: ...

    def snapshots(self) -> dict[str, HealthSnapshot]: ...


class Router:
    """Route plans and call placement for every need; thread-safe."""

    def __init__(self, monitor: Monitor, endpoints: Mapping[str, SipEndpoint],
                 hold_down_s: float = 60.0, wallclock: Callable[[], float] = time.time) -> None:
        self.monitor = monitor
        self.endpoints = endpoints
        self.hold_down_s = hold_down_s
        self._wallclock = wallclock
        self._busy: Counter[str] = Counter()
        self._lock = threading.Lock()

    def plan(self, need: Need, exclude: frozenset[str] = frozenset(),
             only: str | None = None) -> RoutePlan:
        """The trunks to try for `need` now, best first; `only` restricts it to one trunk."""
        selected = self.monitor.select(CallNeeds(
            exclude=exclude, only=None if only is None else frozenset({only})))
        snapshots = self.monitor.snapshots()
        now = self._wallclock()
        fresh, held = [], []
        for trunk in selected:
            recovered = snapshots[trunk.name].recovered_at if trunk.name in snapshots else None
            if recovered is not None and now - recovered < self.hold_down_s:
                held.append(trunk.name)
            else:
                fresh.append(trunk.name)
        chosen = [n for n in fresh + held if n in self.endpoints]
        left_out = {name: "tried already" for name in exclude}
        for name in snapshots:
            if name in left_out or name in chosen:
                continue
            if only is not None and name != only:
                left_out[name] = f"not the {need.value}'s trunk"
            elif name not in self.endpoints and name in fresh + held:
                left_out[name] = "takes no calls (no listen address)"
            else:
                left_out[name] = f"not usable ({snapshots[name].state.value} or drained)"
        return RoutePlan(need, tuple(chosen), tuple(h for h in held if h in chosen), left_out)

    def dial(self, number: str, ring_s: float, exclude: frozenset[str],
             need: Need = Need.FORWARD, only: str | None = None,
             caller_id: str | None = None) -> tuple[str, OutboundCall] | None:
        """Place a call to `number` through the first trunk of the current plan (from
        `caller_id`, default the trunk's)."""
        plan = self.plan(need, exclude, only)
        if plan.held_down and plan.trunks and plan.trunks[0] in plan.held_down:
            logger.info("Using %s although it recovered less than %.0f s ago: no other trunk",
                        plan.trunks[0], self.hold_down_s)
        for name in plan.trunks:
            return name, self.endpoints[name].place_call(number, ring_s, caller_id)
        logger.warning("No usable trunk left to call %s for a %s (%s)", number, need.value,
                       "; ".join(f"{k}: {v}" for k, v in sorted(plan.left_out.items()))
                       or "no trunks")
        return None

    def available(self, people: Sequence[str]) -> list[str]:
        with self._lock:
            return [p for p in people if not self._busy[p]]

    @contextmanager
    def busy(self, person: str) -> Iterator[None]:
        with self._lock:
            self._busy[person] += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy[person] -= 1
                if not self._busy[person]:
                    del self._busy[person]


__all__ = ["Dialer", "Need", "RoutePlan", "Router"]
