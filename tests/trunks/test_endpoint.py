"""The trunk's SIP endpoint against real sipp callers on loopback."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.peers import Carrier, free_udp_port, require, sipp_trace
from tests.sip_caller import RtpCounter, SipCaller, sip_caller
from trunks.voip.endpoint import SipEndpoint
from trunks.voip.inbound import CallState, InboundCall
from trunks.voip.media import RtpEngine
from trunks.voip.message import format_message, new_branch, parse_message, via
from trunks.voip.rtcp import is_rtcp
from trunks.voip.rtp import RtpPacket, build_rtp
from trunks.voip.sdp import build_sdp, read_offer

pytestmark = pytest.mark.slow
SIPP = Path(__file__).resolve().parents[1] / "sipp"


class App:
    """The application side: records calls and runs `behaviour` on each."""

    def __init__(self) -> None:
        self.calls: list[InboundCall] = []
        self.behaviour: Callable[[InboundCall], None] = answer_and_wait

    def __call__(self, call: InboundCall) -> None:
        self.calls.append(call)
        self.behaviour(call)


def answer_and_wait(call: InboundCall) -> None:
    call.answer()
    call.wait_ended(30)


def ring_and_wait(call: InboundCall) -> None:
    call.ring()
    call.wait_ended(30)


@pytest.fixture
def app() -> App:
    return App()


@pytest.fixture
def endpoint(engine: RtpEngine, app: App) -> Iterator[SipEndpoint]:
    sip = SipEndpoint("carrier-a", ("127.0.0.1", 0), engine, app, allowed={"127.0.0.1"})
    sip.start()
    yield sip
    sip.stop()


def sipp(scenario: Path, endpoint: SipEndpoint | Carrier, workdir: Path,
         local_ip: str = "127.0.0.1", timeout: int = 20) -> subprocess.CompletedProcess[str]:
    if isinstance(endpoint, Carrier):
        target = endpoint.address
    else:
        target = f"{endpoint.address[0]}:{endpoint.address[1]}"
    command = [require("sipp", "sip-tester"), target, "-sf", str(scenario), "-m", "1",
               "-s", "400", "-i", local_ip, "-p", str(free_udp_port()),
               "-mp", str(free_udp_port()), "-timeout", f"{timeout}s", "-timeout_error",
               "-nostdin", "-trace_err", "-trace_msg"]
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                          timeout=timeout + 10)
    if done.returncode != 0:
        errors = "".join(p.read_text() for p in workdir.glob("*_errors.log"))
        pytest.fail(f"sipp {scenario.name} failed ({done.returncode}):\n{errors[-3000:]}")
    return done


def trace(workdir: Path) -> list[tuple[str, str]]:
    """sipp's trace as (sent|received, first line | CSeq line)."""
    entries = []
    for direction, text in sipp_trace(workdir):
        lines = text.splitlines()
        cseq = next((line for line in lines if line.startswith("CSeq:")), "")
        entries.append((direction, f"{lines[0]} | {cseq}" if lines else ""))
    return entries


def test_answered_call_retransmits_200_until_ack(endpoint: SipEndpoint, app: App,
                                                 engine: RtpEngine, tmp_path: Path) -> None:
    sipp(SIPP / "uac_answered.xml", endpoint, tmp_path)
    messages = trace(tmp_path)
    ack = messages.index(("sent", next(m for d, m in messages if m.startswith("ACK "))))
    ok = ("received", "SIP/2.0 200 OK | CSeq: 1 INVITE")
    assert messages[:ack].count(ok) >= 2, "200 OK retransmitted while the ACK was missing"
    assert ok not in messages[ack:], "retransmission stopped by the ACK"
    [call] = app.calls
    assert call.wait_ended(5)
    assert call.end_reason == "caller hung up" and call.answered_at is not None
    assert call.called == "400" and call.caller == "caller"
    wait_for(lambda: engine.stream_count == 0, what="the call's RTP stream closed")


