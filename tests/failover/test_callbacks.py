"""Callers cut off mid-call: a sipp caller comes in through a Kamailio carrier and its
audio stops (no BYE); the hotline ends the call as cut off, then calls the number back
through the carrier to a sipp phone and runs the flow from the call-back node, or, with
call-backs off, opens a ticket for staff."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from failover.callbacks import Callbacks
from failover.config import CallbackSettings
from ivr.records import CallStore
from ivr.server import Server
from ivr.settings import load_settings
from ivr.tickets.store import TicketStore
from tests.conftest import FAST_PROBES, wait_for
from tests.peers import SIPP_SCENARIOS, Carrier, Phone, RedisServer, free_udp_port, require

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

FLOW = """\
start: menu
voice: {engine: espeak}
nodes:
  menu: {type: menu, text: Press 1 to finish., options: {"1": bye}, timeout_s: 30, retries: 1,
         failure: bye}
  again: {type: say, text: This is the hotline calling you back., next: bye}
  bye: {type: hangup, text: Goodbye.}
"""
CALLER = "13900000000"  # the From of uac_forwarded.xml


class Rig:
    def __init__(self, tmp_path: Path, redis_url: str) -> None:
        self.tmp_path, self.redis_url = tmp_path, redis_url
        self.staff = Phone("uas_answer.xml", tmp_path / "staff")
        self.listen = free_udp_port()
        self.carrier = Carrier(tmp_path / "carrier", hotline=("127.0.0.1", self.listen),
                               staff=self.staff.address)
        self.server: Server | None = None

    def start(self, **callback: object) -> Server:
        self.carrier.start()
        (self.tmp_path / "ivr.yaml").write_text(FLOW)
        config = self.tmp_path / "hotline.yaml"
        config.write_text(yaml.safe_dump({
            "node": "node-1", "data_dir": str(self.tmp_path / "var"),
            "redis": {"url": self.redis_url},
            "failover": {"callback": {"silence_s": 2, "delay_s": 1, "node": "again",
                                      **callback}},
            "trunks": [{"name": "carrier-a", "mode": "ip", "proxy": self.carrier.address,
                        "listen": f"127.0.0.1:{self.listen}",
                        "probe": FAST_PROBES.model_dump()}]}))
        self.server = Server(load_settings(config))
        self.server.start()
        return self.server

    def silent_caller(self) -> None:
        """A caller whose audio never arrives (its RTP port sends nothing); it completes
        when the hotline hangs up on it."""
        workdir = self.tmp_path / "caller"
        workdir.mkdir()
        done = subprocess.run(
            [require("sipp", "sip-tester"), self.carrier.address, "-sf",
             str(SIPP_SCENARIOS / "uac_forwarded.xml"), "-key", "rtp_port",
             str(free_udp_port()), "-m", "1", "-s", "400", "-i", "127.0.0.1", "-p",
             str(free_udp_port()), "-timeout", "30s", "-timeout_error", "-nostdin"],
            cwd=workdir, capture_output=True, text=True, timeout=40)
        assert done.returncode == 0, done.stderr

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.carrier.stop()
        Phone.stop_all()


@pytest.fixture
def rig(tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[Rig]:
    rig = Rig(tmp_path, redis_server.url)
    yield rig
    rig.stop()


def test_a_cut_off_caller_is_called_back_where_the_flow_says(
        rig: Rig, redis_client: redis.Redis) -> None:
    rig.start(enabled=True, numbers=r"139\d{8}")
    rig.silent_caller()
    calls = CallStore(redis_client)
    wait_for(lambda: any(r.callback_of for r in calls.recent(5)), timeout=20,
             what="the call-back's record")
    callback_call = next(r for r in calls.recent(5) if r.callback_of)
    original = calls.get(callback_call.callback_of or "")
    assert original is not None and original.caller == CALLER
    assert original.end_reason == "cut off: no audio from the caller for 2 s"
    assert original.path == ["menu"] and (original.callback or "").startswith("call-back cb-")
    assert callback_call.path == ["again", "bye"] and callback_call.outcome == "completed"
    (record,) = Callbacks(redis_client, CallbackSettings()).recent(5)
    assert (record.status, record.number, record.path, record.trunk_state) == (
        "answered", CALLER, ["menu"], "up")
    assert record.attempts == [{"trunk": "carrier-a", "outcome": "answered", "status": 200,
                                "reason": "OK"}]
    rig.staff.finish()
    (invite,) = rig.staff.received("INVITE")
    assert invite.startswith(f"INVITE sip:{CALLER}@")


def test_without_call_backs_staff_get_a_ticket(rig: Rig, redis_client: redis.Redis) -> None:
    rig.start(enabled=False)
    rig.silent_caller()
    tickets = TicketStore(redis_client)
    wait_for(lambda: bool(tickets.tickets()), what="a ticket")
    (ticket,) = tickets.tickets()
    assert ticket.caller == CALLER and ticket.category == "cut-off call"
    assert ticket.reason == ("call cut off at menu (cut off: no audio from the caller for 2 s);"
                             " call the caller back: call-backs are disabled")
    record = CallStore(redis_client).recent(1)[0]
    assert record.callback == f"ticket {ticket.id}: call-backs are disabled"
    assert rig.staff.received("INVITE") == [], "nobody was called"
