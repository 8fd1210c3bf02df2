"""Malformed and unusual requests sent to a running endpoint on loopback, from a trunk
address (127.0.0.1) and from a stranger (127.0.0.2)."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from trunks.voip.endpoint import SipEndpoint
from trunks.voip.inbound import InboundCall
from trunks.voip.media import RtpEngine
from trunks.voip.message import format_message, new_branch, via

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
             wait_s: float = 2.0) -> list[bytes]:
    """Send `data` from `host` and return what came back until `QUIET_S` of silence
    (or `wait_s` for the first answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.sendto(data, endpoint.address)
        answers: list[bytes] = []
        sock.settimeout(wait_s)
        while True:
            try:
                answers.append(sock.recv(65535))
            except TimeoutError:
                return answers
            sock.settimeout(QUIET_S)


def statuses(answers: list[bytes]) -> list[int]:
    """The status codes (a 400 may echo headers too malformed to parse back)."""
    return [int(answer.split(b" ", 2)[1]) for answer in answers]


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


RFC4475 = Path(__file__).parents[1] / "data" / "rfc4475"
BAD_REQUEST = ([400], [400])
ANSWERS = {  # name: (statuses to a trunk address, statuses to a stranger)
    "wsinv": ([481], [481]), "esc01": ([100, 486], [403]),
    "longreq": ([100, 486], [403]), "inv2543": ([100, 486], [403]),
    "invut": ([415], [403]),
    "intmeth": ([501], [501]), "escnull": ([501], [501]), "esc02": ([501], [501]),
    "dblreq": ([501], [501]), "mpart01": ([501], [501]), "regbadct": ([501], [501]),
    "lwsdisp": ([200], [200]), "semiuri": ([200], [200]), "transports": ([200], [200]),
    "badbranch": ([200], [200]), "zeromf": ([200], [200]),
    "unkscm": ([416], [416]), "novelsc": ([416], [416]),
    "badvers": ([505], [505]),
    "unreason": ([], []), "noreason": ([], []), "bigcode": ([], []), "insuf": ([], []),
    **dict.fromkeys(["badinv01", "clerr", "scalar02", "scalarlg", "quotbal", "ltgtruri",
                     "lwsruri", "lwsstart", "trws", "escruri", "baddate", "badaspec", "baddn",
                     "mismatch01", "mismatch02", "multi01", "mcl01"], BAD_REQUEST),
}


def test_every_torture_message_is_expected() -> None:
    assert sorted(ANSWERS) == sorted(p.stem for p in RFC4475.glob("*.sip"))


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_rfc4475_messages_get_the_right_answer(endpoint: SipEndpoint, name: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    data = (RFC4475 / f"{name}.sip").read_bytes()
    trunk, stranger = ANSWERS[name]
    header = re.search(rb"^(?:Call-ID|i)\s*:\s*(\S+)", data, re.MULTILINE | re.IGNORECASE)
    # the stranger first: the trunk's copy may start a call, and then the stranger's would
    # be a retransmission of it
    for host, expected in ((STRANGER, stranger), (TRUNK, trunk)):
        answers = exchange(endpoint, data, host, wait_s=2.0 if expected else QUIET_S)
        assert list(dict.fromkeys(statuses(answers))) == expected, (host, answers)
        assert all(header is not None and header[1] in answer for answer in answers)
    assert still_answers_options(endpoint)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "the loop raised"


def test_refusals_of_a_stranger_are_logged_once_and_wire_text_short(
        endpoint: SipEndpoint, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert statuses(exchange(endpoint, invite(SDP.format(m="m=audio 6000 RTP/AVP 0")),
                                 STRANGER)) == [403]
    refusals = [r.getMessage() for r in caplog.records if r.name == "trunks.voip.refusals"]
    assert refusals == ["SIP endpoint carrier-a refused an INVITE from 127.0.0.2 "
                        "(not a trunk address)"]
    huge = invite(SDP.format(m="m=video 6000 RTP/AVP 0")).replace(
        b"Call-ID: ", b"Call-ID: " + b"x" * 10240)
    assert statuses(exchange(endpoint, huge)) == [488]
    assert max(len(r.getMessage()) for r in caplog.records) < 400


@pytest.mark.parametrize(("host", "m_line", "code"), [
    (STRANGER, "m=audio 6000 RTP/AVP 0", 403), (TRUNK, "m=video 6000 RTP/AVP 0", 488),
    (TRUNK, "m=audio x RTP/AVP 0", 400)])
def test_a_refused_invite_gets_a_to_tag_the_same_on_retransmission(
        endpoint: SipEndpoint, host: str, m_line: str, code: int) -> None:
    """RFC 3261 8.2.6.2: every final response to an INVITE carries a To tag, so the
    carrier can match the caller's ACK to it; a retransmitted INVITE gets the same one."""
    request = invite(SDP.format(m=m_line))
    tags = []
    for _ in range(2):
        [answer] = exchange(endpoint, request, host)
        assert statuses([answer]) == [code]
        to = next(line for line in answer.split(b"\r\n") if line.startswith(b"To:"))
        assert b";tag=" in to, to
        tags.append(to.split(b";tag=")[1])
    assert tags[0] == tags[1] and tags[0]
