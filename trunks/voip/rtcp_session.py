"""One RTP stream's RTCP (RFC 3550 6): the reports we send, the ones we read, and the
call quality both give.

Every few seconds (`rtcp.report_interval`) the stream sends a compound packet: a
sender report while it sends audio (a receiver report while it sends nothing, as on
hold), with a report block on what it received from the peer, and an SDES CNAME. The
peer's reports say what it heard of ours (loss, jitter) and, through LSR and DLSR,
the round-trip time. Reports go to the peer's RTP port + 1, or to the RTP port itself
when the call multiplexes RTP and RTCP (RFC 5761, ``a=rtcp-mux``), or to where the
peer's own RTCP comes from once it has sent some (symmetric RTCP, RFC 4961).

Everything here runs on the RTP engine's thread except `quality`, which only reads.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from trunks.voip.reception import (
    BPL_G711_NO_PLC,
    CallQuality,
    ReceptionStats,
    estimate_mos,
    one_way_delay_ms,
)
from trunks.voip.rtcp import (
    REPORT_INTERVAL_S,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    RtcpParseError,
    SdesChunk,
    SenderReport,
    SourceDescription,
    build_rtcp,
    ntp_timestamp,
    parse_rtcp,
    report_interval,
    round_trip_time,
)
from trunks.voip.rtp import RtpPacket

logger = logging.getLogger(__name__)

CNAME_ITEM = 1


@dataclass(frozen=True)
class LegQuality:
    """How one call leg sounds, both ways, as RTCP tells it."""

    received: CallQuality | None
    """What we heard from the peer (our own measurement); None before its first packet."""
    sent_loss_percent: float | None
    """Of our packets, the share the peer lost, per its latest report (None: no report)."""
    sent_jitter_ms: float | None
    rtt_ms: float | None
    reports_received: int

    @property
    def mos(self) -> float | None:
        """The worse of the two directions' estimated MOS (what the call sounded like)."""
        scores = [] if self.received is None else [self.received.mos]
        if self.sent_loss_percent is not None:
            scores.append(estimate_mos(self.sent_loss_percent, one_way_delay_ms(self.rtt_ms),
                                       bpl=BPL_G711_NO_PLC))
        return min(scores) if scores else None

    def as_dict(self) -> dict[str, float | int | None]:
        received = self.received
        return {
            "mos": None if self.mos is None else round(self.mos, 2),
            "received_packets": None if received is None else received.packets_expected,
            "received_lost": None if received is None else received.packets_lost,
            "received_loss_percent": None if received is None else round(
                received.loss_percent, 2),
            "received_jitter_ms": None if received is None else round(received.jitter_ms, 1),
            "sent_loss_percent": None if self.sent_loss_percent is None else round(
                self.sent_loss_percent, 2),
            "sent_jitter_ms": None if self.sent_jitter_ms is None else round(
                self.sent_jitter_ms, 1),
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 1),
            "reports_received": self.reports_received,
        }


class RtcpSession:
    """The RTCP side of one RTP stream whose SSRC is `ssrc`."""

    def __init__(self, ssrc: int, cname: str, *, interval_s: float = REPORT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time,
                 random_source: Callable[[], float] = random.random) -> None:
        """`interval_s`: the nominal report interval (RFC 3550 6.2: 5 s)."""
        self.ssrc = ssrc
        self.interval_s = interval_s
        self.cname = cname
        self.mux = False
        """Whether RTCP shares the RTP port (the offer had a=rtcp-mux)."""
        self.remote: tuple[str, int] | None = None
        """Where the peer's RTCP came from, once it has sent some."""
        self.reports_received = 0
        self._clock, self._wallclock, self._random = clock, wallclock, random_source
        self._source: ReceptionStats | None = None
        self._sent_packets = 0
        self._sent_octets = 0
        self._rtp_timestamp = 0
        self._sent_since_report = False
        self._about_us: ReportBlock | None = None
        self._rtt_s: float | None = None
        self._next_at = clock() + report_interval(random_source, initial=True,
                                                  minimum_s=interval_s)

    def on_sent(self, packet: RtpPacket) -> None:
        self._sent_packets += 1
        self._sent_octets += len(packet.payload)
        self._rtp_timestamp = packet.timestamp
        self._sent_since_report = True

    def on_received(self, packet: RtpPacket) -> None:
        """Count a packet from the peer; a new SSRC (the peer restarted) starts afresh."""
        if self._source is None or self._source.ssrc != packet.ssrc:
            self._source = ReceptionStats(packet.ssrc)
        self._source.receive(packet.sequence, packet.timestamp, self._clock())

    def on_rtcp(self, data: bytes, source: tuple[str, int]) -> bool:
        """Read a compound packet from the peer; False if it is not RTCP."""
        try:
            packets = parse_rtcp(data)
        except RtcpParseError:
            return False
        self.remote = source
        self.reports_received += 1
        arrival = self._clock()
        for packet in packets:
            if isinstance(packet, SenderReport) and self._source is not None \
                    and packet.ssrc == self._source.ssrc:
                self._source.note_sender_report(packet.ntp_timestamp, arrival)
            if isinstance(packet, (SenderReport, ReceiverReport)):
                for block in packet.reports:
                    if block.ssrc == self.ssrc:
                        self._about_us = block
                        rtt = round_trip_time(block, ntp_timestamp(self._wallclock()))
                        if rtt is not None:
                            self._rtt_s = rtt
        return True

    def due(self) -> bytes | None:
        """Our next compound report if its time has come, else None."""
        now = self._clock()
        if now < self._next_at:
            return None
        self._next_at = now + report_interval(self._random, minimum_s=self.interval_s)
        return build_rtcp(self._report())

    def bye(self) -> bytes:
        """Our last report and BYE, sent when the stream closes."""
        return build_rtcp([*self._report(), Bye((self.ssrc,), "call ended")])

    def quality(self) -> LegQuality:
        source, about_us = self._source, self._about_us
        received = None if source is None or not source.received else source.quality(
            self._rtt_s)
        return LegQuality(
            received,
            None if about_us is None else 100 * about_us.fraction_lost / 256,
            None if about_us is None else about_us.jitter * 1000 / 8000,
            None if self._rtt_s is None else self._rtt_s * 1000,
            self.reports_received)

    def _report(self) -> list[RtcpPacket]:
        blocks = () if self._source is None else (self._source.report_block(self._clock()),)
        report: RtcpPacket
        if self._sent_since_report:
            report = SenderReport(self.ssrc, ntp_timestamp(self._wallclock()),
                                  self._rtp_timestamp, self._sent_packets & 0xFFFF_FFFF,
                                  self._sent_octets & 0xFFFF_FFFF, blocks)
        else:
            report = ReceiverReport(self.ssrc, blocks)
        self._sent_since_report = False
        return [report, SourceDescription((SdesChunk(self.ssrc, ((CNAME_ITEM, self.cname),)),))]
