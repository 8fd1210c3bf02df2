"""Redis through Sentinel, against a real master, replica and three sentinels:
`connect()` finds the master, says clearly when it cannot, and reaches the promoted
replica after the master is killed; a `Server` on top keeps its state across that."""

from __future__ import annotations

import datetime
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from ivr.cli import cli
from ivr.clock import fixed
from ivr.records import CallStore
from ivr.redis_server import RedisUnavailable, connect
from ivr.server import Server
from ivr.settings import load_settings
from tests.conftest import FAST_PROBES, wait_for, wait_trunks_up
from tests.ivr.conftest import WriteConfig
from tests.peers import Carrier, free_udp_port, require
from tests.redis_sentinel import FAILOVER_WAIT_S, MASTER_NAME, SentinelRig
from trunks.overrides import OverrideAction
from trunks.store import TrunkStore

NOW = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)
"""The hotline's clock in the server test."""
PASSWORD, SENTINEL_PASSWORD = "redis-secret", "sentinel-secret"
SIPP = Path(__file__).resolve().parents[1] / "sipp"
DTMF_CAPTURES = Path("/usr/share/sip-tester")
FLOW = """\
start: menu
voice: {engine: espeak}
nodes:
  menu:
    type: menu
    text: Press one.
    options: {"1": thanks}
    timeout_s: 10
    failure: thanks
  thanks:
    type: hangup
    text: Thank you.
"""


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[SentinelRig]:
    """Master, replica and sentinels, with passwords on the servers and the sentinels."""
    rig = SentinelRig(tmp_path / "redis", PASSWORD, SENTINEL_PASSWORD)
    rig.start()
    yield rig
    rig.stop()


def sentinel_config(write_config: WriteConfig, rig: SentinelRig,
                    **redis_settings: object) -> Path:
    """A hotline.yaml whose Redis is `rig`'s master, reached through its sentinels."""
    redis_settings = {"sentinels": rig.addresses, "master_name": MASTER_NAME,
                      "password": PASSWORD, "sentinel_password": SENTINEL_PASSWORD,
                      **redis_settings}
    return write_config({"carrier-a": "127.0.0.1:5999"}, redis=redis_settings)


def written(client: redis.Redis, key: str) -> bool:
    """Whether a write of `key` went through now."""
    try:
        return bool(client.set(key, "1"))
    except redis.RedisError:
        return False


def test_clients_and_the_cli_reach_the_master_through_the_sentinels(
        rig: SentinelRig, write_config: WriteConfig) -> None:
    config = sentinel_config(write_config, rig)
    settings = load_settings(config)
    with rig.master.client() as master:
        for fail_fast in (False, True):
            with connect(settings, fail_fast) as client:
                client.set(f"written-{fail_fast}", "yes")
                assert master.get(f"written-{fail_fast}") == "yes"
        done = CliRunner().invoke(cli, ["trunks", "drain", "carrier-a", "--reason", "test",
                                        "--config", str(config)])
        assert done.exit_code == 0, done.output
        override = TrunkStore(master).get_override("carrier-a")
        assert override is not None and override.action is OverrideAction.DRAIN


def test_unreachable_redis_is_explained_naming_the_sentinels_and_the_master(
        rig: SentinelRig, write_config: WriteConfig) -> None:
    addresses = ", ".join(rig.addresses)

    def failure(**redis_settings: object) -> str:
        settings = load_settings(sentinel_config(write_config, rig, **redis_settings))
        with pytest.raises(RedisUnavailable) as caught:
            connect(settings, fail_fast=True)
        return str(caught.value)

    assert failure(master_name="elsewhere") == (
        f"cannot reach Redis master 'elsewhere' through the sentinels at {addresses}: the "
        f"sentinels monitor no master named 'elsewhere' (they monitor {MASTER_NAME})")
    refused = failure(sentinel_password="wrong")
    assert refused.startswith(f"cannot reach Redis master '{MASTER_NAME}' through the "
                              f"sentinels at {addresses}: asking the sentinels failed "
                              f"({rig.addresses[0]}: invalid username-password pair")
    assert failure(password="wrong").endswith(": invalid username-password pair or user is "
                                              "disabled.")
    for sentinel in rig.sentinels:
        sentinel.kill()
    silent = failure()
    for address in rig.addresses:
        assert f"{address}: Error 111 connecting to {address}" in silent


@pytest.mark.slow
def test_after_the_master_is_killed_writes_reach_the_promoted_replica(
        rig: SentinelRig, write_config: WriteConfig,
        record_property: Callable[[str, object], None]) -> None:
    settings = load_settings(sentinel_config(write_config, rig))
    with connect(settings) as client, connect(settings, fail_fast=True) as fast, \
            rig.replica.client() as replica:
        client.set("before", "1")
        wait_for(lambda: replica.get("before") == "1", what="the replica to have the key")
        killed = time.monotonic()
        rig.master.kill()
        wait_for(lambda: written(client, "after"), timeout=FAILOVER_WAIT_S,
                 what="a write through connect()'s client after the failover")
        took = time.monotonic() - killed
        record_property("failover_to_first_write_s", round(took, 2))
        assert took < FAILOVER_WAIT_S, "generous: about 3 s with these sentinel timings"
        assert rig.replica.role() == "master" and rig.master_port() == rig.replica.port
        assert fast.set("after-fast", "1") and replica.mget("before", "after", "after-fast") \
            == ["1", "1", "1"]


