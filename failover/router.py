"""Routing decisions: which trunk carries a call, and who on call can take one.

Every decision starts from one read of the trunks' state (`TrunkMonitor.view`:
this node's health and the operators' overrides) and ranks the trunks here, in one
place (`rank`):

- left out, each with a reason an operator can act on: drained ("drained by alice:
  carrier maintenance"), not healthy ("DOWN since 10:02"), already tried for this
  call, not the drill's trunk, or taking no calls on this node;
- forced trunks first, then UP before SUSPECT before UNKNOWN, then by priority;
  equals are shuffled by weight, so traffic is shared in proportion to the weights;
  forcing is a preference, never a way around health;
- a hold-down: a trunk back UP after an outage less than `hold_down_s` ago goes to
  the end ("hold-down 40 s"), used only when nothing else is, so a carrier that
  flaps does not pull calls back and forth.

On-call availability is kept here too: a person already talking to a forwarded
caller, or whose phone rings for one, is not rung again for another, on this node
or, through their lease in Redis (`failover.busy`), on any.

Each `Need` (a forward to staff, a drill call, a call-back) gets a `RoutePlan`;
`place` makes a call by a plan, and `dial` plans and places at once, so every retry
sees fresh health.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from failover.busy import StaffLeases
from trunks.config import TrunkConfig
from trunks.health import USABLE_STATES, HealthSnapshot, TrunkState
from trunks.monitor import TrunkView
from trunks.overrides import Override, OverrideAction
from trunks.voip.outbound import OutboundCall

logger = logging.getLogger(__name__)

_STATE_RANK = {TrunkState.UP: 0, TrunkState.SUSPECT: 1, TrunkState.UNKNOWN: 2}


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
    """Trunk name -> why it is not in `trunks`, in words for an operator."""
    notes: Mapping[str, str] = field(default_factory=dict)
    """Trunk name -> why it was passed over (left out, or held down), for the call record
    and the operator; trunks left out only because this call tried them are not noted."""

    def summary(self) -> str:
        """The trunks not tried first and why, for a log line: "b: DOWN since 10:02"."""
        return "; ".join(f"{name}: {why}" for name, why in sorted(self.notes.items()))


class Dialer(Protocol):
    def plan(self, need: Need, exclude: frozenset[str] = frozenset(),
             only: str | None = None) -> RoutePlan:
        """The trunks to try for `need` now, best first."""

    def place(self, plan: RoutePlan, number: str, ring_s: float,
              caller_id: str | None = None) -> tuple[str, OutboundCall] | None:
        """Call `number` through the first trunk of `plan`; (trunk, call), or None when
        the plan has no trunk."""

    def available(self, people: Sequence[str]) -> list[str]:
        """`people` (keys) without those busy on a forwarded call, in the same order."""

    def busy(self, person: str, take_over: bool = False) -> AbstractContextManager[bool]:
        """Mark `person` busy for the duration of the block; it yields False (and marks
        nothing) when another node has them busy. `take_over`: take them from whichever
        node had them (a call taken up from a dead node)."""


class Monitor(Protocol):
    def view(self) -> TrunkView: ...


class Endpoint(Protocol):
    def place_call(self, number: str, ring_s: float,
                   caller_id: str | None = None) -> OutboundCall: ...


def rank(view: TrunkView, need: Need, *, exclude: Collection[str] = frozenset(),
         only: str | None = None, takes_calls: Collection[str] | None = None,
         hold_down_s: float = 0.0, now: float | None = None,
         rng: random.Random | None = None) -> RoutePlan:
    """Rank `view`'s trunks for `need`: the usable ones best first, the rest with a reason.

    `takes_calls` names the trunks with an endpoint on this node (None: all do);
    `now` is the wall clock, for the hold-down."""
    rng = rng or random.Random()
    now = time.time() if now is None else now
    usable: list[TrunkConfig] = []
    left_out: dict[str, str] = {}
    for trunk in view.trunks:
        why = _left_out(trunk.name, view, need, exclude, only, takes_calls)
        if why is None:
            usable.append(trunk)
        else:
            left_out[trunk.name] = why
    # A weighted shuffle (Efraimidis-Spirakis keys) breaks ties between equals.
    keys = {t.name: rng.random() ** (1.0 / t.weight) for t in usable}
    ranked = sorted(usable, key=lambda t: (
        _action(view.overrides, t.name) is not OverrideAction.FORCE,
        _STATE_RANK[_state(view, t.name)], t.priority, -keys[t.name]))
    held = {t.name: f"hold-down {left:.0f} s" for t in ranked
            if (left := _hold_down_left(view.health.get(t.name), hold_down_s, now)) > 0}
    order = [t.name for t in ranked if t.name not in held] + [n for n in held]
    notes = {name: why for name, why in left_out.items() if name not in exclude}
    return RoutePlan(need, tuple(order), tuple(held), left_out, {**notes, **held})


class Router:
    """Route plans and call placement for every need; thread-safe."""

    def __init__(self, monitor: Monitor, endpoints: Mapping[str, Endpoint],
                 hold_down_s: float = 60.0, wallclock: Callable[[], float] = time.time,
                 rng: random.Random | None = None, staff: StaffLeases | None = None) -> None:
        """`staff`: the people's leases in Redis, so other nodes see who is busy here
        (None: this node's own calls only)."""
        self.monitor = monitor
        self.staff = staff
        self.endpoints = endpoints
        self.hold_down_s = hold_down_s
        self._wallclock = wallclock
        self._rng = rng or random.Random()
        self._busy: Counter[str] = Counter()
        self._lock = threading.Lock()

    def plan(self, need: Need, exclude: frozenset[str] = frozenset(),
             only: str | None = None) -> RoutePlan:
        """The trunks to try for `need` now, best first; `only` restricts it to one trunk."""
        return rank(self.monitor.view(), need, exclude=exclude, only=only,
                    takes_calls=self.endpoints.keys(), hold_down_s=self.hold_down_s,
                    now=self._wallclock(), rng=self._rng)

    def place(self, plan: RoutePlan, number: str, ring_s: float,
              caller_id: str | None = None) -> tuple[str, OutboundCall] | None:
        """Place a call to `number` through the first trunk of `plan` (from `caller_id`,
        default the trunk's)."""
        if not plan.trunks:
            logger.warning("No usable trunk left to call %s for a %s (%s)", number,
                           plan.need.value, plan.summary() or "no trunks")
            return None
        name = plan.trunks[0]
        if name in plan.held_down:
            logger.info("Using %s although it recovered less than %.0f s ago: no other trunk",
                        name, self.hold_down_s)
        return name, self.endpoints[name].place_call(number, ring_s, caller_id)

    def dial(self, number: str, ring_s: float, exclude: frozenset[str],
             need: Need = Need.FORWARD, only: str | None = None,
             caller_id: str | None = None) -> tuple[str, OutboundCall] | None:
        """Plan, then place a call to `number` by that plan."""
        return self.place(self.plan(need, exclude, only), number, ring_s, caller_id)

    def available(self, people: Sequence[str]) -> list[str]:
        elsewhere = self.staff.others(people) if self.staff is not None else set()
        with self._lock:
            return [p for p in people if not self._busy[p] and p not in elsewhere]

    @contextmanager
    def busy(self, person: str, take_over: bool = False) -> Iterator[bool]:
        with self._lock:
            first = not self._busy[person]
            self._busy[person] += 1
        taken = not first or self.staff is None or self.staff.take(person, take_over)
        try:
            yield taken
        finally:
            with self._lock:
                self._busy[person] -= 1
                last = not self._busy[person]
                if last:
                    del self._busy[person]
            if last and taken and self.staff is not None:
                self.staff.release(person)


def _left_out(name: str, view: TrunkView, need: Need, exclude: Collection[str],
              only: str | None, takes_calls: Collection[str] | None) -> str | None:
    """Why trunk `name` cannot carry this call, or None if it can."""
    if name in exclude:
        return "tried already for this call"
    if only is not None and name != only:
        return f"not the {need.value}'s trunk"
    override = view.overrides.get(name)
    if override is not None and override.action is OverrideAction.DRAIN:
        return f"drained by {override.by}: {override.reason}{_until(override)}"
    health = view.health.get(name)
    state = _state(view, name)
    if state not in USABLE_STATES:
        since = f" since {_clock_time(health.since)}" if health is not None else ""
        forced = f"forced by {override.by}, but " if override is not None else ""
        return f"{forced}{state.value.upper()}{since}"
    if takes_calls is not None and name not in takes_calls:
        return "takes no calls on this node (no listen address)"
    return None


def _state(view: TrunkView, name: str) -> TrunkState:
    health = view.health.get(name)
    return TrunkState.UNKNOWN if health is None else health.state


def _action(overrides: Mapping[str, Override], name: str) -> OverrideAction | None:
    override = overrides.get(name)
    return None if override is None else override.action


def _hold_down_left(health: HealthSnapshot | None, hold_down_s: float, now: float) -> float:
    """Seconds of hold-down left for a trunk that came back UP recently (0: none)."""
    if health is None or health.recovered_at is None:
        return 0.0
    return max(0.0, health.recovered_at + hold_down_s - now)


def _until(override: Override) -> str:
    return "" if override.expires_at is None else f" (until {_clock_time(override.expires_at)})"


def _clock_time(epoch: float) -> str:
    """`epoch` as local wall-clock time, HH:MM (the node's time zone)."""
    return time.strftime("%H:%M", time.localtime(epoch))


__all__ = ["Dialer", "Endpoint", "Need", "RoutePlan", "Router", "rank"]
