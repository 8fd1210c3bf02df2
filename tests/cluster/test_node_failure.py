"""A node killed (SIGKILL) with calls on it: the other node notices, takes up a call that
was bridged to staff (both legs re-INVITEd, audio through it), and closes any other call's
record "cut off: node failure" and calls the caller back, once.

Topology: a sipp caller -> carrier A (Kamailio) -> the front door (the shipped
frontdoor.cfg) -> node-a or node-b (`hotline serve`) -> one redis-server. Carrier B takes
the nodes' own calls (to staff, and call-backs) to a sipp phone.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import threading
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
    forward_flow,
    free_udp_port,
    require,
    sip_ping,
    sipp_trace,
    staff_roster,
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
    def __init__(self, tmp_path: Path, redis_url: str, phone: Phone, flow: str = FLOW,
                 callback_node: str | None = "again") -> None:
        self.tmp_path, self.flow, self.callback_node = tmp_path, flow, callback_node
        self.phone = phone
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
        (work / "ivr.yaml").write_text(self.flow)
        (work / "oncall.yaml").write_text(staff_roster(1))
        probe = FAST_PROBES.model_dump()
        trunks = [
            {"name": "carrier-a", "mode": "ip", "proxy": self.carrier_a.address, "priority": 2,
             "listen": f"127.0.0.1:{self.listen[name]['carrier-a']}",
             "addresses": [self.frontdoor.host], "probe": probe},
            {"name": "carrier-b", "mode": "ip", "proxy": self.carrier_b.address, "priority": 1,
             "listen": f"127.0.0.1:{self.listen[name]['carrier-b']}", "probe": probe}]
        (work / "hotline.yaml").write_text(yaml.safe_dump({
            "node": name, "data_dir": str(work / "var"), "redis": {"url": redis_url},
            "failover": {"callback": {"enabled": True, "delay_s": 1, "node": self.callback_node,
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

    def call(self, scenario: str = "uac_forwarded.xml", rtp_port: int | None = None) -> None:
        """A caller through carrier A (its audio, if any, on `rtp_port`)."""
        workdir = self.tmp_path / "caller"
        workdir.mkdir()
        self.caller = subprocess.Popen(
            [require("sipp", "sip-tester"), self.carrier_a.address, "-sf",
             str(SIPP_SCENARIOS / scenario), "-key", "rtp_port",
             str(rtp_port or free_udp_port()), "-m", "1", "-s", "400", "-i", "127.0.0.1", "-p",
             str(free_udp_port()), "-timeout", "120s", "-nostdin", "-trace_msg",
             "-trace_err"],
            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)

    def caller_done(self) -> int:
        """Wait for the caller's sipp to finish its scenario; its exit code."""
        assert self.caller is not None
        return self.caller.wait(60)

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
    """Menus, and call-backs to a sipp phone."""
    rig = Rig(tmp_path, redis_server.url, Phone("uas_answer.xml", tmp_path / "phone"))
    try:
        rig.start()
        yield rig
    finally:
        rig.stop()


@pytest.fixture(params=["uas_taken_up.xml"])
def bridged(request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer,
            redis_client: redis.Redis) -> Iterator[Rig]:
    """Every caller forwarded to the one person on call, a sipp phone (the scenario the
    test names) that echoes audio."""
    staff = Phone(request.param, tmp_path / "staff", echo=True, timeout_s=90)
    rig = Rig(tmp_path, redis_server.url, staff, flow=forward_flow(ring_s=10),
              callback_node=None)
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


PATTERN = bytes([0x2A]) * 160  # 20 ms of PCMU that is neither silence nor noise
ORIGIN = time.monotonic()
"""The caller's RTP clock: timestamps go on with time, across pauses."""