def test_reinvite_puts_the_call_on_hold(endpoint: SipEndpoint, app: App,
                                        tmp_path: Path) -> None:
    sipp(SIPP / "uac_hold.xml", endpoint, tmp_path)
    [call] = app.calls
    assert call.wait_ended(5) and call.on_hold
    assert call.end_reason == "caller hung up"
    origins = [re.search(r"^o=hotline (\d+) (\d+) ", text, re.M)
               for direction, text in sipp_trace(tmp_path)
               if direction == "received" and text.startswith("SIP/2.0 200")
               and "INVITE" in text.split("CSeq:")[1].split("\n")[0]]
    answer, held = sorted({(o[1], int(o[2])) for o in origins if o}, key=lambda o: o[1])
    assert held == (answer[0], answer[1] + 1), "RFC 3264 8: same session, next version"


def test_cancel_gets_200_and_487(endpoint: SipEndpoint, app: App, tmp_path: Path) -> None:
    app.behaviour = ring_and_wait
    sipp(SIPP / "uac_cancel.xml", endpoint, tmp_path)
    [call] = app.calls
    assert call.wait_ended(5) and call.end_reason == "cancelled by caller"
    assert call.answered_at is None and call.offer.payload_type == 8


def test_options_are_answered(endpoint: SipEndpoint, tmp_path: Path) -> None:
    sipp(SIPP / "uac_options.xml", endpoint, tmp_path)


def refusal(tmp_path: Path, method: str, status: int, to_tag: str = "") -> Path:
    template = (SIPP / "uac_expect_final.xml").read_text()
    path = tmp_path / f"{method.lower()}_{status}.xml"
    path.write_text(template.format(method=method, status=status, to_tag=to_tag))
    return path


def test_invite_from_a_stranger_is_forbidden(endpoint: SipEndpoint, app: App,
                                             tmp_path: Path) -> None:
    sipp(refusal(tmp_path, "INVITE", 403), endpoint, tmp_path, local_ip="127.0.0.2")
    assert app.calls == []


def test_bye_in_an_unknown_dialog_gets_481(endpoint: SipEndpoint, tmp_path: Path) -> None:
    sipp(refusal(tmp_path, "BYE", 481, to_tag=";tag=nosuchdialog"), endpoint, tmp_path)


