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

from failover.callbacks import CLAIM_S, NODE, CallbackRecord, Callbacks, callback_id
from failover.config import CallbackSettings
from ivr.records import CallStore
from ivr.server import Server
from ivr.settings import load_settings
from ivr.tickets.store import TicketStore
from tests.conftest import FAST_PROBES, wait_for, wait_trunks_up
from tests.peers import SIPP_SCENARIOS, Carrier, Phone, RedisServer, free_udp_port, require
from trunks.voip.inbound import CallState

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
    """Carrier A brings the caller in; carrier B takes the hotline's calls (the call-back)
    to the sipp phone. Both are the hotline's trunks, A preferred."""

    def __init__(self, tmp_path: Path, redis_url: str) -> None:
        self.tmp_path, self.redis_url = tmp_path, redis_url
        self.staff = Phone("uas_answer.xml", tmp_path / "staff")
        self.listen = {"carrier-a": free_udp_port(), "carrier-b": free_udp_port()}
        self.carriers = {
            "carrier-a": Carrier(tmp_path / "carrier-a",
                                 hotline=("127.0.0.1", self.listen["carrier-a"])),
            "carrier-b": Carrier(tmp_path / "carrier-b", host="127.0.0.3",
                                 hotline=("127.0.0.1", self.listen["carrier-b"]),
                                 staff=self.staff.address)}
        self.server: Server | None = None
        self.caller: subprocess.Popen[str] | None = None

    def start(self, **callback: object) -> Server:
        for carrier in self.carriers.values():
            carrier.start()
        (self.tmp_path / "ivr.yaml").write_text(FLOW)
        config = self.tmp_path / "hotline.yaml"
        config.write_text(yaml.safe_dump({
            "node": "node-1", "data_dir": str(self.tmp_path / "var"),
            "redis": {"url": self.redis_url},
            "failover": {"callback": {"silence_s": 4, "delay_s": 1, "node": "again",
                                      **callback}},
            "trunks": [{"name": name, "mode": "ip", "proxy": carrier.address,
                        "listen": f"127.0.0.1:{self.listen[name]}", "priority": i + 1,
                        "probe": FAST_PROBES.model_dump()}
                       for i, (name, carrier) in enumerate(self.carriers.items())]}))
        self.server = Server(load_settings(config))
        self.server.start()
        wait_trunks_up(self.server)
        return self.server

    def silent_caller(self) -> None:
        """A caller through carrier A whose audio never arrives (its RTP port sends
        nothing)."""
        workdir = self.tmp_path / "caller"
        workdir.mkdir()
        self.caller = subprocess.Popen(
            [require("sipp", "sip-tester"), self.carriers["carrier-a"].address, "-sf",
             str(SIPP_SCENARIOS / "uac_forwarded.xml"), "-key", "rtp_port",
             str(free_udp_port()), "-m", "1", "-s", "400", "-i", "127.0.0.1", "-p",
             str(free_udp_port()), "-timeout", "30s", "-timeout_error", "-nostdin"],
            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)

    def stop(self) -> None:
        if self.caller is not None and self.caller.poll() is None:
            self.caller.kill()
            self.caller.communicate()
        if self.server is not None:
            self.server.stop()
        for carrier in self.carriers.values():
            carrier.stop()
        Phone.stop_all()