@pytest.fixture
def audio() -> Iterator[socket.socket]:
    """The caller's audio: a UDP socket on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.02)
        yield sock


def test_a_bridged_call_on_a_killed_node_is_taken_up_by_the_other(
        bridged: Rig, redis_client: redis.Redis, audio: socket.socket) -> None:
    calls = CallStore(redis_client)
    bridged.call("uac_taken_up.xml", rtp_port=audio.getsockname()[1])
    wait_for(lambda: any(calls.dialog(r.id) for r in calls.recent(5)), timeout=30,
             what="the bridged call's dialogs saved")
    (record,) = calls.recent(5)
    assert record.forwarded_to == "staff-001" and record.outcome == "forwarded"
    dead = record.node
    assert dead in bridged.nodes
    survivor = next(name for name in bridged.nodes if name != dead)
    bridged.nodes[dead].kill()
    killed_at = time.time()
    wait_for(lambda: (found := calls.get(record.id)) is not None and found.node == survivor,
             timeout=30, what="the call moved to the survivor")
    moved = calls.get(record.id)
    assert moved is not None and moved.ended_at is None and moved.run is not None
    (move,) = moved.moved
    assert move["from"] == dead and move["to"] == survivor
    taken_up_s = move["at"] - killed_at
    assert taken_up_s < LEASE_S + 10, f"taken up {taken_up_s:.1f} s after the kill"
    reinvite = next(text for direction, text in sipp_trace(bridged.tmp_path / "caller")
                    if direction == "received" and text.startswith("INVITE "))
    media = re.search(r"c=IN IP4 (\S+).*?m=audio (\d+)", reinvite, re.S)
    assert media is not None, reinvite
    assert f"{bridged.listen[survivor]['carrier-a']}" in reinvite.split("Contact:")[1][:80]
    echoed = _echoes(audio, (media[1], int(media[2])), 100)
    assert echoed > 50, f"{echoed} of 100 packets came back through the survivor"
    assert bridged.caller_done() == 0, "the caller got the survivor's BYE after staff hung up"
    bridged.phone.finish()
    wait_for(lambda: (found := calls.get(record.id)) is not None and found.ended_at is not None,
             what="the call's final record")
    final = calls.get(record.id)
    assert final is not None and final.node == survivor and final.outcome == "forwarded"
    assert final.end_reason == "hung up by hotline" and final.callback is None
    assert Callbacks(redis_client, CallbackSettings()).recent(5) == [], "nobody called back"
    assert calls.live(dead) == {} and calls.live(survivor) == {}
    assert calls.dialog(record.id) is None


@pytest.mark.parametrize("bridged", ["uas_held_taken_up.xml"], indirect=True)
def test_a_held_call_is_taken_up_held_and_resumes_on_the_other_node(
        bridged: Rig, redis_client: redis.Redis, audio: socket.socket) -> None:
    """Staff hold the call, then its node dies: the survivor's re-INVITE is answered
    sendonly, so it sends staff nothing; when staff resume (a re-INVITE to the survivor)
    the conversation goes on both ways (FreeSWITCH's held calls came back one-legged)."""
    calls = CallStore(redis_client)
    bridged.call("uac_taken_up.xml", rtp_port=audio.getsockname()[1])

    def staff_held() -> bool | None:
        dialog = calls.dialog(record.id) if record else None
        return None if dialog is None else bool(dialog["staff"]["on_hold"])

    record = None
    wait_for(lambda: bool(calls.recent(1)), timeout=30, what="the call's record")
    (record,) = calls.recent(1)
    wait_for(lambda: staff_held() is True, timeout=30, what="staff holding, saved")
    dead = calls.get(record.id).node  # type: ignore[union-attr]
    survivor = next(name for name in bridged.nodes if name != dead)
    bridged.nodes[str(dead)].kill()
    wait_for(lambda: (found := calls.get(record.id)) is not None and found.node == survivor,
             timeout=30, what="the call moved to the survivor")
    assert staff_held() is True, "taken up held"
    reinvite = next(text for direction, text in sipp_trace(bridged.tmp_path / "caller")
                    if direction == "received" and text.startswith("INVITE "))
    media = re.search(r"c=IN IP4 (\S+).*?m=audio (\d+)", reinvite, re.S)
    assert media is not None, reinvite
    target = (media[1], int(media[2]))
    assert _echoes(audio, target, 50) == 0, "nothing sent to staff while they hold"
    wait_for(lambda: staff_held() is False, timeout=20, what="staff resumed on the survivor")
    echoed = _echoes(audio, target, 100, first=51)  # the stream goes on
    assert echoed > 50, f"{echoed} of 100 packets came back after the resume"
    assert bridged.caller_done() == 0
    bridged.phone.finish()
    wait_for(lambda: (found := calls.get(record.id)) is not None and found.ended_at is not None,
             what="the call's final record")
    final = calls.get(record.id)
    assert final is not None and final.node == survivor and final.callback is None


def _echoes(sock: socket.socket, target: tuple[str, int], packets: int, first: int = 1) -> int:
    """Send `packets` packets of PATTERN to `target` (20 ms apart, RTP sequence numbers
    from `first`) and count those that come back within a second after."""
    sender = threading.Thread(target=_talk, args=(sock, target, range(first, first + packets)))
    sender.start()
    echoed, until = 0, time.monotonic() + packets * 0.02 + 1
    while time.monotonic() < until:
        with contextlib.suppress(TimeoutError):
            echoed += sock.recv(2048)[12:] == PATTERN
    sender.join()
    return echoed


def _talk(sock: socket.socket, target: tuple[str, int], sequence: range) -> None:
    """Send a packet of PATTERN to `target` for each RTP sequence number, 20 ms apart."""
    start = time.monotonic()
    for n, seq in enumerate(sequence, 1):
        sock.sendto(_rtp(seq, round((time.monotonic() - ORIGIN) / 0.02) * 160) + PATTERN,
                    target)
        time.sleep(max(0.0, start + n * 0.02 - time.monotonic()))


def _rtp(seq: int, timestamp: int) -> bytes:
    """An RTP header: PCMU, sequence `seq`, `timestamp`, a fixed SSRC."""
    return bytes([0x80, 0]) + seq.to_bytes(2, "big") + timestamp.to_bytes(4, "big") + \
        (0x1234ABCD).to_bytes(4, "big")
