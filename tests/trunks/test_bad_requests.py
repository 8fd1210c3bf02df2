"""Malformed and unusual requests sent to a running endpoint on loopback, from a trunk
address (127.0.0.1) and from a stranger (127.0.0.2)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from trunks.voip.endpoint import SipEndpoint
from trunks.voip.inbound import InboundCall
from trunks.voip.media import RtpEngine
from trunks.voip.message import Message, format_message, new_branch, parse_message, via

TRUNK, STRANGER = "127.0.0.1", "127.0.0.2"
QUIET_S = 0.3
"""How long to listen for an answer that must not come."""


def reject(call: InboundCall) -> None:
    call.reject(486, "Busy Here")


@pytest.fixture
def endpoint(engine: RtpEngine) -> Iterator[SipEndpoint]:
    sip = SipEndpoint("carrier-a", ("127.0.0.1", 0), engine, reject, allowed={TRUNK})
    sip.start()
    yield sip
    sip.stop()


def exchange(endpoint: SipEndpoint, data: bytes, host: str = TRUNK,
             wait_s: float = 2.0) -> list[Message]:
    """Send `data` from `host` and return what came back until `QUIET_S` of silence
    (or `wait_s` for the first answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.sendto(data, endpoint.address)
        answers: list[Message] = []
        sock.settimeout(wait_s)
        while True:
            try:
                answers.append(parse_message(sock.recv(65535)))
            except TimeoutError:
                return answers
            sock.settimeout(QUIET_S)


def statuses(answers: list[Message]) -> list[int]:
    return [a.status_code for a in answers]


def still_answers_options(endpoint: SipEndpoint) -> bool:
    options = format_message(f"OPTIONS sip:{TRUNK} SIP/2.0", [
        ("Via", via((TRUNK, 5999), new_branch())), ("From", "<sip:probe@127.0.0.1>;tag=p"),
        ("To", f"<sip:{TRUNK}>"), ("Call-ID", new_branch()), ("CSeq", "1 OPTIONS")])
    return statuses(exchange(endpoint, options)) == [200]


def invite(body: str, content_type: str = "application/sdp") -> bytes:
    return format_message("INVITE sip:400@127.0.0.1 SIP/2.0", [
        ("Via", f"SIP/2.0/UDP {TRUNK}:5062;branch={new_branch()}"),
        ("From", "<sip:caller@127.0.0.1>;tag=1"), ("To", "<sip:400@127.0.0.1>"),
        ("Call-ID", new_branch()), ("CSeq", "1 INVITE"), ("Content-Type", content_type)],
        body.encode())


SDP = ("v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "{m}\r\na=rtpmap:0 PCMU/8000\r\n")


@pytest.mark.parametrize("content_type", ["application/sdp", "application/SDP",
                                          "application/sdp; charset=utf-8"])
@pytest.mark.parametrize("m_line", ["m=audio x RTP/AVP 0", "m=audio", "m=audio 6000 RTP/XYZ 0",
                                    "m=audio 99999 RTP/AVP 0"])
def test_invite_with_a_malformed_m_line_is_refused(endpoint: SipEndpoint, content_type: str,
                                                   m_line: str) -> None:
    answers = exchange(endpoint, invite(SDP.format(m=m_line), content_type))
    assert statuses(answers) in ([400], [488]), answers
    assert endpoint.calls == []
    assert still_answers_options(endpoint)


@pytest.mark.parametrize("content_type", ["application/SDP", "Application/Sdp;charset=utf-8"])
def test_sdp_content_type_is_case_insensitive_with_parameters(endpoint: SipEndpoint,
                                                              content_type: str) -> None:
    answers = exchange(endpoint, invite(SDP.format(m="m=audio 6000 RTP/AVP 0"), content_type))
    assert statuses(answers) == [100, 486]
