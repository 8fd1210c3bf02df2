"""The router: hold-down after recovery, drill-only plans, and on-call availability."""

from __future__ import annotations

import time
from typing import Any, cast

from failover.router import Endpoint, Need, Router
from trunks.config import TrunkConfig
from trunks.health import HealthSnapshot, TrunkState
from trunks.monitor import TrunkView

NOW = 1_000_000.0


def trunk(name: str, priority: int) -> TrunkConfig:
    return TrunkConfig(name=name, priority=priority, mode="ip", proxy="127.0.0.1:5060")


class StaticMonitor:
    """Health as given, no overrides."""

    def __init__(self, states: dict[str, tuple[TrunkState, float | None]]) -> None:
        self.trunks = tuple(trunk(name, i + 1) for i, name in enumerate(states))
        self.states = states

    def view(self) -> TrunkView:
        return TrunkView(self.trunks, {
            name: HealthSnapshot(name, state, NOW - 1000, None, None, None, None, None,
                                 recovered)
            for name, (state, recovered) in self.states.items()}, {})


class RecordingEndpoint:
    def __init__(self) -> None:
        self.placed: list[tuple[str, float]] = []

    def place_call(self, number: str, ring_s: float, caller_id: str | None = None) -> Any:
        self.placed.append((number, ring_s))
        return f"call to {number}"


def router(states: dict[str, tuple[TrunkState, float | None]],
           endpoints: dict[str, RecordingEndpoint] | None = None) -> Router:
    endpoints = endpoints if endpoints is not None else {n: RecordingEndpoint() for n in states}
    return Router(StaticMonitor(states), cast(dict[str, Endpoint], endpoints),
                  hold_down_s=60, wallclock=lambda: NOW)


def test_a_recently_recovered_trunk_waits_behind_the_others() -> None:
    plan = router({"a": (TrunkState.UP, NOW - 10), "b": (TrunkState.UP, None)}).plan(
        Need.FORWARD)
    assert plan.trunks == ("b", "a") and plan.held_down == ("a",)


def test_after_the_hold_down_priority_rules_again() -> None:
    plan = router({"a": (TrunkState.UP, NOW - 61), "b": (TrunkState.UP, None)}).plan(
        Need.FORWARD)
    assert plan.trunks == ("a", "b") and plan.held_down == ()


def test_a_held_down_trunk_is_used_when_nothing_else_is() -> None:
    endpoints = {"a": RecordingEndpoint(), "b": RecordingEndpoint()}
    r = router({"a": (TrunkState.UP, NOW - 5), "b": (TrunkState.DOWN, None)}, endpoints)
    assert r.dial("13800000002", 20, frozenset()) == ("a", "call to 13800000002")
    assert endpoints["a"].placed == [("13800000002", 20)] and not endpoints["b"].placed
    assert r.plan(Need.FORWARD).left_out == {
        "b": f"DOWN since {time.strftime('%H:%M', time.localtime(NOW - 1000))}"}


def test_a_drill_plan_holds_only_its_trunk() -> None:
    r = router({"a": (TrunkState.UP, None), "b": (TrunkState.UP, None)})
    plan = r.plan(Need.DRILL, only="b")
    assert plan.trunks == ("b",) and plan.left_out == {"a": "not the drill's trunk"}
    assert r.dial("400", 15, frozenset({"b"}), Need.DRILL, only="b") is None


def test_trunks_without_an_endpoint_are_left_out() -> None:
    r = router({"a": (TrunkState.UP, None), "b": (TrunkState.UP, None)},
               {"b": RecordingEndpoint()})
    plan = r.plan(Need.CALLBACK, exclude=frozenset())
    assert plan.trunks == ("b",) and plan.left_out == {
        "a": "takes no calls on this node (no listen address)"}


def test_people_talking_to_a_caller_are_not_available() -> None:
    r = router({"a": (TrunkState.UP, None)})
    with r.busy("bob"):
        assert r.available(["bob", "carol"]) == ["carol"]
        with r.busy("bob"):
            pass
        assert r.available(["bob", "carol"]) == ["carol"], "still on the first call"
    assert r.available(["bob", "carol"]) == ["bob", "carol"]
