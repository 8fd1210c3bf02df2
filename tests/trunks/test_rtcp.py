"""RTCP: compound packets, reception statistics, round-trip time, the E-model and the interval."""

from __future__ import annotations

import random
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trunks.voip.reception import BPL_G711_PLC, ReceptionStats, estimate_mos, mos_from_r
from trunks.voip.rtcp import (
    APP,
    NTP_EPOCH_OFFSET_S,
    XR,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    RtcpParseError,
    SdesChunk,
    SenderReport,
    SourceDescription,
    build_rtcp,
    is_rtcp,
    ntp_middle,
    ntp_timestamp,
    parse_rtcp,
    report_interval,
    round_trip_time,
)

DATA = Path(__file__).parents[1] / "data" / "rtcp"
OUR_SSRC = 0x1CEB00DA
OUR_SR_NTP = 0xEEBDB28816AF1000
"""What the capture's UAS sent baresip (tests/data/rtcp/README.md)."""
DROPPED = {*range(100, 105), 200, 201, 202}
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

BLOCK = ReportBlock(0x11223344, 25, -3, 0x1_0014, 37, 0xB28816AF, 0x1FF7C)
COMPOUND: tuple[RtcpPacket, ...] = (
    SenderReport(0xCAFE, 0xEEBDB28816AF1000, 73_276, 250, 40_000,
                 (BLOCK, ReportBlock(7, 0, 8_388_607, 249, 0))),
    SourceDescription((SdesChunk(0xCAFE, ((1, "ivr@127.0.0.1"), (2, "Hotline"))),
                       SdesChunk(9, ()))),
    Bye((0xCAFE, 9), "call ended"),
)


def test_compound_round_trip() -> None:
    data = build_rtcp(COMPOUND)
    assert len(data) % 4 == 0
    assert data[:4] == bytes([0x82, 200, 0, 6 + 12])  # RC 2, SR, 19 words - 1
    assert parse_rtcp(data) == COMPOUND
    receiver = (ReceiverReport(0xCAFE, (BLOCK,)), COMPOUND[1])
    assert parse_rtcp(build_rtcp(receiver)) == receiver
    assert SdesChunk(1, ((2, "Hotline"), (1, "ivr@127.0.0.1"))).cname == "ivr@127.0.0.1"
    assert SdesChunk(1, ((2, "Hotline"),)).cname is None


def test_report_block_fields_on_the_wire() -> None:
    block = build_rtcp([ReceiverReport(1, (BLOCK,))])[8:]
    assert block == bytes.fromhex("11223344" "19fffffd" "00010014" "00000025"
                                  "b28816af" "0001ff7c")


def test_baresip_sender_report_about_us() -> None:
    sr, sdes = parse_rtcp((DATA / "baresip-sr-1.rtcp").read_bytes())
    assert isinstance(sr, SenderReport)
    assert isinstance(sdes, SourceDescription)
    assert (sr.packet_count, sr.octet_count) == (250, 40_000)
    assert sdes.chunks[0].ssrc == sr.ssrc
    assert sdes.chunks[0].cname == "sip:caller@127.0.0.1"
    block, = sr.reports
    assert block == ReportBlock(OUR_SSRC, 8, 8, 249, 5, ntp_middle(OUR_SR_NTP), 0x1FF7C)
    rtt = round_trip_time(block, ntp_timestamp(1796420618.0866196))  # its arrival
    assert rtt is not None
    assert 0 <= rtt < 0.002  # loopback


def test_our_loss_figures_match_baresip_on_the_same_stream() -> None:
    stats = ReceptionStats(OUR_SSRC)
    blocks = []
    for name, last in [("baresip-sr-1.rtcp", 249), ("baresip-sr-2.rtcp", 499)]:
        sr = parse_rtcp((DATA / name).read_bytes())[0]
        assert isinstance(sr, SenderReport)
        blocks.append(sr.reports[0])
        for seq in range(last - 249, last + 1):
            if seq not in DROPPED:
                stats.receive(seq, seq * 160, seq * 0.02)
        ours = stats.report_block(0.0)
        assert (ours.fraction_lost, ours.cumulative_lost, ours.highest_sequence) == (
            sr.reports[0].fraction_lost, sr.reports[0].cumulative_lost,
            sr.reports[0].highest_sequence)
    assert [b.fraction_lost for b in blocks] == [8, 0]


def test_baresip_app_alone_and_bye_before_sdes() -> None:
    assert parse_rtcp((DATA / "baresip-app.rtcp").read_bytes()) == ()
    bye, sdes = parse_rtcp((DATA / "baresip-bye.rtcp").read_bytes())
    assert isinstance(bye, Bye)
    assert isinstance(sdes, SourceDescription)
    assert bye.reason == "Adjo"
    assert bye.sources == (sdes.chunks[0].ssrc,)