@pytest.mark.slow
def test_a_demoted_master_answering_readonly_sends_the_client_back_to_the_sentinels(
        rig: SentinelRig, write_config: WriteConfig) -> None:
    """A connection made before a failover stays with the old master, which takes its
    writes until Sentinel demotes it (and then closes its clients). Should the demotion
    reach it first, READONLY becomes a ConnectionError that drops the connection, so the
    next command asks the sentinels for the new master."""
    settings = load_settings(sentinel_config(write_config, rig))
    with connect(settings, fail_fast=True) as client, rig.master.client() as old, \
            rig.replica.client() as new:
        client.set("before", "1")
        with rig.sentinels[0].client() as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        wait_for(lambda: rig.master_port() == rig.replica.port, timeout=FAILOVER_WAIT_S,
                 what="the sentinels to switch to the replica")
        client.set("stale", "1")
        assert old.get("stale") == "1" and new.get("stale") is None, \
            "a write the old master took after the switch, to be lost when it resyncs"
        old.replicaof("127.0.0.1", str(rig.replica.port))
        with pytest.raises(redis.ConnectionError, match="previous master is now a slave"):
            client.set("after", "1")
        assert client.set("after", "1") and new.get("after") == "1"


@pytest.mark.slow
def test_a_server_on_sentinels_keeps_its_state_and_records_calls_after_a_failover(
        rig: SentinelRig, tmp_path: Path) -> None:
    listen = free_udp_port()
    carrier = Carrier(tmp_path / "carrier", host="127.0.0.3", hotline=("127.0.0.1", listen))
    carrier.start()
    (tmp_path / "ivr.yaml").write_text(FLOW)
    config = tmp_path / "hotline.yaml"
    config.write_text(f"""\
node: node-1
data_dir: {tmp_path / "var"}
redis:
  sentinels: {rig.addresses}
  master_name: {MASTER_NAME}
  password: ${{REDIS_PASSWORD}}
  sentinel_password: {SENTINEL_PASSWORD}
trunks:
  - {{name: carrier-a, mode: ip, proxy: "{carrier.address}", listen: "127.0.0.1:{listen}",
      probe: {FAST_PROBES.model_dump()}}}
""")
    settings = load_settings(config, environ={"REDIS_PASSWORD": PASSWORD})
    server = Server(settings, now=fixed(NOW))
    try:
        server.start()
        assert not (tmp_path / "var" / "redis").exists(), "no embedded redis-server"
        wait_trunks_up(server)
        _state_lands_on_the_master(rig, config, server)
        rig.master.kill()
        wait_for(lambda: rig.master_port() == rig.replica.port, timeout=FAILOVER_WAIT_S,
                 what="the sentinels to promote the replica")
        _call(carrier, tmp_path)
        with rig.replica.client() as new_master:
            calls = CallStore(new_master)
            wait_for(lambda: any(r.ended_at is not None for r in calls.recent(1)),
                     what="the call's record on the new master")
            [record] = calls.recent(5)
            assert record.path == ["menu", "thanks"] and record.digits == "1"
        assert server.monitor is not None
        assert server.monitor.view().overrides["carrier-a"].action is OverrideAction.DRAIN
    finally:
        server.stop()
        carrier.stop()


def _state_lands_on_the_master(rig: SentinelRig, config: Path, server: Server) -> None:
    """The monitor's health and an operator's drain are in the master, and the drain has
    reached the replica (so the kill that follows cannot lose it)."""
    with rig.master.client() as master, rig.replica.client() as replica:
        store = TrunkStore(master)
        wait_for(lambda: store.load_health("carrier-a", "node-1") is not None,
                 what="carrier-a's health in Redis")
        assert store.live_nodes() == ["node-1"]
        done = CliRunner().invoke(cli, ["trunks", "drain", "carrier-a", "--reason", "test",
                                        "--config", str(config)],
                                  env={"REDIS_PASSWORD": PASSWORD})
        assert done.exit_code == 0, done.output
        assert server.monitor is not None and "carrier-a" in server.monitor.view().overrides
        wait_for(lambda: TrunkStore(replica).get_override("carrier-a") is not None,
                 what="the drain on the replica")


def _call(carrier: Carrier, workdir: Path) -> None:
    """One sipp caller through `carrier`, pressing 1 and waiting for the hotline's BYE."""
    done = subprocess.run(
        [require("sipp", "sip-tester"), carrier.address, "-sf",
         str(SIPP / "uac_press_digit.xml"), "-key", "digit_pcap",
         str(DTMF_CAPTURES / "dtmf_2833_1.pcap"), "-m", "1", "-s", "400", "-i", "127.0.0.1",
         "-p", str(free_udp_port()), "-mp", str(free_udp_port()), "-timeout", "30s",
         "-timeout_error", "-nostdin", "-trace_err"],
        cwd=workdir, capture_output=True, text=True, timeout=40)
    if done.returncode != 0:
        errors = "".join(p.read_text() for p in workdir.glob("*_errors.log"))
        pytest.fail(f"sipp caller failed ({done.returncode}):\n{errors[-3000:]}\n{done.stderr}")
