"""RTCP (RFC 3550): compound packets, NTP time, the report interval and the round trip.

Pure building blocks with no sockets and no clock: every time is an argument.
Packets go bytes in, frozen dataclasses out; a datagram that is not valid RTCP
raises `RtcpParseError` (a `ValueError`) saying what is wrong. What a stream
received, and how the call sounds, is `reception.py`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

RTCP_VERSION = 2
SR, RR, SDES, BYE, APP, RTPFB, PSFB, XR = range(200, 208)
"""Packet types: RFC 3550 (SR..APP), RFC 4585 (RTPFB, PSFB), RFC 3611 (XR)."""
CNAME = 1
"""SDES item type of the canonical name, the only item we send."""
HEADER = struct.Struct("!BBH")
SENDER_REPORT = struct.Struct("!BBHIIIIII")
"""Header, sender SSRC, NTP timestamp (two words), RTP timestamp, packets, octets."""
RECEIVER_REPORT = struct.Struct("!BBHI")
REPORT_BLOCK = struct.Struct("!IIIIII")
MUX_TYPES = range(192, 224)
"""RFC 5761 section 4: on an rtcp-mux port, a second octet in 192-223 is RTCP."""

NTP_EPOCH_OFFSET_S = 2_208_988_800
"""Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01)."""

REPORT_INTERVAL_S = 5.0
"""RFC 3550 6.2: the minimum deterministic interval. For a two-party G.711 call the
bandwidth rule (5% of ~87 kbit/s shared by two members) gives well under 1 s, so
this minimum is the interval."""
COMPENSATION = math.e - 1.5
"""RFC 3550 6.3.1 and A.7: the randomised interval is divided by e - 3/2."""

class RtcpParseError(ValueError):
    """A datagram that is not a valid RTCP compound packet."""


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """What the sender of a report heard from `ssrc` (RFC 3550 6.4.1)."""

    ssrc: int
    fraction_lost: int
    """Lost since the previous report, in 1/256ths."""
    cumulative_lost: int
    """Signed: duplicates can make it negative."""
    highest_sequence: int
    """Cycles of the 16-bit sequence number in the top half, the highest one below."""
    jitter: int
    """Interarrival jitter in RTP timestamp units."""
    last_sr: int = 0
    """Middle 32 bits of the NTP timestamp of the last SR from `ssrc`; 0 if none yet."""
    delay_since_last_sr: int = 0
    """In 1/65536 s."""


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int
    """64-bit NTP time the report was sent: seconds since 1900, 32.32 fixed point."""
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class SdesChunk:
    ssrc: int
    items: tuple[tuple[int, str], ...]
    """(item type, text) pairs: CNAME is 1, NAME 2, TOOL 6 ..."""

    @property
    def cname(self) -> str | None:
        return next((text for kind, text in self.items if kind == CNAME), None)


@dataclass(frozen=True, slots=True)
class SourceDescription:
    chunks: tuple[SdesChunk, ...]


@dataclass(frozen=True, slots=True)
class Bye:
    sources: tuple[int, ...]
    reason: str = ""


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye


def is_rtcp(data: bytes) -> bool:
    """Whether a datagram on an rtcp-mux port is RTCP rather than RTP (RFC 5761 4)."""
    return len(data) >= 2 and data[1] in MUX_TYPES


def parse_rtcp(data: bytes) -> tuple[RtcpPacket, ...]:
    """Parse a compound RTCP datagram into its SR, RR, SDES and BYE packets.

    APP, feedback (RTPFB, PSFB), XR and unknown packet types are checked for
    length and skipped. Reduced-size RTCP (RFC 5506, not starting with SR or RR)
    is accepted: nothing here depends on the order.
    """
    if not data:
        raise RtcpParseError("RTCP datagram is empty")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < HEADER.size:
            raise RtcpParseError(f"RTCP packet at byte {offset} is shorter than its header")
        first, packet_type, words = HEADER.unpack_from(data, offset)
        if first >> 6 != RTCP_VERSION:
            raise RtcpParseError(f"RTCP version {first >> 6} at byte {offset}, expected 2")
        end = offset + 4 * (words + 1)
        if end > len(data):
            raise RtcpParseError(f"RTCP packet at byte {offset} claims {end - offset} bytes, "
                                 f"{len(data) - offset} remain")
        content_end = end
        if first & 0x20:
            content_end = _unpad(data, offset, end)
        packet = _parse_packet(data, offset, content_end, packet_type, first & 0x1F)
        if packet is not None:
            packets.append(packet)
        offset = end
    return tuple(packets)


def build_rtcp(packets: Iterable[RtcpPacket]) -> bytes:
    """The compound datagram for `packets`, in order (RFC 3550 wants SR or RR first)."""
    return b"".join(_build_packet(packet) for packet in packets)


def ntp_timestamp(now: float) -> int:
    """The 64-bit NTP timestamp for `now`, seconds since the Unix epoch (time.time())."""
    return int((now + NTP_EPOCH_OFFSET_S) * (1 << 32)) & 0xFFFF_FFFF_FFFF_FFFF


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp, as carried in LSR (1/65536 s units)."""
    return (ntp >> 16) & 0xFFFF_FFFF


