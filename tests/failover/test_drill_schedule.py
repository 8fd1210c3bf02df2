"""The schedule's drill runs once per scheduled time across nodes: two nodes' drill
services on one real Redis, each with a clock of its own, firing for the same time.

The test calls find no trunk on these nodes (no SIP here) and fail at once; each drill
still takes the lock, forces and restores the backup and keeps its report, which is what
is counted. `test_drill.py` runs the drill end to end through real carriers."""

from __future__ import annotations

import datetime
import logging
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import redis

from failover.config import DrillSettings
from failover.drill.report import DrillReport
from failover.drill.service import (
    SCHEDULE_GRACE_S,
    SLOT_KEEP_S,
    DrillService,
    latest_fire_time,
    slot_name,
)
from failover.drill.store import DrillStore
from failover.router import Router
from trunks.monitor import TrunkView
from trunks.overrides import Override, OverrideAction
from trunks.store import TrunkStore

SHANGHAI = ZoneInfo("Asia/Shanghai")
SCHEDULE = DrillSettings(number="4000", calls=1, schedule="0 3 1 * *", timezone="Asia/Shanghai")
SLOT = datetime.datetime(2031, 3, 1, 3, 0, tzinfo=SHANGHAI)
"""A scheduled time: 03:00 on the 1st in Shanghai, 19:00 the day before in UTC."""
NEXT_SLOT = datetime.datetime(2031, 4, 1, 3, 0, tzinfo=SHANGHAI)


class Clock:
    """A node's wall clock, set by the test."""

    def __init__(self, moment: datetime.datetime) -> None:
        self.now = moment.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, moment: datetime.datetime, plus_s: float = 0.0) -> None:
        self.now = moment.timestamp() + plus_s


class NoTrunks:
    """A monitor with no trunk: every test call finds no route and fails at once."""

    def view(self) -> TrunkView:
        return TrunkView((), {}, {})


def node(name: str, client: redis.Redis, tmp_path: Path, clock: Clock) -> DrillService:
    return DrillService(DrillStore(client), TrunkStore(client), Router(NoTrunks(), {}),
                        SCHEDULE, default_trunk="carrier-b",
                        trunk_names=["carrier-a", "carrier-b"], node=name,
                        reports_dir=tmp_path / name, wallclock=clock)


def scheduled_reports(client: redis.Redis) -> list[DrillReport]:
    return [r for r in DrillStore(client).reports(100) if r.trigger == "schedule"]


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="failover.drill")
    return caplog


def test_the_slot_is_the_schedules_time_in_utc_not_the_moment_the_job_runs() -> None:
    trigger = SCHEDULE.trigger()
    assert trigger is not None
    for late_s in (0.0, 0.4, 40.0, SCHEDULE_GRACE_S):
        assert latest_fire_time(trigger, SLOT + datetime.timedelta(seconds=late_s)) == SLOT
    assert latest_fire_time(trigger, SLOT - datetime.timedelta(seconds=1)) is None
    assert latest_fire_time(trigger, SLOT + datetime.timedelta(hours=2)) is None
    assert slot_name(SLOT) == slot_name(SLOT.astimezone(datetime.UTC)) == "20310228T190000Z"


