"""RTP packets (RFC 3550) and telephone events (RFC 4733): bytes in, dataclasses out.

pyVoIP's `RTPMessage` parses through strings of '0' and '1' characters, has no
length checks (a short packet raises whatever the slicing raised), and its
sender encodes payload types of 128 or more as two bytes. This is the media hot
path (300 calls are 15,000 packets a second each way), so the header is read
with one `struct` call and every malformed packet raises `RtpParseError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
HEADER = struct.Struct("!BBHII")
EVENT = struct.Struct("!BBH")
DTMF_DIGITS = "0123456789*#ABCD"
"""RFC 4733 event codes 0-15, in order."""
_RTCP_TYPES = range(72, 77)  # RTCP SR..APP, as seen in the RTP payload-type field


class RtpParseError(ValueError):
    """A datagram that is not a usable RTP packet."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    digit: str
    end: bool
    volume: int
    duration: int
    """In timestamp units (1/8000 s for telephone-event/8000)."""


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP datagram; raise `RtpParseError` saying what is wrong."""
    if len(data) < HEADER.size:
        raise RtpParseError(f"RTP packet of {len(data)} bytes is shorter than its header")
    first, second, sequence, timestamp, ssrc = HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpParseError(f"RTP version {first >> 6}, expected 2")
    payload_type = second & 0x7F
    if payload_type in _RTCP_TYPES:
        raise RtpParseError(f"RTCP packet (type {payload_type + 128}) on the RTP port")
    start = HEADER.size + 4 * (first & 0x0F)
    if first & 0x10:  # header extension: 16-bit profile, 16-bit length in words
        if len(data) < start + 4:
            raise RtpParseError("RTP header extension is truncated")
        start += 4 + 4 * int.from_bytes(data[start + 2:start + 4], "big")
    end = len(data)
    if first & 0x20:
        end -= data[-1]
    if start > end:
        raise RtpParseError("RTP header, extension or padding is longer than the packet")
    return RtpPacket(payload_type, sequence, timestamp, ssrc, data[start:end],
                     bool(second & 0x80))


def build_rtp(packet: RtpPacket) -> bytes:
    """The datagram for `packet` (no CSRCs, extension or padding)."""
    second = (0x80 if packet.marker else 0) | (packet.payload_type & 0x7F)
    return HEADER.pack(RTP_VERSION << 6, second, packet.sequence & 0xFFFF,
                       packet.timestamp & 0xFFFFFFFF, packet.ssrc & 0xFFFFFFFF) + packet.payload


def parse_event(payload: bytes) -> TelephoneEvent:
    """Parse an RFC 4733 telephone-event payload carrying a DTMF digit."""
    if len(payload) < EVENT.size:
        raise RtpParseError(f"telephone event of {len(payload)} bytes, expected 4")
    code, flags, duration = EVENT.unpack_from(payload)
    if code >= len(DTMF_DIGITS):
        raise RtpParseError(f"telephone event {code} is not a DTMF digit")
    return TelephoneEvent(DTMF_DIGITS[code], bool(flags & 0x80), flags & 0x3F, duration)


def build_event(event: TelephoneEvent) -> bytes:
    code = DTMF_DIGITS.index(event.digit)
    return EVENT.pack(code, (0x80 if event.end else 0) | (event.volume & 0x3F),
                      min(event.duration, 0xFFFF))
