"""RTP packets and telephone events: pure parsing and building."""

from __future__ import annotations

import pytest

from trunks.voip.rtp import (
    RtpPacket,
    TelephoneEvent,
    build_event,
    build_rtp,
    parse_event,
    parse_rtp,
)

PACKET = RtpPacket(0, 65535, 4_294_967_200, 0xDEADBEEF, b"\xff" * 160, marker=True)


def test_round_trip() -> None:
    data = build_rtp(PACKET)
    assert len(data) == 12 + 160
    assert data[:2] == b"\x80\x80"
    assert parse_rtp(data) == PACKET


def test_csrc_extension_and_padding_are_skipped() -> None:
    header = bytearray(build_rtp(PACKET)[:12])
    header[0] |= 0x20 | 0x10 | 0x02  # padding, extension, two CSRCs
    csrcs = b"\x00\x00\x00\x01\x00\x00\x00\x02"
    extension = b"\xbe\xde\x00\x01" + b"\x10\xaa\x00\x00"
    data = bytes(header) + csrcs + extension + b"\x01\x02\x03" + b"\x00\x00\x03"
    assert parse_rtp(data).payload == b"\x01\x02\x03"


@pytest.mark.parametrize(("data", "complaint"), [
    (b"", "shorter than its header"),
    (b"\x80\x00\x00", "shorter than its header"),
    (b"\x40" + bytes(11), "RTP version 1"),
    (b"\x80\xc8" + bytes(10), "RTCP packet \\(type 200\\)"),
    (b"\x8f" + bytes(11), "longer than the packet"),  # 15 CSRCs announced, none present
    (b"\x90" + bytes(11) + b"\xbe", "extension is truncated"),
    (b"\xa0" + bytes(11) + b"\x40", "longer than the packet"),  # 64 bytes of padding
])
def test_malformed_packets(data: bytes, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_rtp(data)


def test_telephone_events() -> None:
    event = TelephoneEvent("#", True, 10, 800)
    payload = build_event(event)
    assert payload == bytes([11, 0x80 | 10]) + (800).to_bytes(2, "big")
    assert parse_event(payload) == event
    with pytest.raises(ValueError, match="event 16 is not a DTMF digit"):
        parse_event(bytes([16, 0, 0, 0]))
    with pytest.raises(ValueError, match="of 2 bytes"):
        parse_event(b"\x01\x02")