def round_trip_time(block: ReportBlock, arrival_ntp: int) -> float | None:
    """Seconds from our SR to the peer's report `block` about it, less the peer's hold.

    RFC 3550 6.4.1: A - LSR - DLSR, with A the report's arrival as a 64-bit NTP
    timestamp from the clock that stamped our SRs. None when the peer has not had an
    SR from us yet (LSR 0) or the result is negative (clocks or a peer's rounding).
    """
    if block.last_sr == 0:
        return None
    units = (ntp_middle(arrival_ntp) - block.last_sr - block.delay_since_last_sr) & 0xFFFF_FFFF
    if units >= 0x8000_0000:
        return None
    return units / 65536


def report_interval(random: Callable[[], float], *, initial: bool = False,
                    minimum_s: float = REPORT_INTERVAL_S) -> float:
    """Seconds to the next RTCP report of a two-party call (RFC 3550 6.2, 6.3.1).

    `random` returns a uniform float in [0, 1), as `random.random` does. The first
    report uses half the minimum; the interval is randomised over 0.5-1.5 times and
    divided by e - 3/2 as the RFC says, so 5 s gives 2.05-6.16 s, 4.1 s on average.
    """
    deterministic = minimum_s / 2 if initial else minimum_s
    return deterministic * (0.5 + random()) / COMPENSATION


def _unpad(data: bytes, start: int, end: int) -> int:
    count = data[end - 1]
    if count == 0 or count > end - start - HEADER.size:
        raise RtcpParseError(f"RTCP padding of {count} bytes in a packet of {end - start} bytes")
    return end - count


def _parse_packet(data: bytes, start: int, end: int, packet_type: int,
                  count: int) -> RtcpPacket | None:
    if packet_type == SR:
        _check_size("SR", end - start, SENDER_REPORT.size, count)
        _, _, _, ssrc, high, low, rtp_ts, packets, octets = SENDER_REPORT.unpack_from(data, start)
        return SenderReport(ssrc, high << 32 | low, rtp_ts, packets, octets,
                            _parse_blocks(data, start + SENDER_REPORT.size, count))
    if packet_type == RR:
        _check_size("RR", end - start, RECEIVER_REPORT.size, count)
        ssrc = RECEIVER_REPORT.unpack_from(data, start)[3]
        return ReceiverReport(ssrc, _parse_blocks(data, start + RECEIVER_REPORT.size, count))
    if packet_type == SDES:
        return _parse_sdes(data, start + HEADER.size, end, count)
    if packet_type == BYE:
        return _parse_bye(data, start + HEADER.size, end, count)
    return None  # APP, RTPFB, PSFB, XR or a type we do not know: skipped


def _check_size(name: str, size: int, head: int, count: int) -> None:
    needed = head + REPORT_BLOCK.size * count
    if size < needed:
        raise RtcpParseError(f"{name} of {size} bytes, {needed} needed for {count} report blocks")


def _parse_blocks(data: bytes, start: int, count: int) -> tuple[ReportBlock, ...]:
    blocks = REPORT_BLOCK.iter_unpack(data[start:start + REPORT_BLOCK.size * count])
    return tuple(ReportBlock(ssrc, lost >> 24, (lost & 0xFF_FFFF ^ 0x80_0000) - 0x80_0000,
                             highest, jitter, lsr, dlsr)
                 for ssrc, lost, highest, jitter, lsr, dlsr in blocks)