def test_garbage_is_ignored(endpoint: SipEndpoint, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for junk in (b"", b"\x00\xff" * 50, b"INVITE sip:x SIP/2.0\r\n\r\n",
                     b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n"):
            sock.sendto(junk, endpoint.address)
    wait_for(lambda: endpoint.ignored == 4, what="junk counted")
    sipp(SIPP / "uac_options.xml", endpoint, tmp_path)


def test_no_ack_hangs_up_with_bye(engine: RtpEngine, app: App, tmp_path: Path) -> None:
    sip = SipEndpoint("carrier-a", ("127.0.0.1", 0), engine, app, allowed={"127.0.0.1"},
                      t1_s=0.02)
    sip.start()
    try:
        sipp(SIPP / "uac_no_ack.xml", sip, tmp_path)
    finally:
        sip.stop()
    [call] = app.calls
    assert call.state is CallState.ENDED and call.cut_off
    assert call.end_reason == "cut off: no ACK from the caller"


def test_call_through_a_carrier_follows_the_route_set(engine: RtpEngine, app: App,
                                                      tmp_path: Path) -> None:
    def answer_then_hang_up(call: InboundCall) -> None:
        call.answer()
        call.ended.wait(1.0)
        call.hangup()

    app.behaviour = answer_then_hang_up
    sip = SipEndpoint("carrier-a", ("127.0.0.1", 0), engine, app, allowed={"127.0.0.3"})
    sip.start()
    carrier = Carrier(tmp_path / "carrier", host="127.0.0.3", hotline=sip.address)
    try:
        carrier.start()
        sipp(SIPP / "uac_via_carrier.xml", carrier, tmp_path)
        sipp(refusal(tmp_path, "INVITE", 403), sip, tmp_path)  # the caller, not via the carrier
    finally:
        carrier.stop()
        sip.stop()
    [call] = app.calls
    assert call.end_reason == "hung up by hotline"
    assert carrier.requests("BYE") == 1 and carrier.requests("ACK") == 1


def test_bye_goes_out_at_once_not_after_t1(engine: RtpEngine, app: App) -> None:
    def answer_then_hang_up(call: InboundCall) -> None:
        call.answer()
        call.ended.wait(0.3)
        call.hangup()

    app.behaviour = answer_then_hang_up
    sip = SipEndpoint("carrier-a", ("127.0.0.1", 0), engine, app, allowed={"127.0.0.1"},
                      t1_s=2.0)  # a BYE held back until the first retransmission misses 1 s
    sip.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
            caller.bind(("127.0.0.1", 0))
            caller.settimeout(1.0)
            host, port = caller.getsockname()
            sdp = build_sdp((host, 40000), [0], None)
            invite_headers = [("Via", via((host, port), new_branch())),
                              ("From", f"<sip:caller@{host}>;tag=c1"), ("To", "<sip:400@hotline>"),
                              ("Call-ID", "bye-at-once"), ("CSeq", "1 INVITE"),
                              ("Contact", f"<sip:caller@{host}:{port}>"),
                              ("Content-Type", "application/sdp")]
            caller.sendto(format_message("INVITE sip:400@hotline SIP/2.0", invite_headers, sdp),
                          sip.address)
            responses = [parse_message(caller.recv(65535)) for _ in range(2)]
            assert [r.status_code for r in responses] == [100, 200]
            to = responses[1].value("To") or ""
            caller.sendto(format_message("ACK sip:400@hotline SIP/2.0", [
                ("Via", via((host, port), new_branch())), ("From", f"<sip:caller@{host}>;tag=c1"),
                ("To", to), ("Call-ID", "bye-at-once"), ("CSeq", "1 ACK")]), sip.address)
            bye = parse_message(caller.recv(65535))
    finally:
        sip.stop()
    assert bye.method == "BYE" and bye.call_id == "bye-at-once"


def test_nothing_is_sent_while_the_caller_holds_the_call(endpoint: SipEndpoint, app: App,
                                                         ) -> None:
    with sip_caller(endpoint.address, "hold-quiet") as (caller, rtp):
        caller.call()
        wait_for(lambda: rtp.count(0) >= 10, what="RTP before the hold")
        held = caller.reinvite("sendonly")
        assert held.status_code == 200 and b"a=recvonly" in held.content
        [call] = app.calls
        assert call.on_hold
        time.sleep(0.1)  # packets already on their way
        quiet_from = time.monotonic()
        time.sleep(0.6)
        assert rtp.count(quiet_from) == 0, "RFC 3264 6.1: no RTP towards a sendonly holder"
        inactive = caller.reinvite("inactive")
        assert b"a=inactive" in inactive.content
        time.sleep(0.3)
        assert rtp.count(quiet_from) == 0, "nor towards an inactive one"
        resumed = caller.reinvite("sendrecv")
        assert b"a=sendrecv" in resumed.content and not call.on_hold
        resumed_at = time.monotonic()
        wait_for(lambda: rtp.count(resumed_at) >= 10, what="RTP again after the resume")
        assert caller.hang_up().status_code == 200


def test_a_recvonly_offer_is_answered_sendonly(endpoint: SipEndpoint, app: App) -> None:
    with sip_caller(endpoint.address, "recvonly") as (caller, rtp):
        caller.call()
        answer = caller.reinvite("recvonly")
        assert b"a=sendonly" in answer.content and not app.calls[0].on_hold
        since = time.monotonic()
        wait_for(lambda: rtp.count(since) >= 5, what="RTP to a peer that only receives")
        caller.hang_up()


@pytest.mark.parametrize("profile", ["RTP/AVPF", "RTP/SAVP", "UDP/TLS/RTP/SAVPF"])
def test_an_offer_in_another_rtp_profile_gets_488(endpoint: SipEndpoint, app: App,
                                                  profile: str) -> None:
    with sip_caller(endpoint.address, f"profile-{profile}") as (caller, _):
        caller.request("INVITE", body=caller.sdp(profile=profile))
        refused = caller.final("INVITE")
        assert refused.status_code == 488 and refused.headers["To"]["tag"]
        caller.ack()
        caller.call()  # the same profile again, on a good offer, mid-call: 488, call goes on
        caller.request("INVITE", body=caller.sdp(profile=profile))
        assert caller.final("INVITE").status_code == 488
        caller.ack()
        assert caller.hang_up().status_code == 200
    assert len(app.calls) == 1


def test_a_caller_behind_nat_is_heard_and_answered_where_its_rtp_comes_from(
        endpoint: SipEndpoint, app: App) -> None:
    rtp = RtpCounter()
    caller = SipCaller(endpoint.address, 9, "behind-nat")  # its SDP names a private port
    try:
        ok = caller.call()
        offer = read_offer(ok)
        rtp.send(build_rtp(RtpPacket(0, 1, 160, 4242, b"\xff" * 160)),
                 (offer.address, offer.port))
        wait_for(lambda: rtp.count(0) >= 5, what="our RTP sent back to the NAT's port")
        assert caller.hang_up().status_code == 200
    finally:
        caller.close()
        rtp.close()


@pytest.mark.parametrize(("kind", "body", "digit"), [
    ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5"),
    ("application/dtmf-relay", b"Signal= 11\r\nDuration= 250\r\n", "#"),
    ("application/dtmf", b"*", "*"),
])
def test_a_key_sent_as_sip_info_reaches_the_call(endpoint: SipEndpoint, app: App, kind: str,
                                                 body: bytes, digit: str) -> None:
    with sip_caller(endpoint.address, f"info-{body!r}") as (caller, _):
        caller.call()
        caller.request("INFO", body=body, content_type=kind)
        assert caller.final("INFO").status_code == 200
        [call] = app.calls
        assert call.media.digits.get(timeout=2) == digit
        caller.request("INFO", body=body, content_type=kind)  # the next key, the same one
        assert caller.final("INFO").status_code == 200
        assert call.media.digits.get(timeout=2) == digit
        caller.request("INFO", body=b"<xml/>", content_type="application/xml")
        unsupported = caller.final("INFO")
        assert unsupported.status_code == 415 and "application/dtmf" in (
            unsupported.value("Accept") or "")
        caller.request("INFO")  # an empty INFO: a keep-alive
        assert caller.final("INFO").status_code == 200
        assert call.media.digits.empty()
        caller.hang_up()


def test_update_without_sdp_refreshes_and_with_sdp_holds(endpoint: SipEndpoint,
                                                        app: App) -> None:
    with sip_caller(endpoint.address, "update") as (caller, _):
        caller.call()
        caller.request("UPDATE")
        plain = caller.final("UPDATE")
        assert plain.status_code == 200 and not plain.content
        caller.request("UPDATE", body=caller.sdp("sendonly"))
        held = caller.final("UPDATE")
        assert held.status_code == 200 and b"a=recvonly" in held.content
        assert app.calls[0].on_hold
        caller.hang_up()


def timer_endpoint(engine: RtpEngine, app: App) -> SipEndpoint:
    """An endpoint that takes session timers of a few seconds, to test them quickly."""
    sip = SipEndpoint("carrier-a", ("127.0.0.1", 0), engine, app, allowed={"127.0.0.1"},
                      min_se_s=1)
    sip.start()
    return sip


def test_session_timer_too_short_gets_422(endpoint: SipEndpoint, app: App) -> None:
    with sip_caller(endpoint.address, "timer-422") as (caller, _):
        caller.request("INVITE", [("Session-Expires", "30"), ("Supported", "timer")],
                       caller.sdp())
        refused = caller.final("INVITE")
        assert refused.status_code == 422 and refused.value("Min-SE") == "90"
    assert app.calls == []


def test_a_caller_that_stops_refreshing_is_cut_off(engine: RtpEngine, app: App) -> None:
    sip = timer_endpoint(engine, app)
    try:
        with sip_caller(sip.address, "timer-uac") as (caller, _):
            ok = caller.call([("Session-Expires", "3;refresher=uac"), ("Supported", "timer")])
            assert ok.value("Session-Expires") == "3;refresher=uac"
            assert ok.value("Require") == "timer"
            assert "timer" in (ok.value("Supported") or "")
            refreshed = time.monotonic()
            caller.request("UPDATE", [("Session-Expires", "3;refresher=uac"),
                                      ("Supported", "timer")])
            assert caller.final("UPDATE").value("Session-Expires") == "3;refresher=uac"
            bye = caller.wait_request("BYE", 5)  # 3 s less a third after the refresh
            assert 1.7 < time.monotonic() - refreshed < 3.0
        [call] = app.calls
        assert call.wait_ended(2)
        assert call.end_reason == "cut off: no session refresh within 3 s"
        assert bye.call_id == "timer-uac"
    finally:
        sip.stop()


@pytest.mark.parametrize("allow", ["INVITE, ACK, BYE, CANCEL, UPDATE", "INVITE, ACK, BYE"])
def test_we_refresh_when_we_are_the_refresher(engine: RtpEngine, app: App,
                                              allow: str) -> None:
    sip = timer_endpoint(engine, app)
    try:
        with sip_caller(sip.address, f"timer-uas-{len(allow)}") as (caller, _):
            ok = caller.call([("Session-Expires", "2;refresher=uas"), ("Supported", "timer"),
                              ("Allow", allow)])
            assert ok.value("Session-Expires") == "2;refresher=uas"
            method = "UPDATE" if "UPDATE" in allow else "INVITE"
            for _ in range(3):  # every half interval, each answered: the call lives on
                refresh = caller.wait_request(method, 2)
                assert refresh.value("Session-Expires") == "2;refresher=uas"
            assert all(r.method != "BYE" for r in caller.requests)
            if method == "INVITE":
                caller.wait_request("ACK", 1)  # for the third refresh's 200
                assert sum(r.method == "ACK" for r in caller.requests) == 3
                assert caller.requests[0].content, "a re-INVITE refresh offers our SDP"
            assert caller.hang_up().status_code == 200
        assert app.calls[0].end_reason == "caller hung up"
    finally:
        sip.stop()


def test_a_refresh_answered_481_ends_the_call(engine: RtpEngine, app: App) -> None:
    sip = timer_endpoint(engine, app)
    try:
        with sip_caller(sip.address, "timer-481") as (caller, _):
            caller.call([("Session-Expires", "2;refresher=uas"), ("Supported", "timer"),
                         ("Allow", "INVITE, ACK, BYE, UPDATE")])
            caller.sock.settimeout(3)
            update = parse_message(caller.sock.recv(65535))
            assert update.method == "UPDATE"
            caller.reply(update, 481, "Call/Transaction Does Not Exist")
            caller.wait_request("BYE", 2)
        [call] = app.calls
        assert call.wait_ended(2)
        assert call.end_reason == "cut off: session refresh answered 481"
    finally:
        sip.stop()


def test_an_offer_with_rtcp_mux_gets_reports_on_the_rtp_port(endpoint: SipEndpoint,
                                                            app: App) -> None:
    with sip_caller(endpoint.address, "rtcp-mux") as (caller, rtp):
        caller.request("INVITE", body=caller.sdp() + b"a=rtcp-mux\r\n")
        ok = caller.final("INVITE")
        caller.to = ok.value("To") or ""
        caller.ack()
        assert b"a=rtcp-mux" in ok.content
        assert app.calls[0].media.rtcp.mux
        wait_for(lambda: any(is_rtcp(data) for _, data, _ in list(rtp.arrivals)),
                 timeout=8, what="an RTCP report among the RTP")  # first within 3.1 s
        caller.hang_up()


def test_sipp_carrier_refreshes_its_session_timer(endpoint: SipEndpoint, app: App,
                                                 tmp_path: Path) -> None:
    sipp(SIPP / "uac_session_timer.xml", endpoint, tmp_path)
    [call] = app.calls
    assert call.wait_ended(5) and call.end_reason == "caller hung up"
    assert call.timer is not None and call.timer.interval_s == 1800


def test_sipp_avpf_offer_gets_488(endpoint: SipEndpoint, app: App, tmp_path: Path) -> None:
    sipp(SIPP / "uac_avpf.xml", endpoint, tmp_path)
    assert app.calls == []
    assert ("received", "SIP/2.0 488 Not Acceptable Here | CSeq: 1 INVITE") in trace(tmp_path)


def test_a_required_extension_we_lack_gets_420(endpoint: SipEndpoint, app: App) -> None:
    with sip_caller(endpoint.address, "require-100rel") as (caller, _):
        caller.request("INVITE", [("Require", "100rel, timer")], caller.sdp())
        refused = caller.final("INVITE")
        assert refused.status_code == 420 and refused.value("Unsupported") == "100rel"
        caller.ack()
        caller.call([("Require", "timer"), ("Session-Expires", "1800")])  # timer we know
        caller.hang_up()
    assert len(app.calls) == 1


def test_a_488_says_why_in_a_warning(endpoint: SipEndpoint) -> None:
    with sip_caller(endpoint.address, "warning") as (caller, _):
        g722_only = caller.sdp().replace(b"RTP/AVP 0 101", b"RTP/AVP 9 101").replace(
            b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:9 G722/8000")
        caller.request("INVITE", body=g722_only)
        refused = caller.final("INVITE")
        assert refused.status_code == 488
        assert (refused.value("Warning") or "").startswith('399 hotline "no G.711 codec')


def test_a_draining_endpoint_refuses_new_calls_and_keeps_its_own(endpoint: SipEndpoint,
                                                                 app: App) -> None:
    with sip_caller(endpoint.address, "up-before-drain") as (caller, _):
        caller.call()
        endpoint.draining = True
        with sip_caller(endpoint.address, "after-drain") as (late, _):
            late.request("INVITE", body=late.sdp())
            refused = late.final("INVITE")
            assert refused.status_code == 503 and refused.value("Retry-After") == "30"
            late.ack()
            late.request("OPTIONS")
            assert late.final("OPTIONS").status_code == 503, "the front door's probe too"
        caller.request("OPTIONS")  # inside the call: still 200
        assert caller.final("OPTIONS").status_code == 200
        assert caller.hang_up().status_code == 200
    assert len(app.calls) == 1 and app.calls[0].end_reason == "caller hung up"


def test_a_wildcard_bind_announces_the_advertised_addresses(app: App) -> None:
    """Bound to every interface, the endpoint's headers and SDP say where it is reached
    (0.0.0.0 in an SDP would even mean hold)."""
    engine = RtpEngine("0.0.0.0", advertise="127.0.0.1")
    engine.start()
    sip = SipEndpoint("carrier-a", ("0.0.0.0", 0), engine, app, allowed={"127.0.0.1"},
                      advertise=("127.0.0.1", 5999))
    sip.start()
    try:
        with sip_caller(("127.0.0.1", sip.bound[1]), "advertised") as (caller, rtp):
            answer = caller.call()
            assert answer.value("Contact") == "<sip:hotline@127.0.0.1:5999>"
            offer = read_offer(answer)
            assert (offer.address, offer.port) == app.calls[0].media.local_address
            assert offer.address == "127.0.0.1" and not offer.on_hold
            since = time.monotonic()
            wait_for(lambda: rtp.count(since) >= 5, what="RTP from the wildcard-bound stream")
            caller.hang_up()
    finally:
        sip.stop()
        engine.stop()
