"""The drill end to end: the hotline calls its own number out through the backup
carrier (Kamailio), which routes it back in to the drill responder; `hotline drill
run` follows it through Redis, and the trunks end as they began."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from click.testing import CliRunner

from failover.drill.report import DrillReport
from failover.drill.service import SCHEDULE_GRACE_S, slot_name
from failover.drill.store import DrillStore
from ivr.cli import cli
from ivr.records import CallStore
from ivr.server import Server
from ivr.settings import load_settings
from tests.conftest import FAST_PROBES, ROOT, wait_for, wait_trunks_up
from tests.peers import Carrier, RedisServer, free_udp_port
from trunks.overrides import Override, OverrideAction
from trunks.store import TrunkStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

FLOW = """\
start: bye
voice: {engine: espeak}
nodes:
  bye: {type: hangup, text: Goodbye.}
"""
NUMBER = "4000"


class Rig:
    """Two carriers, each routing every INVITE to the hotline's endpoint for it (so the
    hotline's own calls come back in), and the hotline on both."""

    def __init__(self, tmp_path: Path, redis_server: RedisServer, **settings: object) -> None:
        self.tmp_path = tmp_path
        self.settings = settings
        self.redis_url = redis_server.url
        self.listen = {"carrier-a": free_udp_port(), "carrier-b": free_udp_port()}
        self.carriers: dict[str, Carrier] = {}
        self.server: Server | None = None
        self.config = tmp_path / "hotline.yaml"

    def start(self, broken_backup: bool = False, **drill: object) -> Server:
        for name, port in self.listen.items():
            self.carriers[name] = Carrier(
                self.tmp_path / name, hotline=("127.0.0.1", port),
                fail_invites=broken_backup and name == "carrier-b")
            self.carriers[name].start()
        (self.tmp_path / "ivr.yaml").write_text(FLOW)
        self.config.write_text(yaml.safe_dump({
            "node": "node-1", "data_dir": str(self.tmp_path / "var"),
            "redis": {"url": self.redis_url},
            "drill": {"number": NUMBER, "calls": 2, "step_s": 5, **drill}, **self.settings,
            "trunks": [{"name": name, "mode": "ip", "proxy": carrier.address,
                        "listen": f"127.0.0.1:{self.listen[name]}", "priority": i + 1,
                        "probe": FAST_PROBES.model_dump()}
                       for i, (name, carrier) in enumerate(self.carriers.items())]}))
        self.server = Server(load_settings(self.config))
        self.server.start()
        wait_trunks_up(self.server)
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        for carrier in self.carriers.values():
            carrier.stop()