def test_app_feedback_and_xr_packets_are_skipped() -> None:
    rr = build_rtcp([ReceiverReport(5)])
    app = bytes([0x80, APP, 0, 3]) + bytes(4) + b"NAME" + b"data"
    nack = bytes([0x81, 205, 0, 3]) + bytes(8) + b"\x00\x07\x00\x00"
    pli = bytes([0x81, 206, 0, 2]) + bytes(8)
    xr = bytes([0x80, XR, 0, 1]) + bytes(4)
    sdes = build_rtcp([SourceDescription((SdesChunk(5, ((1, "a"),)),))])
    assert parse_rtcp(rr + app + nack + pli + xr + sdes) == (
        ReceiverReport(5), SourceDescription((SdesChunk(5, ((1, "a"),)),)))
    with pytest.raises(RtcpParseError, match="claims 40 bytes, 8 remain"):
        parse_rtcp(rr + bytes([0x80, XR, 0, 9]) + bytes(4))


def test_padding_in_the_last_packet() -> None:
    padded = bytearray(build_rtcp([Bye((5,))]) + b"\x00\x00\x00\x04")
    padded[0] |= 0x20
    padded[3] += 1
    assert parse_rtcp(bytes(padded)) == (Bye((5,)),)


RR = bytes([0x80, 201, 0, 1]) + bytes(4)


@pytest.mark.parametrize(("data", "complaint"), [
    (b"", "empty"),
    (b"\x80\xc9\x00", "at byte 0 is shorter than its header"),
    (RR + b"\x80", "at byte 8 is shorter than its header"),
    (b"\x40\xc9\x00\x01" + bytes(4), "RTCP version 1 at byte 0, expected 2"),
    (RR + b"\x00\xca\x00\x00", "RTCP version 0 at byte 8"),
    (b"\x80\xc9\x00\x05" + bytes(4), "claims 24 bytes, 8 remain"),
    (b"\x81\xc9\x00\x01" + bytes(4), "RR of 8 bytes, 32 needed for 1 report blocks"),
    (b"\x80\xc8\x00\x01" + bytes(4), "SR of 8 bytes, 28 needed for 0 report blocks"),
    (b"\xa0\xc9\x00\x01" + bytes(4), "padding of 0 bytes in a packet of 8"),
    (b"\xa0\xc9\x00\x01" + b"\x00\x00\x00\x40", "padding of 64 bytes in a packet of 8"),
    (b"\x81\xca\x00\x00", "SDES announces 1 chunks and holds 0"),
    (b"\x81\xca\x00\x02" + bytes(4) + b"\x01\x14ab", "SDES item of type 1 overruns"),
    (b"\x81\xca\x00\x02" + bytes(4) + b"\x01\x02ab", "no null octet ending its items"),
    (b"\x82\xcb\x00\x01" + bytes(4), "BYE of 8 bytes cannot hold 2 sources"),
    (b"\x81\xcb\x00\x02" + bytes(4) + b"\x0aabc", "BYE reason overruns"),
])
def test_malformed_packets(data: bytes, complaint: str) -> None:
    with pytest.raises(RtcpParseError, match=complaint):
        parse_rtcp(data)


def test_rtcp_mux_demultiplexing() -> None:
    assert is_rtcp(build_rtcp(COMPOUND))
    assert is_rtcp(b"\x80\xcf")  # XR
    rtp = [b"\x80\x00", b"\x80\x08", b"\x80\x65", b"\x80\x88", b"\x80\xe5"]  # 0, 8, 101, marked
    assert not any(is_rtcp(data) for data in rtp)
    assert not is_rtcp(b"\x80")
    assert not is_rtcp(b"")


def test_ntp_timestamps() -> None:
    assert ntp_timestamp(0.0) == NTP_EPOCH_OFFSET_S << 32
    assert ntp_timestamp(1.5) == (NTP_EPOCH_OFFSET_S + 1) << 32 | 0x8000_0000
    assert ntp_middle(0x0123_4567_89AB_CDEF) == 0x4567_89AB
    # 2036-02-07 06:28:16 UTC ends NTP era 0; the seconds wrap to 0
    assert ntp_timestamp(2**32 - NTP_EPOCH_OFFSET_S + 2.25) == 2 << 32 | 0x4000_0000


