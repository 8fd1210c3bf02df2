"""A node killed (SIGKILL) with a caller on it: the other node notices, closes the call's
record "cut off: node failure" and calls the caller back, once.

Topology: a sipp caller -> carrier A (Kamailio) -> the front door (the shipped
frontdoor.cfg) -> node-a or node-b (`hotline serve`) -> one redis-server. Carrier B takes
the nodes' own calls (the call-back) to a sipp phone standing for the caller's phone.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from failover.callbacks import Callbacks
from failover.config import CallbackSettings
from ivr.calls.takeover import NODE_FAILURE
from ivr.nodes import LEASE_S
from ivr.records import CallStore
from tests.conftest import FAST_PROBES, wait_for
from tests.peers import (
    SIPP_SCENARIOS,
    Carrier,
    FrontDoor,
    GroupProcess,
    Phone,
    RedisServer,
    free_udp_port,
    require,
    sip_ping,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
FLOW = """\
start: menu
voice: {engine: espeak}
nodes:
  menu: {type: menu, text: Press 1 to finish., options: {"1": bye}, timeout_s: 60, retries: 1,
         failure: bye}
  again: {type: say, text: This is the hotline calling you back., next: bye}
  bye: {type: hangup, text: Goodbye.}
"""
CALLER = "13900000000"  # the From of uac_forwarded.xml


class Rig:
    def __init__(self, tmp_path: Path, redis_url: str) -> None:
        self.tmp_path = tmp_path
        self.phone = Phone("uas_answer.xml", tmp_path / "phone")
        frontdoor_port = free_udp_port()
        self.carrier_a = Carrier(tmp_path / "carrier-a", host="127.0.0.3",
                                 hotline=("127.0.0.4", frontdoor_port))
        self.carrier_b = Carrier(tmp_path / "carrier-b", host="127.0.0.5",
                                 staff=self.phone.address)
        self.listen = {name: {"carrier-a": free_udp_port(), "carrier-b": free_udp_port()}
                       for name in ("node-a", "node-b")}
        self.frontdoor = FrontDoor(tmp_path / "frontdoor",
                                   [f"127.0.0.1:{p['carrier-a']}" for p in self.listen.values()],
                                   [self.carrier_a.address], port=frontdoor_port)
        self.nodes = {name: self._node(name, redis_url) for name in self.listen}
        self.caller: subprocess.Popen[str] | None = None

    def _node(self, name: str, redis_url: str) -> GroupProcess:
        work = self.tmp_path / name
        work.mkdir()
        (work / "ivr.yaml").write_text(FLOW)
        probe = FAST_PROBES.model_dump()
        trunks = [
            {"name": "carrier-a", "mode": "ip", "proxy": self.carrier_a.address, "priority": 2,
             "listen": f"127.0.0.1:{self.listen[name]['carrier-a']}",
             "addresses": [self.frontdoor.host], "probe": probe},
            {"name": "carrier-b", "mode": "ip", "proxy": self.carrier_b.address, "priority": 1,
             "listen": f"127.0.0.1:{self.listen[name]['carrier-b']}", "probe": probe}]
        (work / "hotline.yaml").write_text(yaml.safe_dump({
            "node": name, "data_dir": str(work / "var"), "redis": {"url": redis_url},
            "failover": {"callback": {"enabled": True, "delay_s": 1, "node": "again",
                                      "numbers": r"139\d{8}", "silence_s": 120}},
            "trunks": trunks}))
        return GroupProcess([sys.executable, "-m", "ivr", "serve", "--config",
                             str(work / "hotline.yaml")], work / "serve.log")

    def start(self) -> None:
        self.carrier_a.start()
        self.carrier_b.start()
        self.frontdoor.start()
        for process in self.nodes.values():
            process.start()
        deadline = time.monotonic() + 60
        while not all(sip_ping(p["carrier-a"]) for p in self.listen.values()):
            assert time.monotonic() < deadline, "the nodes did not come up"
            for name, process in self.nodes.items():
                assert process.running, self.log(name)[-2000:]

    def log(self, name: str) -> str:
        return (self.tmp_path / name / "serve.log").read_text(errors="replace")

    def call(self) -> None:
        """A caller through carrier A that stays in the menu (and sends no audio)."""
        workdir = self.tmp_path / "caller"
        workdir.mkdir()
        self.caller = subprocess.Popen(
            [require("sipp", "sip-tester"), self.carrier_a.address, "-sf",
             str(SIPP_SCENARIOS / "uac_forwarded.xml"), "-key", "rtp_port",
             str(free_udp_port()), "-m", "1", "-s", "400", "-i", "127.0.0.1", "-p",
             str(free_udp_port()), "-timeout", "120s", "-nostdin"],
            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)

    def stop(self) -> None:
        if self.caller is not None and self.caller.poll() is None:
            self.caller.kill()
            self.caller.communicate()
        for process in self.nodes.values():
            process.stop()
        for peer in (self.frontdoor, self.carrier_a, self.carrier_b):
            peer.stop()
        Phone.stop_all()


@pytest.fixture
def rig(tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[Rig]:
    rig = Rig(tmp_path, redis_server.url)
    try:
        rig.start()
        yield rig
    finally:
        rig.stop()


def test_a_killed_nodes_caller_is_called_back_once_by_the_other(
        rig: Rig, redis_client: redis.Redis) -> None:
    calls = CallStore(redis_client)
    rig.call()
    wait_for(lambda: any(r.answered_at and r.path for r in calls.recent(5)), timeout=20,
             what="the caller answered and in the menu")
    (record,) = calls.recent(5)
    dead = record.node
    assert dead in rig.nodes and calls.live(dead) == {record.id: record.run}
    survivor = next(name for name in rig.nodes if name != dead)
    rig.nodes[dead].kill()
    killed_at = time.time()

    def closed() -> bool:
        found = calls.get(record.id)
        return found is not None and found.ended_at is not None

    wait_for(closed, timeout=30, what="the dead node's call closed")
    found = calls.get(record.id)
    assert found is not None and found.end_reason == NODE_FAILURE and found.node == dead
    assert found.ended_at is not None
    noticed = found.ended_at - killed_at
    assert noticed < LEASE_S + 6, f"closed {noticed:.1f} s after the kill"
    assert (found.callback or "").startswith("call-back cb-")
    wait_for(lambda: any(r.callback_of == record.id and r.ended_at for r in calls.recent(5)),
             timeout=30, what="the call-back's final record")
    back = next(r for r in calls.recent(5) if r.callback_of == record.id)
    assert back.node == survivor and back.trunk == "carrier-b"
    assert back.path == ["again", "bye"] and back.outcome == "completed"
    (callback,) = Callbacks(redis_client, CallbackSettings()).recent(5)
    assert (callback.status, callback.cause, callback.number) == ("answered", "node", CALLER)
    rig.phone.finish()
    assert len(rig.phone.received("INVITE")) == 1, "called back once"
    assert f"closed: node {dead} failed with it up at menu" in rig.log(survivor)
    assert calls.live(dead) == {} and calls.live(survivor) == {}