def _parse_sdes(data: bytes, pos: int, end: int, count: int) -> SourceDescription:
    chunks: list[SdesChunk] = []
    for _ in range(count):
        if end - pos < 4:
            raise RtcpParseError(f"SDES announces {count} chunks and holds {len(chunks)}")
        ssrc = int.from_bytes(data[pos:pos + 4], "big")
        items: list[tuple[int, str]] = []
        pos += 4
        while pos < end and data[pos]:
            if end - pos < 2 or end - pos - 2 < data[pos + 1]:
                raise RtcpParseError(f"SDES item of type {data[pos]} overruns its packet")
            length = data[pos + 1]
            items.append((data[pos], data[pos + 2:pos + 2 + length].decode("utf-8", "replace")))
            pos += 2 + length
        if pos >= end:
            raise RtcpParseError("SDES chunk has no null octet ending its items")
        pos = (pos + 4) & ~3  # the null octet, then padding to a 32-bit boundary
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


def _parse_bye(data: bytes, pos: int, end: int, count: int) -> Bye:
    if end - pos < 4 * count:
        raise RtcpParseError(f"BYE of {end - pos + HEADER.size} bytes cannot hold "
                             f"{count} sources")
    sources = struct.unpack_from(f"!{count}I", data, pos)
    pos += 4 * count
    reason = ""
    if pos < end:
        if end - pos - 1 < data[pos]:
            raise RtcpParseError("BYE reason overruns its packet")
        reason = data[pos + 1:pos + 1 + data[pos]].decode("utf-8", "replace")
    return Bye(sources, reason)


def _build_packet(packet: RtcpPacket) -> bytes:
    if isinstance(packet, SenderReport):
        count = _report_count(packet.reports)
        ntp = packet.ntp_timestamp & 0xFFFF_FFFF_FFFF_FFFF
        head = SENDER_REPORT.pack(0x80 | count, SR, 6 + 6 * count, packet.ssrc & 0xFFFF_FFFF,
                                  ntp >> 32, ntp & 0xFFFF_FFFF, packet.rtp_timestamp & 0xFFFF_FFFF,
                                  packet.packet_count & 0xFFFF_FFFF,
                                  packet.octet_count & 0xFFFF_FFFF)
        return head + b"".join(map(_build_block, packet.reports))
    if isinstance(packet, ReceiverReport):
        count = _report_count(packet.reports)
        head = RECEIVER_REPORT.pack(0x80 | count, RR, 1 + 6 * count, packet.ssrc & 0xFFFF_FFFF)
        return head + b"".join(map(_build_block, packet.reports))
    if isinstance(packet, SourceDescription):
        body = b"".join(map(_build_chunk, packet.chunks))
        return _header(SDES, len(packet.chunks), body) + body
    body = b"".join(ssrc.to_bytes(4, "big") for ssrc in packet.sources)
    if packet.reason:
        body += _pad(_item_text(packet.reason))
    return _header(BYE, len(packet.sources), body) + body


def _header(packet_type: int, count: int, body: bytes) -> bytes:
    if count > 31:
        raise ValueError(f"{count} items in one RTCP packet, at most 31 fit")
    return HEADER.pack(0x80 | count, packet_type, len(body) // 4)


def _report_count(reports: tuple[ReportBlock, ...]) -> int:
    if len(reports) > 31:
        raise ValueError(f"{len(reports)} report blocks in one RTCP packet, at most 31 fit")
    return len(reports)


def _build_block(block: ReportBlock) -> bytes:
    return REPORT_BLOCK.pack(block.ssrc & 0xFFFF_FFFF,
                             (block.fraction_lost & 0xFF) << 24 | block.cumulative_lost & 0xFF_FFFF,
                             block.highest_sequence & 0xFFFF_FFFF, block.jitter & 0xFFFF_FFFF,
                             block.last_sr & 0xFFFF_FFFF, block.delay_since_last_sr & 0xFFFF_FFFF)


def _build_chunk(chunk: SdesChunk) -> bytes:
    items = b"".join(bytes([kind]) + _item_text(text) for kind, text in chunk.items)
    # at least one null octet ends the items, then padding to a 32-bit boundary
    return _pad(chunk.ssrc.to_bytes(4, "big") + items + b"\0")


def _item_text(text: str) -> bytes:
    """An SDES item's or BYE reason's length octet and UTF-8 text."""
    encoded = text.encode()
    if len(encoded) > 255:
        raise ValueError(f"RTCP text of {len(encoded)} bytes, at most 255 fit")
    return bytes([len(encoded)]) + encoded


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)