@pytest.fixture
def rig(tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[Rig]:
    rig = Rig(tmp_path, redis_server)
    yield rig
    rig.stop()


def drill_cli(rig: Rig, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["drill", *args, "--config", str(rig.config)])
    return result.exit_code, result.output


def test_a_drill_passes_on_a_healthy_backup_and_puts_everything_back(
        rig: Rig, redis_client: redis.Redis) -> None:
    rig.start()
    trunks = TrunkStore(redis_client)
    trunks.set_override(Override("carrier-b", OverrideAction.FORCE, "trying the backup",
                                 "olga", 1000.0))
    code, output = drill_cli(rig, "run", "--json")
    report = json.loads(output)
    assert code == 0, output
    assert report["result"] == "passed" and report["trunk"] == "carrier-b"
    assert [(c["setup"], c["audio_in"], c["audio_out"], c["dtmf"], c["ok"])
            for c in report["calls"]] == [(True, True, True, True, True)] * 2
    assert report["restored"] and report["overrides_before"] == report["overrides_after"] == {
        "carrier-a": None, "carrier-b": "force (trying the backup)"}
    # the operator's force is back, and the audit log shows the drill's force between
    after = trunks.get_override("carrier-b")
    assert after is not None and (after.reason, after.by) == ("trying the backup", "olga")
    audit = [(e.action.value, e.by, e.reason) for e in reversed(trunks.audit_log(10))]
    assert audit == [("force", "olga", "trying the backup"),
                     ("force", report["by"], f"drill {report['id']}"),
                     ("force", "olga", "trying the backup")]
    # both calls went out through carrier-b and came back in to the responder
    assert rig.carriers["carrier-b"].requests("INVITE", rig.listen["carrier-b"]) == 2
    answered = [r for r in CallStore(redis_client).recent(10) if r.path == ["drill"]]
    assert [r.outcome for r in answered] == [
        "drill responder: heard the tone, echoed 6 digits"] * 2
    drills_dir = rig.tmp_path / "var" / "drills"
    assert json.loads((drills_dir / f"{report['id']}.json").read_text())["result"] == "passed"
    assert "PASSED" in (drills_dir / f"{report['id']}.txt").read_text()
    code, output = drill_cli(rig, "history")
    assert code == 0 and report["id"] in output and "passed" in output and "2/2" in output


def test_a_drill_on_a_broken_backup_fails_cleanly(rig: Rig, redis_client: redis.Redis) -> None:
    rig.start(broken_backup=True)  # carrier-b answers OPTIONS but refuses calls: 503
    code, output = drill_cli(rig, "run")
    assert code == 1, output
    assert "Drill" in output and "FAILED" in output and "state restored: yes" in output
    report = DrillStore(redis_client).reports(1)[0]
    assert [c["error"] for c in report.calls] == [
        "set-up trunk failed: 503 Service Unavailable"] * 2
    assert TrunkStore(redis_client).get_override("carrier-b") is None
    assert DrillStore(redis_client).holder() is None


def test_a_second_drill_while_one_runs_is_refused(rig: Rig, redis_client: redis.Redis) -> None:
    server = rig.start(calls=1)
    assert server.drill is not None
    first: list[DrillReport] = []
    worker = threading.Thread(target=lambda: first.append(server.drill.run(  # type: ignore[union-attr]
        "carrier-b", 1)))
    worker.start()
    wait_for(lambda: DrillStore(redis_client).holder() is not None, what="first drill running")
    code, output = drill_cli(rig, "run")
    worker.join(60)
    assert code == 3 and "refused: drill" in output and "only one drill at a time" in output
    assert first[0].result == "passed"


def test_an_interrupted_drill_restores_state(rig: Rig, redis_client: redis.Redis) -> None:
    rig.start(calls=5)
    trunks = TrunkStore(redis_client)
    command = subprocess.Popen([sys.executable, "-m", "ivr", "drill", "run", "--config",
                                str(rig.config)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})

    def forced() -> bool:
        override = trunks.get_override("carrier-b")
        return override is not None and override.action is OverrideAction.FORCE

    wait_for(forced, timeout=20, what="the drill's force override")
    command.send_signal(signal.SIGINT)
    out, err = command.communicate(timeout=60)
    assert command.returncode == 1, err
    assert "stopping the drill and restoring" in err and "INTERRUPTED" in out
    assert "state restored: yes" in out
    assert trunks.get_override("carrier-b") is None
    report = DrillStore(redis_client).reports(1)[0]
    assert report.result == "interrupted" and report.restored and len(report.calls) < 5


def test_a_drill_left_behind_by_a_dead_node_is_undone_at_start(
        rig: Rig, redis_client: redis.Redis) -> None:
    trunks, drills = TrunkStore(redis_client), DrillStore(redis_client)
    # what a node killed mid-drill leaves: its record of the state, and its force
    drills.save_state({"id": "d-dead", "node": "node-9", "by": "schedule",
                       "trigger": "schedule", "started_at": 1000.0, "trunk": "carrier-b",
                       "overrides": {"carrier-a": None, "carrier-b": None}, "before": None})
    trunks.set_override(Override("carrier-b", OverrideAction.FORCE, "drill d-dead", "schedule",
                                 1000.0))
    rig.start()
    assert trunks.get_override("carrier-b") is None and drills.state() is None
    report = drills.report("d-dead")
    assert report is not None and report.result == "interrupted" and report.restored


def test_the_schedule_runs_drills_inside_serve(rig: Rig, redis_client: redis.Redis) -> None:
    server = rig.start(schedule="0 3 1 * *", timezone="Asia/Shanghai", calls=1)
    assert server.scheduler is not None and server.drill is not None
    job = server.scheduler.get_job("drill")
    assert (job.next_run_time.day, job.next_run_time.hour, str(job.next_run_time.tzinfo)) == (
        1, 3, "Asia/Shanghai")
    assert job.misfire_grace_time == SCHEDULE_GRACE_S and job.coalesce
    server.drill.scheduled(job.next_run_time)  # what the job runs, for that time
    report = DrillStore(redis_client).reports(1)[0]
    assert report.trigger == "schedule" and report.result == "passed"
    assert DrillStore(redis_client).slot_taker(slot_name(job.next_run_time)) == \
        f"drill {report.id} on node node-1"


def test_drill_run_needs_a_number_and_a_known_trunk(rig: Rig, tmp_path: Path) -> None:
    rig.config.write_text(yaml.safe_dump({"trunks": [
        {"name": "carrier-a", "mode": "ip", "proxy": "127.0.0.1:5999"}]}))
    code, output = drill_cli(rig, "run")
    assert code == 2 and "drill.number is not set" in output
    rig.config.write_text(yaml.safe_dump({"drill": {"number": NUMBER}, "trunks": [
        {"name": "carrier-a", "mode": "ip", "proxy": "127.0.0.1:5999"}]}))
    code, output = drill_cli(rig, "run", "--trunk", "nope")
    assert code == 2 and "nope" in output


def test_monthly_drill_script_skips_when_a_drill_runs(tmp_path: Path, redis_server: RedisServer,
                                                      redis_client: redis.Redis) -> None:
    config = tmp_path / "hotline.yaml"
    config.write_text(yaml.safe_dump({
        "redis": {"url": redis_server.url}, "drill": {"number": NUMBER},
        "trunks": [{"name": "carrier-a", "mode": "ip", "proxy": "127.0.0.1:5999"}]}))
    env = {**os.environ, "HOTLINE": str(Path(sys.executable).parent / "hotline"),
           "HOTLINE_CONFIG": str(config)}
    script = str(ROOT / "scripts" / "monthly-drill")
    done = subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no hotline server is running" in done.stderr
    DrillStore(redis_client).acquire("d-other", 60)
    done = subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "another drill is running; skipped" in done.stderr
