"""The health state machine, driven by a fake clock."""

from __future__ import annotations

import pytest

from trunks.config import ProbeSettings
from trunks.health import RttStats, Transition, TrunkHealth, TrunkState

SETTINGS = ProbeSettings(interval_s=15, fast_interval_s=0.5, down_interval_s=5,
                         down_after=3, up_after=3)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def tick(self, seconds: float = 0.5) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def events() -> list[Transition]:
    return []


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def health(events: list[Transition], clock: Clock) -> TrunkHealth:
    machine = TrunkHealth("carrier-a", SETTINGS, clock.now, events.append)
    machine.probe_succeeded(0.02, clock.tick())
    return machine


def test_first_answer_makes_an_unknown_trunk_up(health: TrunkHealth,
                                                events: list[Transition]) -> None:
    assert health.state is TrunkState.UP
    assert [(e.old, e.new) for e in events] == [(TrunkState.UNKNOWN, TrunkState.UP)]
    assert health.probe_interval() == 15


def test_down_after_three_failures_with_suspect_between(
        health: TrunkHealth, events: list[Transition], clock: Clock) -> None:
    health.probe_failed("no response to OPTIONS within 1 s", clock.tick())
    assert health.state is TrunkState.SUSPECT
    assert health.probe_interval() == 0.5
    health.probe_failed("no response", clock.tick())
    assert health.state is TrunkState.SUSPECT
    health.probe_failed("no response", clock.tick())
    assert health.state is TrunkState.DOWN
    assert health.since == clock.now
    assert health.probe_interval() == 5
    assert events[-1].reason == "3 failed probes: no response"
    assert [e.new for e in events] == [TrunkState.UP, TrunkState.SUSPECT, TrunkState.DOWN]


def test_one_good_probe_clears_suspicion(health: TrunkHealth, clock: Clock) -> None:
    health.probe_failed("timeout", clock.tick())
    health.probe_failed("timeout", clock.tick())
    health.probe_succeeded(0.01, clock.tick())
    assert health.state is TrunkState.UP
    health.probe_failed("timeout", clock.tick())
    health.probe_failed("timeout", clock.tick())
    assert health.state is TrunkState.SUSPECT, "the failure count restarted after the success"


def test_recovery_needs_up_after_consecutive_successes(
        health: TrunkHealth, events: list[Transition], clock: Clock) -> None:
    for _ in range(3):
        health.probe_failed("timeout", clock.tick())
    health.probe_succeeded(0.01, clock.tick())
    assert health.state is TrunkState.RECOVERING
    assert health.probe_interval() == 0.5
    health.probe_succeeded(0.01, clock.tick())
    health.probe_failed("timeout", clock.tick())
    assert health.state is TrunkState.DOWN, "a flap while recovering goes back down"
    for _ in range(2):
        health.probe_succeeded(0.01, clock.tick())
        assert health.state is TrunkState.RECOVERING
    health.probe_succeeded(0.01, clock.tick())
    assert health.state is TrunkState.UP
    assert [e.new.value for e in events] == [
        "up", "suspect", "down", "recovering", "down", "recovering", "up"]


def test_a_passive_signal_only_makes_the_trunk_suspect(
        health: TrunkHealth, clock: Clock) -> None:
    health.signal("INVITE: no provisional reply within 1 s", clock.tick())
    assert health.state is TrunkState.SUSPECT
    assert health.last_error == "INVITE: no provisional reply within 1 s"
    health.signal("again", clock.tick())
    health.signal("and again", clock.tick())
    assert health.state is TrunkState.SUSPECT, "signals alone never declare DOWN"
    for _ in range(3):
        health.probe_failed("timeout", clock.tick())
    assert health.state is TrunkState.DOWN
    health.signal("ignored while down", clock.tick())
    assert health.state is TrunkState.DOWN


def test_snapshot_reports_rtt_in_ms_and_last_error(health: TrunkHealth, clock: Clock) -> None:
    health.probe_succeeded(0.04, clock.tick())
    health.probe_failed("OPTIONS answered 503 Service Unavailable", clock.tick())
    snap = health.snapshot()
    assert snap.rtt_last_ms == 40.0
    assert snap.rtt_smoothed_ms == pytest.approx(22.5)
    assert snap.last_error == "OPTIONS answered 503 Service Unavailable"
    assert snap.last_probe == clock.now


def test_rtt_p95_over_the_window() -> None:
    stats = RttStats(window=100)
    assert stats.p95 is None
    for ms in range(1, 201):
        stats.add(ms / 1000)
    assert stats.last == 0.2
    assert stats.p95 == pytest.approx(0.195)  # only the last 100 samples count
