"""Outgoing calls (forwarding to staff) against sipp phones on loopback."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.peers import Carrier, Phone
from tests.trunks.conftest import no_calls
from trunks.voip.endpoint import SipEndpoint
from trunks.voip.media import RtpEngine
from trunks.voip.message import (
    SDP,
    Message,
    build_response,
    format_message,
    new_branch,
    parse_message,
    via,
)
from trunks.voip.outbound import Outcome
from trunks.voip.sdp import build_sdp

pytestmark = pytest.mark.slow


@pytest.fixture
def trunk(engine: RtpEngine) -> Iterator[Callable[..., SipEndpoint]]:
    endpoints: list[SipEndpoint] = []

    def make(proxy: tuple[str, int], **options: object) -> SipEndpoint:
        sip = SipEndpoint("carrier-a", ("127.0.0.1", 0), engine, no_calls, allowed=set(),
                          proxy=proxy, **options)  # type: ignore[arg-type]
        sip.start()
        endpoints.append(sip)
        return sip

    yield make
    for sip in endpoints:
        sip.stop()


def test_answered_call_is_acked_and_hung_up(trunk: Callable[..., SipEndpoint],
                                            tmp_path: Path) -> None:
    phone = Phone("uas_answer.xml", tmp_path)
    call = trunk(phone.address).place_call("13800000001")
    assert call.wait(5) is Outcome.ANSWERED
    assert call.provisional == 180 and call.status == 200
    assert call.media.remote is not None, "media pointed at the phone's SDP"
    assert call.remote_target.startswith("sip:staff@127.0.0.1:")
    call.hangup()
    phone.finish()
    [invite] = phone.received("INVITE")
    assert "INVITE sip:13800000001@127.0.0.1 SIP/2.0" in invite
    assert "m=audio" in invite and "a=rtpmap:101 telephone-event/8000" in invite
    [ack] = phone.received("ACK")
    assert f"ACK {call.remote_target} SIP/2.0" in ack and ";tag=" in ack.split("To:")[1]
    assert len(phone.received("BYE")) == 1


@pytest.mark.parametrize(("scenario", "outcome", "status"), [
    ("uas_busy.xml", Outcome.REFUSED, 486),
    ("uas_unavailable.xml", Outcome.TRUNK_FAILED, 503),
])
def test_failures_are_acked_and_classified(trunk: Callable[..., SipEndpoint], tmp_path: Path,
                                           scenario: str, outcome: Outcome,
                                           status: int) -> None:
    failures: list[str] = []
    phone = Phone(scenario, tmp_path)
    call = trunk(phone.address, on_trunk_failure=failures.append).place_call("1001")
    assert call.wait(5) is outcome and call.status == status
    assert call.ended.is_set()
    phone.finish()  # the phone got its ACK
    assert failures == ([f"INVITE to 1001: {status} Service Unavailable"]
                        if outcome is Outcome.TRUNK_FAILED else [])


def test_carrier_authentication_is_answered_once(trunk: Callable[..., SipEndpoint],
                                                  tmp_path: Path) -> None:
    phone = Phone("uas_answer.xml", tmp_path)
    carrier = Carrier(tmp_path / "carrier", staff=phone.address, auth_password="s3cret")
    carrier.start()
    try:
        host, port = carrier.address.split(":")
        call = trunk((host, int(port)), credentials=("hotline", "s3cret")).place_call("1002")
        assert call.wait(5) is Outcome.ANSWERED, call.reason
        assert call.route, "the carrier record-routed; ACK and BYE go through it"
        # Kamailio's two workers may relay a BYE sent at once ahead of the ACK, which the
        # sipp phone cannot take; hang up once the carrier has handled the ACK.
        wait_for(lambda: carrier.requests("ACK") == 1, what="ACK relayed by the carrier")
        call.hangup()
        phone.finish()
    finally:
        carrier.stop()
    assert carrier.requests("INVITE") == 2, "challenged once, then accepted"
    # Kamailio's tm absorbs the hop-by-hop ACK of its own 407 before its script logs it;
    # the one logged is the 2xx ACK, which the route set sent through the carrier.
    assert carrier.requests("ACK") == 1 and carrier.requests("BYE") == 1


def test_wrong_credentials_end_as_a_refusal(trunk: Callable[..., SipEndpoint],
                                            tmp_path: Path) -> None:
    carrier = Carrier(tmp_path / "carrier", staff=("127.0.0.1", 9), auth_password="s3cret")
    carrier.start()
    try:
        host, port = carrier.address.split(":")
        call = trunk((host, int(port)), credentials=("hotline", "wrong")).place_call("1002")
        assert call.wait(5) is Outcome.REFUSED and call.status == 407
    finally:
        carrier.stop()
    assert carrier.requests("INVITE") == 2, "one retry with credentials, no more"


def test_early_media_then_answer(trunk: Callable[..., SipEndpoint], tmp_path: Path) -> None:
    phone = Phone("uas_early_media.xml", tmp_path)
    call = trunk(phone.address).place_call("1003")
    assert call.wait(5) is Outcome.ANSWERED
    assert call.provisional == 183 and call.early_media
    call.hangup()
    phone.finish()


def test_ring_timeout_cancels(trunk: Callable[..., SipEndpoint], tmp_path: Path) -> None:
    phone = Phone("uas_ring_forever.xml", tmp_path)
    call = trunk(phone.address).place_call("1004", ring_timeout_s=1.0)
    assert call.wait(5) is Outcome.CANCELLED and call.reason == "no answer within 1 s"
    phone.finish()  # CANCEL answered, 487 ACKed


def test_silent_trunk_fails_fast_and_tells_the_monitor(
        trunk: Callable[..., SipEndpoint]) -> None:
    failures: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        sip = trunk(silent.getsockname(), on_trunk_failure=failures.append,
                    provisional_timeout_s=0.3)
        call = sip.place_call("1005")
        assert call.wait(3) is Outcome.TRUNK_FAILED
    assert call.reason == "no provisional reply within 0.3 s"
    assert failures == ["INVITE to 1005: no provisional reply within 0.3 s"]


def test_a_closed_port_fails_at_once_by_icmp(trunk: Callable[..., SipEndpoint]) -> None:
    """A killed carrier's port answers ICMP port unreachable: no waiting for a 100."""
    failures: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        address = closed.getsockname()
    sip = trunk(address, on_trunk_failure=failures.append, provisional_timeout_s=5.0)
    call = sip.place_call("1006")
    assert call.wait(1.0) is Outcome.TRUNK_FAILED, "failed well before the 5 s timeout"
    assert call.reason == "ICMP: connection refused"
    assert failures == ["INVITE to 1006: ICMP: connection refused"]
    sip.place_call("1007").wait(1.0)  # the error of a datagram that is not an INVITE of ours
    assert len(failures) == 2


