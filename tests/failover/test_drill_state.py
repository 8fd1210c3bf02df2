"""The drill's bookkeeping against a real Redis, with test calls stood in for: the lock,
the restore when a call blows up, and the report's history limit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis

from failover.drill.report import Result
from failover.drill.run import Drill, DrillRefused
from failover.drill.store import DrillStore
from trunks.overrides import Override, OverrideAction
from trunks.store import TrunkStore

TRUNKS = ["carrier-a", "carrier-b"]


def drill(client: redis.Redis, tmp_path: Path, test_call: Any, keep: int = 100) -> Drill:
    return Drill(DrillStore(client), TrunkStore(client), TRUNKS, test_call, node="node-1",
                 number="4000", lock_s=60, keep=keep, reports_dir=tmp_path / "drills")


def test_a_failing_step_still_restores_and_unlocks(redis_client: redis.Redis,
                                                   tmp_path: Path) -> None:
    trunks = TrunkStore(redis_client)
    trunks.set_override(Override("carrier-b", OverrideAction.FORCE, "works", "olga", 1.0))

    def explode(n: int, trunk: str, cancelled: Any) -> dict[str, Any]:
        raise RuntimeError("the SIP stack fell over")

    with pytest.raises(RuntimeError, match="fell over"):
        drill(redis_client, tmp_path, explode).run("carrier-b", 2)
    after = trunks.get_override("carrier-b")
    assert after is not None and (after.action, after.reason) == (OverrideAction.FORCE, "works")
    drills = DrillStore(redis_client)
    assert drills.holder() is None and drills.state() is None
    report = drills.reports(1)[0]
    assert report.result is Result.FAILED and report.restored and report.calls == []
    assert (tmp_path / "drills" / f"{report.id}.txt").is_file()


def test_the_lock_refuses_a_second_drill_and_belongs_to_its_holder(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    drills = DrillStore(redis_client)
    assert drills.acquire("d-1", 60)
    with pytest.raises(DrillRefused, match="drill d-1 is running"):
        drill(redis_client, tmp_path, lambda *a: {"ok": True}).run("carrier-b", 1)
    drills.release("d-2")  # not its lock: nothing happens
    assert drills.holder() == "d-1" and not drills.extend("d-2", 60)
    assert redis_client.pttl(drills.key("lock")) > 59_000


def test_an_operator_change_during_the_drill_is_kept_and_reported(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    trunks = TrunkStore(redis_client)

    def operator_drains_a(n: int, trunk: str, cancelled: Any) -> dict[str, Any]:
        trunks.set_override(Override("carrier-a", OverrideAction.DRAIN, "flaky", "olga", 2.0))
        return {"number": n, "ok": True, "error": None}

    report = drill(redis_client, tmp_path, operator_drains_a).run("carrier-b", 1)
    assert report.result is Result.PASSED and report.restored
    assert trunks.get_override("carrier-b") is None
    assert report.overrides_after == {"carrier-a": "drain (flaky)", "carrier-b": None}
    assert report.problems == ["overrides of carrier-a changed during the drill; left as they "
                               "are now"]


def test_only_the_newest_reports_are_kept(redis_client: redis.Redis, tmp_path: Path) -> None:
    runner = drill(redis_client, tmp_path, lambda n, t, c: {"number": n, "ok": False,
                                                             "error": "no"}, keep=2)
    ids = [runner.run("carrier-b", 1, drill_id=f"d-{i}").id for i in range(3)]
    assert [r.id for r in DrillStore(redis_client).reports(10)] == ids[:0:-1]
    assert len(list((tmp_path / "drills").glob("*.json"))) == 3, "files are all kept"


def test_a_drained_backup_fails_the_drill_and_changes_nothing(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    trunks = TrunkStore(redis_client)
    trunks.set_override(Override("carrier-b", OverrideAction.DRAIN, "carrier works", "olga",
                                 1.0))
    placed: list[int] = []
    report = drill(redis_client, tmp_path, lambda n, t, c: placed.append(n)).run(
        "carrier-b", 2)
    assert report.result is Result.FAILED and placed == [] and report.calls == []
    assert report.problems == ["carrier-b is drained by olga (carrier works): the drill does "
                               "not force live calls onto a trunk taken out of service; "
                               "nothing changed"]
    assert len(trunks.audit_log(10)) == 1, "only the operator's drain"


def test_an_operator_change_to_the_drill_trunk_is_not_undone(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    trunks = TrunkStore(redis_client)

    def operator_drains_b(n: int, trunk: str, cancelled: Any) -> dict[str, Any]:
        trunks.set_override(Override("carrier-b", OverrideAction.DRAIN, "bad audio", "olga",
                                     2.0))
        return {"number": n, "ok": True, "error": None}

    report = drill(redis_client, tmp_path, operator_drains_b).run("carrier-b", 1)
    after = trunks.get_override("carrier-b")
    assert after is not None and after.reason == "bad audio"
    assert report.problems == ["the override of carrier-b was changed during the drill; left "
                               "as it is now"]


def test_a_dead_nodes_drill_is_undone_once_its_lock_expires(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    trunks, drills = TrunkStore(redis_client), DrillStore(redis_client)
    drills.acquire("d-dead", 0.3)  # the dead node's lock, still held for a moment
    drills.save_state({"id": "d-dead", "node": "node-9", "by": "drill", "trigger": "cli",
                       "started_at": 1.0, "trunk": "carrier-b", "overrides": {},
                       "before": None})
    trunks.set_override(Override("carrier-b", OverrideAction.FORCE, "drill d-dead", "drill",
                                 1.0))
    runner = drill(redis_client, tmp_path, lambda *a: {"ok": True})
    runner.recover()
    assert trunks.get_override("carrier-b") is not None, "not while its lock is held"
    time.sleep(0.4)
    runner.recover()
    assert trunks.get_override("carrier-b") is None and drills.state() is None
    report = drills.report("d-dead")
    assert report is not None and report.result is Result.INTERRUPTED and report.restored