def test_round_trip_time() -> None:
    sent = 1_700_000_000.0
    block = ReportBlock(1, 0, 0, 0, 0, ntp_middle(ntp_timestamp(sent)), 65536 // 4)
    rtt = round_trip_time(block, ntp_timestamp(sent + 0.3))  # held 250 ms, 50 ms in flight
    assert rtt == pytest.approx(0.05, abs=2 / 65536)
    assert round_trip_time(block, ntp_timestamp(sent + 0.2)) is None  # before it was held
    no_sr_yet = ReportBlock(1, 0, 0, 0, 0, 0, 0)
    assert round_trip_time(no_sr_yet, ntp_timestamp(sent)) is None
    wrapped = ReportBlock(1, 0, 0, 0, 0, 0xFFFF_0000, 0x8000)  # the middle 32 bits wrap
    assert round_trip_time(wrapped, 0x0000_8000 << 16) == 1.0


def receive_all(stats: ReceptionStats, sequences: list[int]) -> None:
    for seq in sequences:
        stats.receive(seq, seq * 160, 0.0)


def test_loss_with_drops_reordering_duplicates_and_wrap() -> None:
    stats = ReceptionStats(1)
    sequences = [*range(65530, 65536), *range(21)]
    sequences.remove(3)
    sequences.remove(7)
    at = sequences.index(10)
    sequences[at:at + 2] = [11, 10]
    sequences.insert(sequences.index(15) + 1, 15)
    receive_all(stats, sequences)
    # probation spends 65530; 65531 .. 65536 + 20 is 26 expected, 25 counted (one twice)
    block = stats.report_block(0.0)
    assert (stats.expected, stats.received) == (26, 25)
    assert block.cumulative_lost == 1
    assert block.highest_sequence == 0x1_0014
    assert block.fraction_lost == 256 * 1 // 26 == 9
    receive_all(stats, [s for s in range(21, 41) if s not in (30, 31)])
    block = stats.report_block(0.0)
    assert (block.fraction_lost, block.cumulative_lost) == (256 * 2 // 20, 3)
    assert stats.report_block(0.0).fraction_lost == 0  # nothing came in the interval
    receive_all(stats, [41, 60])
    assert stats.report_block(0.0).fraction_lost == 256 * 18 // 20 == 230
    receive_all(stats, [61, 61, 61, 62])
    block = stats.report_block(0.0)
    assert (block.fraction_lost, block.cumulative_lost) == (0, 19)  # duplicates: no loss


def test_cumulative_loss_is_clamped_to_24_bits() -> None:
    stats = ReceptionStats(1)
    seq = 0
    receive_all(stats, [0, 1])
    for _ in range(3000):
        seq = (seq + 2999) & 0xFFFF
        stats.receive(seq, 0, 0.0)
    assert stats.lost > 0x7F_FFFF
    assert stats.report_block(0.0).cumulative_lost == 0x7F_FFFF


def test_probation_and_restart() -> None:
    stats = ReceptionStats(1)
    assert not stats.receive(5, 0, 0.0)
    assert not stats.receive(9, 0, 0.0)  # not in sequence: probation starts again
    assert stats.receive(10, 0, 0.0)
    receive_all(stats, list(range(11, 100)))
    assert (stats.expected, stats.lost) == (90, 0)
    assert not stats.receive(40_000, 0, 0.0)  # a stray jump is not believed ...
    assert stats.receive(100, 0, 0.0)
    assert not stats.receive(20_000, 0, 0.0)
    assert stats.receive(20_001, 0, 0.0)  # ... unless the next packet follows it
    assert (stats.expected, stats.received, stats.highest_sequence) == (1, 1, 20_001)
    immediate = ReceptionStats(1, probation=0)
    assert immediate.receive(0, 0, 0.0)
    assert (immediate.expected, immediate.received) == (1, 1)


def test_jitter_by_hand() -> None:
    stats = ReceptionStats(1)
    for seq, arrival in enumerate([0.000, 0.020, 0.045, 0.060, 0.080]):
        stats.receive(seq, seq * 160, arrival)
    # probation spends packet 0; then transit 0, 40, 0, 0 timestamp units:
    # J = 40/16 = 2.5; J += (40 - J)/16 = 4.84375; J += (0 - J)/16 = 4.541015625
    assert stats.jitter == pytest.approx(4.541015625)
    assert stats.report_block(0.0).jitter == 4
    assert stats.quality().jitter_ms == pytest.approx(4.541015625 / 8)


def test_jitter_across_timestamp_wrap() -> None:
    stats = ReceptionStats(1)
    for seq in range(10):
        stats.receive(seq, (0xFFFF_FF00 + seq * 160) & 0xFFFF_FFFF, seq * 0.02)
    assert stats.jitter == pytest.approx(0, abs=1e-6)


def test_last_sender_report_in_the_next_block() -> None:
    stats = ReceptionStats(1)
    assert stats.report_block(5.0).last_sr == 0
    stats.note_sender_report(OUR_SR_NTP, 100.0)
    block = stats.report_block(100.5)
    assert (block.last_sr, block.delay_since_last_sr) == (0xB28816AF, 32768)


def test_mos_of_a_perfect_g711_call() -> None:
    assert estimate_mos(0, 0) == pytest.approx(4.41, abs=0.01)
    stats = ReceptionStats(1)
    for seq in range(500):
        stats.receive(seq, seq * 160, seq * 0.02)
    quality = stats.quality(rtt_s=0.02)
    assert (quality.packets_expected, quality.packets_lost, quality.loss_percent) == (499, 0, 0)
    assert quality.rtt_ms == pytest.approx(20)
    assert quality.mos == pytest.approx(4.4, abs=0.05)


def test_mos_by_hand() -> None:
    # 1% random loss, 60 ms: Id = 0.024 * 60 = 1.44, Ie,eff = 95 * 1 / (1 + 4.3) = 17.9245,
    # R = 93.2 - 1.44 - 17.9245 = 73.8355, MOS = 1 + 0.035 R + 7e-6 R (R - 60)(100 - R)
    assert estimate_mos(1, 60) == pytest.approx(3.7713, abs=1e-4)
    # 400 ms: Id = 0.024 * 400 + 0.11 * (400 - 177.3) = 34.097, R = 59.103,
    # MOS = 1 + 2.068605 - 7e-6 * 59.103 * 0.897 * 40.897 = 3.068605 - 0.015177
    assert estimate_mos(0, 400) == pytest.approx(3.0534, abs=1e-4)
    assert estimate_mos(1, 60, bpl=BPL_G711_PLC) > estimate_mos(1, 60)


def test_mos_falls_with_loss_and_delay() -> None:
    by_loss = [estimate_mos(loss / 4, 60) for loss in range(0, 200)]
    by_delay = [estimate_mos(0, delay) for delay in range(0, 1000, 5)]
    for series in (by_loss, by_delay):
        assert all(a > b for a, b in pairwise(series) if b > 1)
        assert all(a >= b for a, b in pairwise(series))
        assert series[-1] < 2
    by_r = [mos_from_r(r / 2) for r in range(-10, 220)]
    assert all(a <= b for a, b in pairwise(by_r))
    assert (by_r[0], by_r[-1]) == (1.0, 4.5)


def test_report_interval() -> None:
    assert report_interval(lambda: 0.5) == pytest.approx(5 / 1.21828, abs=1e-4)
    assert report_interval(lambda: 0.0) == pytest.approx(2.5 / 1.21828, abs=1e-4)
    assert report_interval(lambda: 0.5, initial=True) == pytest.approx(2.5 / 1.21828, abs=1e-4)
    rng = random.Random(7)
    draws = [report_interval(rng.random) for _ in range(2000)]
    assert 2.05 < min(draws) < 2.2
    assert 6.0 < max(draws) < 6.16
    assert sum(draws) / len(draws) == pytest.approx(4.1, abs=0.1)


SEEDS = [*sorted(p.read_bytes() for p in DATA.glob("*.rtcp")), build_rtcp(COMPOUND)]
U32 = st.integers(0, 0xFFFF_FFFF)
TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
BLOCKS = st.lists(st.builds(ReportBlock, U32, st.integers(0, 255),
                            st.integers(-0x80_0000, 0x7F_FFFF), U32, U32, U32, U32), max_size=3)
PACKETS = st.lists(st.one_of(
    st.builds(SenderReport, U32, st.integers(0, 2**64 - 1), U32, U32, U32, BLOCKS.map(tuple)),
    st.builds(ReceiverReport, U32, BLOCKS.map(tuple)),
    st.builds(SourceDescription, st.lists(st.builds(
        SdesChunk, U32, st.lists(st.tuples(st.integers(1, 255), TEXT), max_size=3).map(tuple)),
        max_size=3).map(tuple)),
    st.builds(Bye, st.lists(U32, max_size=3).map(tuple), TEXT),
), min_size=1, max_size=4)


def check(data: bytes) -> None:
    is_rtcp(data)
    try:
        parse_rtcp(data)
    except RtcpParseError:
        return


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if kind == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        else:
            data = data[:at]
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_packets_raise_only_rtcp_parse_error(data: bytes) -> None:
    check(data)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_rtcp_parse_error(data: bytes) -> None:
    check(data)


@FUZZ
@given(PACKETS.map(tuple))
def test_any_compound_round_trips(packets: tuple[RtcpPacket, ...]) -> None:
    assert parse_rtcp(build_rtcp(packets)) == packets