def test_place_call_needs_a_proxy(engine: RtpEngine) -> None:
    sip = SipEndpoint("carrier-a", ("127.0.0.1", 0), engine, no_calls, allowed=set())
    try:
        with pytest.raises(ValueError, match="trunk carrier-a has no proxy"):
            sip.place_call("1")
    finally:
        sip.stop()


def test_ended_calls_are_forgotten_after_the_linger(trunk: Callable[..., SipEndpoint],
                                                    tmp_path: Path) -> None:
    phone = Phone("uas_busy.xml", tmp_path)
    sip = trunk(phone.address, linger_s=0.5)
    call = sip.place_call("1006")
    assert call.wait(5) is Outcome.REFUSED
    phone.finish()
    assert call.call_id in sip._outbound, "kept a while, to ACK a retransmitted final"
    wait_for(lambda: call.call_id not in sip._outbound, timeout=5, what="the call forgotten")


def _reply(request: bytes, status: str, *extra: str) -> bytes:
    """A response to `request` (raw SIP), copying its transaction headers."""
    lines = request.decode().split("\r\n")
    copied = [line for line in lines
              if line.split(":")[0].lower() in ("via", "from", "call-id", "cseq")]
    to = next(line for line in lines if line.lower().startswith("to:"))
    return "\r\n".join([f"SIP/2.0 {status}", *copied, f"{to};tag=carrier1", *extra,
                        "Content-Length: 0", "", ""]).encode()


