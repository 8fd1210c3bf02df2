"""Taking up a dead node's bridged call when a peer will not have it: a leg that refuses
our re-INVITE (481: it forgot the dialog) or does not answer it in time makes the node
hang up both legs and fall back to closing the call and calling the caller back."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import cast

import pytest

from ivr.calls.handler import CallHandler
from ivr.calls.recovery import Recovery
from ivr.records import CallRecord
from tests.conftest import wait_for
from tests.sip_caller import sip_caller
from trunks.voip.endpoint import SipEndpoint
from trunks.voip.inbound import InboundCall
from trunks.voip.leg_state import OUTBOUND, LegState
from trunks.voip.media import RtpEngine
from trunks.voip.message import build_response, parse_message


@pytest.fixture
def endpoints(engine: RtpEngine) -> Iterator[tuple[SipEndpoint, SipEndpoint]]:
    """The dead node's endpoint for the trunk, and the survivor's."""
    answered: list[InboundCall] = []

    def answer(call: InboundCall) -> None:
        answered.append(call)
        call.answer()
        call.wait_ended(30)

    dead = SipEndpoint("carrier-a", ("127.0.0.1", 0), engine, answer, allowed={"127.0.0.1"})
    survivor = SipEndpoint("carrier-a", ("127.0.0.1", 0), engine, answer,
                           allowed={"127.0.0.1"})
    dead.start()
    survivor.start()
    yield dead, survivor
    survivor.stop()
    dead.stop()


class RefusingPhone:
    """A staff phone that forgot the dialog: 481 to any request but ACK, recorded."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.received: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            request = parse_message(data)
            self.received.append(request.method)
            if request.method != "ACK":
                self.sock.sendto(build_response(request, 481, "Call/Transaction Does Not Exist"),
                                 source)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_a_leg_that_refuses_the_reinvite_ends_both_and_falls_back(
        endpoints: tuple[SipEndpoint, SipEndpoint]) -> None:
    dead, survivor = endpoints
    phone = RefusingPhone()
    fell_back = threading.Event()
    caller_gone: list[bool] = []

    def fallback(gone: bool) -> None:
        caller_gone.append(gone)
        fell_back.set()

    try:
        with sip_caller(dead.address, "taken-up") as (caller, _):
            caller.call()
            wait_for(lambda: bool(dead.calls), what="the dead node's call")
            caller_state = dead.calls[0].leg_state()
            host, port = phone.sock.getsockname()
            staff_state = LegState(OUTBOUND, "carrier-a", "staff-leg", "ourtag", 1, 5, 5, 0,
                                   101, False, number="1001", uri="sip:1001@127.0.0.1",
                                   caller_id="hotline", remote_tag="phonetag",
                                   remote_target=f"sip:staff@{host}:{port}")
            record = CallRecord("taken-up", "carrier-a", "caller", "400", 1000.0,
                                node="node-a", path=["connect"], forwarded_to="bob")
            recovery = Recovery({"carrier-a": survivor},
                                {"carrier-a": cast(CallHandler, object())}, "node-b", "run-b",
                                wait_s=2.0)
            recovery(record, {"caller": caller_state.as_dict(),
                              "staff": staff_state.as_dict()}, fallback)
            assert fell_back.wait(5), "closed and called back instead"
            reinvite = caller.wait_request("INVITE", 2)  # read only now: never answered
            assert f"{survivor.address[1]}" in (reinvite.value("Contact") or "")
            caller.wait_request("BYE", 5)
        assert caller_gone == [False], "the caller did not say it had hung up"
        time.sleep(1.0)  # T1 twice: a BYE would have come and been retransmitted
        assert phone.received == ["INVITE"], "no BYE into a dialog the phone has not got"
        assert record.node == "node-a" and record.moved == [], "the call did not move"
    finally:
        phone.close()


def test_a_state_that_cannot_be_read_falls_back_at_once(
        endpoints: tuple[SipEndpoint, SipEndpoint]) -> None:
    _, survivor = endpoints
    fell_back: list[bool] = []
    record = CallRecord("unreadable", "carrier-a", "caller", "400", 1000.0)
    recovery = Recovery({"carrier-a": survivor}, {}, "node-b", "run-b")
    recovery(record, {"caller": {"kind": "inbound"}, "staff": {}}, fell_back.append)
    recovery(record, {"caller": {**LegState(OUTBOUND, "carrier-b", "x", "t", 1, 1, 1, 0, None,
                                            False).as_dict()},
                      "staff": {}}, fell_back.append)
    assert fell_back == [False, False]
