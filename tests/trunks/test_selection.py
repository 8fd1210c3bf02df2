"""Trunk selection: overrides, health, priority and weight."""

from __future__ import annotations

import random
from collections import Counter

from trunks.config import TrunkConfig
from trunks.health import TrunkState
from trunks.overrides import Override, OverrideAction
from trunks.selection import CallNeeds, select_trunks

A = TrunkConfig(name="a", mode="ip", proxy="10.0.0.1", priority=1, weight=300)
B = TrunkConfig(name="b", mode="ip", proxy="10.0.0.2", priority=1, weight=100)
C = TrunkConfig(name="c", mode="ip", proxy="10.0.0.3", priority=2)
ALL = [A, B, C]
UP = dict.fromkeys("abc", TrunkState.UP)


def names(trunks: list[TrunkConfig]) -> list[str]:
    return [t.name for t in trunks]


def override(trunk: str, action: OverrideAction) -> Override:
    return Override(trunk, action, "test", "tester", 0.0)


def test_priority_first_and_weight_shares_ties() -> None:
    firsts = Counter(select_trunks(ALL, UP, {}, rng=random.Random(seed))[0].name
                     for seed in range(4000))
    assert set(firsts) == {"a", "b"}
    assert 0.70 < firsts["a"] / 4000 < 0.80  # weights 300:100
    assert all(names(select_trunks(ALL, UP, {}, rng=random.Random(s)))[2] == "c"
               for s in range(50))


def test_down_recovering_and_drained_trunks_are_left_out() -> None:
    states = {"a": TrunkState.DOWN, "b": TrunkState.RECOVERING, "c": TrunkState.UP}
    assert names(select_trunks(ALL, states, {})) == ["c"]
    drained = {"c": override("c", OverrideAction.DRAIN)}
    assert select_trunks(ALL, states, drained) == []


def test_healthier_state_beats_priority() -> None:
    states = {"a": TrunkState.SUSPECT, "b": TrunkState.UNKNOWN, "c": TrunkState.UP}
    assert names(select_trunks(ALL, states, {})) == ["c", "a", "b"]


def test_force_puts_a_usable_trunk_first_but_not_a_down_one() -> None:
    forced = {"c": override("c", OverrideAction.FORCE)}
    assert names(select_trunks(ALL, UP, forced))[0] == "c"
    states = {**UP, "c": TrunkState.DOWN}
    assert "c" not in names(select_trunks(ALL, states, forced))


def test_needs_exclude_tried_trunks_and_pin_to_some() -> None:
    assert names(select_trunks(ALL, UP, {}, CallNeeds(exclude=frozenset({"a", "b"})))) == ["c"]
    assert names(select_trunks(ALL, UP, {}, CallNeeds(only=frozenset({"b"})))) == ["b"]


def test_unknown_state_for_a_trunk_without_health_yet() -> None:
    assert names(select_trunks([C], {}, {})) == ["c"]