def test_a_retransmitted_challenge_is_acked_again(trunk: Callable[..., SipEndpoint]) -> None:
    # A carrier whose 407 crossed our authenticated retry retransmits it: the old
    # transaction (CSeq 1, first branch) must be ACKed again, the retry left alone.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as carrier:
        carrier.bind(("127.0.0.1", 0))
        carrier.settimeout(3)
        sip = trunk(carrier.getsockname(), credentials=("hotline", "secret"))
        call = sip.place_call("1007")
        first, source = carrier.recvfrom(65535)
        challenge = _reply(first, "407 Proxy Authentication Required",
                           'Proxy-Authenticate: Digest realm="carrier", nonce="abc"')
        carrier.sendto(challenge, source)
        ack, _ = carrier.recvfrom(65535)
        retry, _ = carrier.recvfrom(65535)
        assert ack.startswith(b"ACK ") and b"CSeq: 1 ACK" in ack
        assert retry.startswith(b"INVITE ") and b"CSeq: 2 INVITE" in retry
        assert b"Proxy-Authorization: Digest" in retry
        carrier.sendto(challenge, source)  # the retransmission
        again, _ = carrier.recvfrom(65535)
        assert again.startswith(b"ACK ") and b"CSeq: 1 ACK" in again
        first_branch = first.split(b"branch=")[1].split(b"\r\n")[0]
        assert first_branch in again, "ACKed in the challenged INVITE's transaction"
        assert call.outcome is Outcome.PENDING, "the retry is still waiting for its answer"
        carrier.sendto(_reply(retry, "486 Busy Here"), source)
        assert call.wait(3) is Outcome.REFUSED and call.status == 486
        final_ack, _ = carrier.recvfrom(65535)
        assert final_ack.startswith(b"ACK ") and b"CSeq: 2 ACK" in final_ack


def test_the_callee_may_hold_resume_and_send_info(trunk: Callable[..., SipEndpoint]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
        phone.bind(("127.0.0.1", 0))
        phone.settimeout(3)
        host, port = phone.getsockname()
        sip = trunk((host, port))
        call = sip.place_call("1008")
        invite = parse_message(phone.recvfrom(65535)[0])
        ok = build_response(invite, 200, "OK", [("Contact", f"<sip:staff@{host}:{port}>"),
                                                ("Content-Type", SDP)],
                            build_sdp((host, 40010), [0], 101), to_tag="staff1")
        phone.sendto(ok, sip.address)
        assert call.wait(3) is Outcome.ANSWERED
        assert parse_message(phone.recv(65535)).method == "ACK"

        def request(method: str, cseq: int, body: bytes = b"",
                    kind: str = SDP) -> Message:
            phone.sendto(format_message(f"{method} sip:hotline@127.0.0.1 SIP/2.0", [
                ("Via", via((host, port), new_branch())), ("From", f"<sip:1008@{host}>;tag=staff1"),
                ("To", call.from_header), ("Call-ID", call.call_id), ("CSeq", f"{cseq} {method}"),
                ("Contact", f"<sip:staff@{host}:{port}>"),
                *([("Content-Type", kind)] if body else [])], body), sip.address)
            return None if method == "ACK" else parse_message(phone.recv(65535))

        held = request("INVITE", 2, build_sdp((host, 40010), [0], 101, "sendonly"))
        assert held is not None and held.status_code == 200 and b"a=recvonly" in held.content
        assert call.on_hold and not call.media.sending
        ours = [re.search(rb"^o=hotline (\d+) (\d+)", m.content, re.M) for m in (invite, held)]
        assert ours[0] and ours[1] and ours[1][1] == ours[0][1], "one SDP session per call"
        request("ACK", 2)
        resumed = request("INVITE", 3, build_sdp((host, 40010), [0], 101))
        assert resumed is not None and b"a=sendrecv" in resumed.content
        assert not call.on_hold and call.media.sending
        request("ACK", 3)
        info = request("INFO", 4, b"Signal=1\r\n", "application/dtmf-relay")
        assert info is not None and info.status_code == 200
        call.hangup()
        assert parse_message(phone.recv(65535)).method == "BYE"