@pytest.fixture
def rig(tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[Rig]:
    rig = Rig(tmp_path, redis_server.url)
    yield rig
    rig.stop()


def test_a_caller_cut_off_by_a_dying_trunk_is_called_back(
        rig: Rig, redis_client: redis.Redis) -> None:
    server = rig.start(enabled=True, numbers=r"139\d{8}")
    rig.silent_caller()
    calls = CallStore(redis_client)
    wait_for(lambda: any(c.state is CallState.ANSWERED
                         for c in server.endpoints["carrier-a"].calls), what="caller answered")
    rig.carriers["carrier-a"].kill()  # the caller's trunk dies; so does its audio
    wait_for(lambda: any(r.callback_of and r.ended_at for r in calls.recent(5)), timeout=20,
             what="the call-back's final record")  # saved as it moves, like any call's
    callback_call = next(r for r in calls.recent(5) if r.callback_of)
    original = calls.get(callback_call.callback_of or "")
    assert original is not None and original.caller == CALLER
    assert original.end_reason == "cut off: no audio from the caller for 4 s"
    assert original.path == ["menu"] and (original.callback or "").startswith("call-back cb-")
    assert callback_call.trunk == "carrier-b"
    assert callback_call.path == ["again", "bye"] and callback_call.outcome == "completed"
    (record,) = Callbacks(redis_client, CallbackSettings()).recent(5)
    assert (record.status, record.number, record.path, record.trunk, record.trunk_state) == (
        "answered", CALLER, ["menu"], "carrier-a", "down")
    assert record.attempts == [{"trunk": "carrier-b", "outcome": "answered", "status": 200,
                                "reason": "OK"}]
    rig.staff.finish()
    (invite,) = rig.staff.received("INVITE")
    assert invite.startswith(f"INVITE sip:{CALLER}@")


def test_a_cut_off_on_a_healthy_trunk_gets_a_ticket_not_a_call(
        rig: Rig, redis_client: redis.Redis) -> None:
    """Whoever stops sending audio does not make the hotline dial them: a forged caller ID
    would make that a way to place calls at the hotline's cost."""
    rig.start(enabled=True, numbers=r"139\d{8}")
    rig.silent_caller()
    tickets = TicketStore(redis_client)
    wait_for(lambda: bool(tickets.tickets()), what="a ticket")
    (ticket,) = tickets.tickets()
    why = ("trunk carrier-a was up, so the caller's own line dropped; call-backs follow trunk "
           "failures only")
    assert ticket.caller == CALLER and ticket.category == "cut-off call"
    assert ticket.reason == ("call cut off at menu (cut off: no audio from the caller for 4 s);"
                             f" call the caller back: {why}")
    record = CallStore(redis_client).recent(1)[0]
    assert record.callback == f"ticket {ticket.id}: {why}"
    assert rig.staff.received("INVITE") == [], "nobody was called"


def cut(number: str, state: str | None = "down", n: int = 0) -> CallbackRecord:
    return CallbackRecord(f"cb-{n}", f"call-{n}", number, "carrier-a", ["menu"], "cut off",
                          1000.0, state)


def test_who_gets_a_call_back(redis_client: redis.Redis) -> None:
    callbacks = Callbacks(redis_client, CallbackSettings(
        enabled=True, numbers=r"\+?86\d{11}", per_hour=3), clock=lambda: 1000.0)

    def decide(record: CallbackRecord) -> str:
        done = callbacks.cut_off(record)
        return "call back" if done.status == "pending" else done.why

    assert decide(cut("+8613900000001", "suspect", 1)) == "call back"
    assert decide(cut("8613900000001", "down", 2)).startswith(
        "the number was called back within the last 3600 s"), "+ or not, the same number"
    assert decide(cut("+8613900000002", "unknown", 3)).startswith("trunk carrier-a was unknown")
    assert decide(cut("+19005550100", "down", 4)).startswith(
        "the number '+19005550100' is not one we call back")
    assert decide(cut("sip:13900000000@evil", "down", 5)).startswith("the number")
    assert decide(cut("+8613900000003", "down", 6)) == "call back"
    assert decide(cut("+8613900000004", "recovering", 7)) == "call back"
    assert decide(cut("+8613900000005", "down", 8)) == (
        "more than 3 call-backs this hour (callback.per_hour)")
    due = [r.id for r in callbacks.claim_due()]
    assert due == [], "not due before delay_s"
    assert sorted(r.id for r in Callbacks(redis_client, callbacks.settings,
                                          clock=lambda: 1061.0).claim_due()) == [
        "cb-1", "cb-6", "cb-7"]


def test_a_node_failure_is_called_back_whatever_the_trunk_and_once_per_call(
        redis_client: redis.Redis) -> None:
    callbacks = Callbacks(redis_client, CallbackSettings(enabled=True, numbers=r"139\d{8}"),
                          clock=lambda: 1000.0)
    record = CallbackRecord(callback_id("call-1"), "call-1", CALLER, "carrier-a", ["menu"],
                            "cut off: node failure", 1000.0, None, cause=NODE)
    assert callbacks.cut_off(record).status == "pending", "the trunk's state does not matter"
    again = CallbackRecord(callback_id("call-1"), "call-1", CALLER, "carrier-a", ["menu"],
                           "cut off: node failure", 1005.0, None, cause=NODE)
    kept = callbacks.cut_off(again)  # a second node handling the same call
    assert (kept.status, kept.cut_at) == ("pending", 1000.0), "the first record, unchanged"
    assert callback_id("call-1") != callback_id("call-2")


def test_a_call_back_whose_node_died_is_claimed_again_by_another(
        redis_client: redis.Redis) -> None:
    now = [1000.0]
    settings = CallbackSettings(enabled=True, delay_s=0, numbers=r"139\d{8}")
    node_a, node_b = (Callbacks(redis_client, settings, clock=lambda: now[0]) for _ in "ab")
    for n in (1, 2):
        node_a.cut_off(cut(f"1390000000{n}", "down", n))
    claimed = node_a.claim_due()
    assert sorted(r.id for r in claimed) == ["cb-1", "cb-2"]
    assert node_b.claim_due() == [], "claimed: nobody else takes them"
    for record in claimed:
        record.status = "calling"
        node_a.save(record)
    now[0] += CLAIM_S - 1
    node_a.renew(["cb-1"])  # node-a still calls cb-1; it died while calling cb-2
    claimed[0].status = "answered"
    node_a.save(claimed[0])  # answered: no longer claimed
    now[0] += 2
    again = node_b.claim_due()
    assert [(r.id, r.status) for r in again] == [("cb-2", "calling")]
    now[0] += CLAIM_S - 1
    node_b.renew(["cb-2"])
    now[0] += 2
    assert node_a.claim_due() == [], "cb-1 was answered, node-b renews its claim on cb-2"
