"""RTCP on live streams: reports on the RTP port + 1 or multiplexed, loss both ways, and
the round-trip time, against a raw peer with known losses."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.conftest import wait_for
from tests.rtp_peer import udp_pair
from trunks.voip.media import PCMU, RtpEngine
from trunks.voip.rtcp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    SenderReport,
    SourceDescription,
    build_rtcp,
    is_rtcp,
    ntp_middle,
    parse_rtcp,
)
from trunks.voip.rtp import RtpPacket, build_rtp

PEER_SSRC = 0x5EE5


@pytest.fixture
def fast_engine() -> Iterator[RtpEngine]:
    """An engine that reports every ~0.2 s instead of ~5 s."""
    rtp = RtpEngine(rtcp_interval_s=0.2)
    rtp.start()
    yield rtp
    rtp.stop()


def next_report(sock: socket.socket) -> tuple[SenderReport | ReceiverReport, ...]:
    while True:
        packets = parse_rtcp(sock.recv(2048))
        reports = tuple(p for p in packets if isinstance(p, (SenderReport, ReceiverReport)))
        if reports:
            return reports


def test_reports_go_to_rtp_port_plus_one_and_count_both_ways(fast_engine: RtpEngine) -> None:
    peer_rtp, peer_rtcp = udp_pair()
    with peer_rtp, peer_rtcp:
        stream = fast_engine.open(PCMU, remote=peer_rtp.getsockname())
        assert stream.rtcp_sock is not None
        assert stream.rtcp_sock.getsockname()[1] == stream.local_address[1] + 1
        sent = [seq for seq in range(200) if seq % 10 != 3]  # 20 of 200 lost on the way
        for seq in sent:
            peer_rtp.sendto(build_rtp(RtpPacket(PCMU, seq, seq * 160, PEER_SSRC, b"\xff" * 160)),
                            stream.local_address)
        wait_for(lambda: (q := stream.quality().received) is not None and q.packets_expected
                 == 199, what="the peer's packets counted")
        received = stream.quality().received
        # lost: 3, 13 .. 193; the first packet is not expected (RFC 3550 A.1 probation)
        assert received is not None and received.packets_lost == 20
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            [report] = next_report(peer_rtcp)
            blocks = [b for b in report.reports if b.ssrc == PEER_SSRC]
            if blocks and blocks[0].cumulative_lost == 20:
                break
        else:
            pytest.fail("no report on the peer's stream with its 20 losses")
        assert isinstance(report, SenderReport), "we send audio, so a sender report"
        assert report.ssrc != PEER_SSRC and report.packet_count > 0
        # The peer answers: it lost a quarter of ours, and held our SR for 1/4 s.
        ours = report.ssrc
        ntp = report.ntp_timestamp
        time.sleep(0.3)
        block = ReportBlock(ours, 64, 50, 1000, 80, ntp_middle(ntp), 65536 // 4)
        peer_rtcp.sendto(build_rtcp([ReceiverReport(PEER_SSRC, (block,))]),
                         stream.rtcp_sock.getsockname())
        wait_for(lambda: stream.quality().sent_loss_percent is not None, what="peer's report")
        quality = stream.quality()
        assert quality.sent_loss_percent == 25.0 and quality.sent_jitter_ms == 10.0
        assert quality.rtt_ms is not None and 0 <= quality.rtt_ms < 200
        assert quality.mos is not None and quality.mos < 3.5, "25 % loss sounds bad"
        assert quality.as_dict()["received_lost"] == 20
        stream.close()
        packets = []
        while not any(isinstance(p, Bye) for p in packets):
            packets = list(parse_rtcp(peer_rtcp.recv(2048)))
        assert any(isinstance(p, SourceDescription) for p in packets)


def test_reports_from_a_stranger_are_ignored(fast_engine: RtpEngine) -> None:
    peer_rtp, peer_rtcp = udp_pair()
    with peer_rtp, peer_rtcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.2", 0))
        stream = fast_engine.open(PCMU, remote=peer_rtp.getsockname())
        assert stream.rtcp_sock is not None
        port = stream.rtcp_sock.getsockname()[1]
        stranger.sendto(build_rtcp([ReceiverReport(1, ())]), ("127.0.0.1", port))
        peer_rtcp.sendto(b"\x80\xc9\x00\x05garbage", ("127.0.0.1", port))
        wait_for(lambda: stream.stats.ignored == 2, what="both ignored")
        assert stream.quality().reports_received == 0
        stream.close()


def test_rtcp_multiplexed_on_the_rtp_port(fast_engine: RtpEngine) -> None:
    peer_rtp, peer_rtcp = udp_pair()
    with peer_rtp, peer_rtcp:
        peer_rtp.settimeout(3)
        stream = fast_engine.open(PCMU, remote=peer_rtp.getsockname())
        stream.rtcp.mux = True
        deadline = time.monotonic() + 3
        while not is_rtcp(peer_rtp.recv(2048)):
            assert time.monotonic() < deadline, "no RTCP on the RTP port"
        peer_rtp.sendto(build_rtcp([ReceiverReport(PEER_SSRC, ())]), stream.local_address)
        wait_for(lambda: stream.quality().reports_received == 1, what="muxed report read")
        assert stream.stats.ignored == 0
        stream.close()
