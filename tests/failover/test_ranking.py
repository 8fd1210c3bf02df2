"""Ranking trunks for a call: overrides, health, priority, weight, hold-down, and the
reason given for every trunk left out."""

from __future__ import annotations

import random
import time
from collections import Counter

from failover.router import Need, rank
from trunks.config import TrunkConfig
from trunks.health import HealthSnapshot, TrunkState
from trunks.monitor import TrunkView
from trunks.overrides import Override, OverrideAction

A = TrunkConfig(name="a", mode="ip", proxy="10.0.0.1", priority=1, weight=300)
B = TrunkConfig(name="b", mode="ip", proxy="10.0.0.2", priority=1, weight=100)
C = TrunkConfig(name="c", mode="ip", proxy="10.0.0.3", priority=2)
ALL = (A, B, C)
UP = dict.fromkeys("abc", TrunkState.UP)
NOW = 1_780_000_000.0
"""The wall clock of these tests."""


def view(states: dict[str, TrunkState], overrides: dict[str, Override] | None = None,
         trunks: tuple[TrunkConfig, ...] = ALL,
         recovered: dict[str, float] | None = None) -> TrunkView:
    health = {name: HealthSnapshot(name, state, NOW - 600, None, None, None, None, None,
                                   (recovered or {}).get(name))
              for name, state in states.items()}
    return TrunkView(trunks, health, overrides or {})


def override(trunk: str, action: OverrideAction, by: str = "tester",
             reason: str = "test", expires_at: float | None = None) -> Override:
    return Override(trunk, action, reason, by, NOW - 60, expires_at)


def ranked(v: TrunkView, **kwargs: object) -> list[str]:
    return list(rank(v, Need.FORWARD, now=NOW, **kwargs).trunks)  # type: ignore[arg-type]


def hhmm(epoch: float) -> str:
    return time.strftime("%H:%M", time.localtime(epoch))


def test_priority_first_and_weight_shares_ties() -> None:
    firsts = Counter(ranked(view(UP), rng=random.Random(seed))[0] for seed in range(4000))
    assert set(firsts) == {"a", "b"}
    assert 0.70 < firsts["a"] / 4000 < 0.80  # weights 300:100
    assert all(ranked(view(UP), rng=random.Random(s))[2] == "c" for s in range(50))


def test_down_recovering_and_drained_trunks_are_left_out_with_the_reason() -> None:
    states = {"a": TrunkState.DOWN, "b": TrunkState.RECOVERING, "c": TrunkState.UP}
    plan = rank(view(states), Need.FORWARD, now=NOW)
    assert plan.trunks == ("c",)
    assert plan.left_out == {"a": f"DOWN since {hhmm(NOW - 600)}",
                             "b": f"RECOVERING since {hhmm(NOW - 600)}"}
    drained = {"c": override("c", OverrideAction.DRAIN, "alice", "carrier maintenance",
                             expires_at=NOW + 3600)}
    plan = rank(view(states, drained), Need.FORWARD, now=NOW)
    assert plan.trunks == ()
    assert plan.left_out["c"] == ("drained by alice: carrier maintenance "
                                  f"(until {hhmm(NOW + 3600)})")
    assert plan.summary().startswith(f"a: DOWN since {hhmm(NOW - 600)}; b: RECOVERING")


def test_healthier_state_beats_priority() -> None:
    states = {"a": TrunkState.SUSPECT, "b": TrunkState.UNKNOWN, "c": TrunkState.UP}
    assert ranked(view(states)) == ["c", "a", "b"]


def test_force_puts_a_usable_trunk_first_but_not_a_down_one() -> None:
    forced = {"c": override("c", OverrideAction.FORCE, "bob")}
    assert ranked(view(UP, forced))[0] == "c"
    plan = rank(view({**UP, "c": TrunkState.DOWN}, forced), Need.FORWARD, now=NOW)
    assert "c" not in plan.trunks
    assert plan.left_out["c"] == f"forced by bob, but DOWN since {hhmm(NOW - 600)}"


def test_tried_trunks_and_other_needs_trunks_are_left_out() -> None:
    plan = rank(view(UP), Need.FORWARD, exclude={"a", "b"}, now=NOW)
    assert plan.trunks == ("c",)
    assert plan.left_out == dict.fromkeys("ab", "tried already for this call")
    assert plan.notes == {}, "trying a trunk is no news for the operator"
    plan = rank(view(UP), Need.DRILL, only="b", now=NOW)
    assert plan.trunks == ("b",) and plan.notes == dict.fromkeys("ac", "not the drill's trunk")


def test_a_recently_recovered_trunk_is_held_down_to_the_end() -> None:
    plan = rank(view(UP, recovered={"a": NOW - 20}), Need.FORWARD, hold_down_s=60, now=NOW,
                rng=random.Random(1))
    assert plan.trunks == ("b", "c", "a") and plan.held_down == ("a",)
    assert plan.notes == {"a": "hold-down 40 s"}


def test_unknown_state_for_a_trunk_without_health_yet() -> None:
    assert ranked(view({}, trunks=(C,))) == ["c"]
