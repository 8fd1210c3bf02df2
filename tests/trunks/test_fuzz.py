"""Property tests: random and mutated datagrams never make the parser or the SDP reader
raise anything but their documented errors (SipParseError / SdpError, both ValueError)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trunks.voip.message import SipParseError, parse_message
from trunks.voip.sdp import SdpError, read_offer

DATA = Path(__file__).parents[1] / "data"
SEEDS = sorted(p.read_bytes() for p in [*DATA.glob("*.sip"), *DATA.glob("rfc4475/*.sip")])
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
"""Deterministic (the same examples every run) and a few seconds long."""
WIRE_BYTES = [b"\r\n", b"\r\n\r\n", b":", b";", b",", b"<", b">", b'"', b"\\", b" ", b"\t",
              b"=", b"/", b"@", b"\x00", b"\xff", b"\xc3", b"m=audio ", b"c=IN IP4 ",
              b"a=rtpmap:", b"Content-Length: ", b"l: 99999", b"SIP/2.0", b"v: ",
              b"tag=", b"branch=", b"0", b"65536", b"-1"]


def check(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError:
        return
    with contextlib.suppress(SdpError):
        read_offer(message)
    # the properties the endpoint reads must not fail either
    _ = (message.call_id, message.cseq, message.branch, message.uri, message.content_type,
         message.headers["To"]["tag"], message.headers["From"]["tag"])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "cut"]))
        piece = draw(st.one_of(st.sampled_from(WIRE_BYTES), st.binary(max_size=4)))
        if kind == "insert":
            data[at:at] = piece
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 20))]
        elif kind == "replace":
            data[at:at + len(piece)] = piece
        else:
            data = data[:at]
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_messages_raise_only_documented_errors(data: bytes) -> None:
    check(data)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_documented_errors(data: bytes) -> None:
    check(data)


@FUZZ
@given(st.lists(st.sampled_from(WIRE_BYTES) | st.text(max_size=8).map(str.encode),
                max_size=40))
def test_random_wire_tokens_after_a_request_line(parts: list[bytes]) -> None:
    check(b"INVITE sip:400@127.0.0.1 SIP/2.0\r\n" + b"".join(parts) + b"\r\n\r\n")


@FUZZ
@given(st.lists(st.sampled_from([b"v=0", b"o=- 1 1 IN IP4 127.0.0.1", b"s=-", b"t=0 0",
                                 b"c=IN IP4 127.0.0.1", b"c=IN IP6 ::1", b"c=IN IP4",
                                 b"m=audio 6000 RTP/AVP 0 8 101", b"m=audio 0 RTP/AVP 0",
                                 b"m=video 7000 RTP/AVP 31", b"m=audio x RTP/AVP",
                                 b"a=rtpmap:101 telephone-event/8000", b"a=rtpmap:0",
                                 b"a=fmtp:101 0-15", b"a=sendonly", b"a=inactive", b"k=prompt",
                                 b"b=AS:64", b"r=1", b"z=1 2 3", b"a=rtpmap:8 PCMA/8000/1"])
                | st.binary(max_size=12), max_size=14),
       st.sampled_from(["application/sdp", "Application/SDP;x=1", "text/plain", ""]))
def test_sdp_bodies_raise_only_documented_errors(lines: list[bytes], content_type: str) -> None:
    body = b"".join(line + b"\r\n" for line in lines)
    head = (b"INVITE sip:400@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1"
            b"\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:400@127.0.0.1>\r\nCall-ID: f\r\n"
            b"CSeq: 1 INVITE\r\n")
    if content_type:
        head += f"Content-Type: {content_type}\r\n".encode()
    check(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
