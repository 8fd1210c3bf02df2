"""A raw RTP and RTCP peer on loopback whose losses are known, for call-quality tests.

It sends 20 ms of G.711 silence every 20 ms and leaves out every `drop_sent`-th packet,
so the far end should count that share lost. It ignores every `drop_received`-th packet
it receives and counts the rest with `trunks.voip.reception.ReceptionStats` (RFC 3550 A.1,
A.3, A.8); every `report_s` it sends a receiver report on what it kept, answering the far
end's latest sender report (LSR, DLSR), so the far end can measure the round trip. RTP
goes to whoever sent RTP here first; RTCP to whoever sent RTCP here, else to that RTP
port + 1. With `report_s` None it sends no RTCP at all, as many phones do.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from types import TracebackType

from trunks.voip.reception import ReceptionStats
from trunks.voip.rtcp import (
    CNAME,
    ReceiverReport,
    SdesChunk,
    SenderReport,
    SourceDescription,
    build_rtcp,
    is_rtcp,
    parse_rtcp,
)
from trunks.voip.rtp import RtpPacket, RtpParseError, build_rtp, parse_rtp

PEER_SSRC = 0x5EE5
FRAME_S = 0.02
SILENCE = {0: b"\xff" * 160, 8: b"\xd5" * 160}


def udp_pair() -> tuple[socket.socket, socket.socket]:
    """An RTP socket on an even loopback port and its RTCP socket on the next."""
    while True:
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        port = rtp.getsockname()[1]
        if port % 2 == 0:
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind(("127.0.0.1", port + 1))
            except OSError:
                rtcp.close()
            else:
                rtcp.settimeout(3)
                return rtp, rtcp
        rtp.close()


class RtpPeer:
    """A phone's media with known losses each way; a context manager that stops it."""

    def __init__(self, drop_sent: int = 0, drop_received: int = 0,
                 report_s: float | None = 0.5, payload_type: int = 0) -> None:
        self.drop_sent, self.drop_received = drop_sent, drop_received
        self.report_s, self.payload_type = report_s, payload_type
        self.rtp, self.rtcp = udp_pair()
        self.rtp.setblocking(False)
        self.rtcp.setblocking(False)
        self.port: int = self.rtp.getsockname()[1]
        self.sent = self.left_out = self.received = self.ignored = self.reports_sent = 0
        self.stats: ReceptionStats | None = None
        """What the peer kept of the far end's stream."""
        self._remote_rtp: tuple[str, int] | None = None
        self._remote_rtcp: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtp-peer", daemon=True)
        self._thread.start()

    def __enter__(self) -> RtpPeer:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.rtp.close()
        self.rtcp.close()

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.rtp, selectors.EVENT_READ, self._on_rtp)
            selector.register(self.rtcp, selectors.EVENT_READ, self._on_rtcp)
            seq, next_send = 0, time.monotonic()
            next_report = next_send + (self.report_s or 0)
            while not self._stop.is_set():
                for key, _ in selector.select(max(0.0, next_send - time.monotonic())):
                    key.data()
                now = time.monotonic()
                if now >= next_send:
                    if self._remote_rtp is not None:
                        self._send(seq)
                        seq += 1
                    next_send += FRAME_S
                if self.report_s is not None and now >= next_report:
                    self._report(now)
                    next_report = now + self.report_s

    def _send(self, seq: int) -> None:
        assert self._remote_rtp is not None
        if self.drop_sent and seq % self.drop_sent == self.drop_sent - 1:
            self.left_out += 1
            return
        packet = RtpPacket(self.payload_type, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, PEER_SSRC,
                           SILENCE[self.payload_type])
        self.rtp.sendto(build_rtp(packet), self._remote_rtp)
        self.sent += 1

    def _report(self, now: float) -> None:
        destination = self._remote_rtcp or (
            None if self._remote_rtp is None else (self._remote_rtp[0], self._remote_rtp[1] + 1))
        if destination is None or self.stats is None:
            return
        self.rtcp.sendto(build_rtcp([
            ReceiverReport(PEER_SSRC, (self.stats.report_block(now),)),
            SourceDescription((SdesChunk(PEER_SSRC, ((CNAME, "rtp-peer@127.0.0.1"),)),))]),
            destination)
        self.reports_sent += 1

    def _on_rtp(self) -> None:
        for data, source in _datagrams(self.rtp):
            if is_rtcp(data):
                self._read_rtcp(data, source)
                continue
            try:
                packet = parse_rtp(data)
            except RtpParseError:
                self.ignored += 1
                continue
            self._remote_rtp = self._remote_rtp or source
            self.received += 1
            if self.drop_received and self.received % self.drop_received == 0:
                continue  # lost on the way in
            if self.stats is None or self.stats.ssrc != packet.ssrc:
                self.stats = ReceptionStats(packet.ssrc)
            self.stats.receive(packet.sequence, packet.timestamp, time.monotonic())

    def _on_rtcp(self) -> None:
        for data, source in _datagrams(self.rtcp):
            self._read_rtcp(data, source)

    def _read_rtcp(self, data: bytes, source: tuple[str, int]) -> None:
        self._remote_rtcp = source
        for packet in parse_rtcp(data):
            if isinstance(packet, SenderReport) and self.stats is not None \
                    and packet.ssrc == self.stats.ssrc:
                self.stats.note_sender_report(packet.ntp_timestamp, time.monotonic())


def _datagrams(sock: socket.socket) -> list[tuple[bytes, tuple[str, int]]]:
    """Every datagram waiting on the non-blocking `sock`."""
    found = []
    while True:
        try:
            data, source = sock.recvfrom(2048)
        except BlockingIOError:
            return found
        found.append((data, source[:2]))