def test_a_scheduled_time_is_drilled_once_however_late_or_skewed_the_other_nodes_fire(
        redis_client: redis.Redis, tmp_path: Path, log: pytest.LogCaptureFixture) -> None:
    clocks = [Clock(SLOT) for _ in range(3)]
    nodes = [node(f"node-{n + 1}", redis_client, tmp_path, clocks[n]) for n in range(3)]
    clocks[0].set(SLOT, 0.2)
    nodes[0].scheduled()
    (report,) = scheduled_reports(redis_client)
    assert report.node == "node-1"
    # node-2's clock is behind: its 03:00 comes after node-1's drill ended
    clocks[1].set(SLOT, 0.1)
    nodes[1].scheduled()
    # node-3's job fires late, within the scheduler's grace time
    clocks[2].set(SLOT, SCHEDULE_GRACE_S - 5)
    nodes[2].scheduled()
    assert [r.id for r in scheduled_reports(redis_client)] == [report.id]
    skipped = [r.getMessage() for r in log.records if "skipped" in r.getMessage()]
    assert skipped == [
        f"Scheduled drill of 20310228T190000Z skipped ({late} s after it): taken by drill "
        f"{report.id} on node node-1" for late in ("0", "3595")]
    key = DrillStore(redis_client).key("slot:20310228T190000Z")
    assert 0 < redis_client.ttl(key) <= SLOT_KEEP_S

    clocks[1].set(NEXT_SLOT, 1.0)  # a month on, whichever node fires first drills
    nodes[1].scheduled()
    clocks[0].set(NEXT_SLOT, 3.0)
    nodes[0].scheduled()
    assert [r.node for r in scheduled_reports(redis_client)] == ["node-2", "node-1"]


def test_nodes_firing_together_drill_once(redis_client: redis.Redis, tmp_path: Path) -> None:
    clocks = [Clock(SLOT) for _ in range(4)]
    for n, clock in enumerate(clocks):
        clock.set(SLOT, 0.05 * n)
    nodes = [node(f"node-{n + 1}", redis_client, tmp_path, clocks[n]) for n in range(4)]
    start = threading.Barrier(len(nodes))

    def fire(service: DrillService) -> None:
        start.wait()
        service.scheduled()

    threads = [threading.Thread(target=fire, args=(s,)) for s in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(scheduled_reports(redis_client)) == 1


def test_a_manual_drill_is_not_held_back_by_the_schedules_slot(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    clock = Clock(SLOT)
    clock.set(SLOT, 1.0)
    service = node("node-1", redis_client, tmp_path, clock)
    service.scheduled()
    service.run("carrier-b", 1, by="olga")  # what `hotline drill run` asks a node to do
    reports = DrillStore(redis_client).reports(10)
    assert sorted((r.trigger, r.by) for r in reports) == [("cli", "olga"),
                                                          ("schedule", "schedule")]


def test_a_node_that_dies_mid_drill_keeps_its_slot_and_its_drill_is_undone(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    drills, trunks = DrillStore(redis_client), TrunkStore(redis_client)
    # what node-1 left when it died a second into the slot's drill
    assert drills.claim_slot("20310228T190000Z", "drill d-dead on node node-1", SLOT_KEEP_S)
    drills.acquire("d-dead", 0.3)
    drills.save_state({"id": "d-dead", "node": "node-1", "by": "schedule",
                       "trigger": "schedule", "started_at": SLOT.timestamp(),
                       "trunk": "carrier-b", "overrides": {}, "before": None})
    trunks.set_override(Override("carrier-b", OverrideAction.FORCE, "drill d-dead", "schedule",
                                 SLOT.timestamp()))
    time.sleep(0.4)  # the dead drill's lock expires
    clock = Clock(SLOT)
    clock.set(SLOT, 30.0)
    survivor = node("node-2", redis_client, tmp_path, clock)
    survivor.scheduled()  # its job fires late, with no drill running
    assert trunks.get_override("carrier-b") is not None, "nothing done by the schedule"
    survivor.drill.recover()  # what its drill thread does every minute
    assert trunks.get_override("carrier-b") is None and drills.state() is None
    dead = drills.report("d-dead")
    assert dead is not None and dead.result == "interrupted" and dead.restored
    assert scheduled_reports(redis_client) == [dead], "the slot was not drilled again"


def test_a_fire_with_no_scheduled_time_near_it_runs_nothing(
        redis_client: redis.Redis, tmp_path: Path, log: pytest.LogCaptureFixture) -> None:
    clock = Clock(SLOT)
    clock.set(SLOT, 3 * 3600.0)
    node("node-1", redis_client, tmp_path, clock).scheduled()
    assert DrillStore(redis_client).reports(10) == []
    assert "Scheduled drill not run: the schedule (0 3 1 * *) has no time in the last 3660 s" \
        in log.text
