"""The RTP engine over real UDP sockets on loopback."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator

import pytest

from speech.g711 import ALAW_TO_ULAW, ULAW_TO_ALAW
from tests.conftest import wait_for
from trunks.voip import media
from trunks.voip.media import FRAME_BYTES, JITTER_FRAMES, PCMA, PCMU, RtpEngine, RtpStream
from trunks.voip.rtp import RtpPacket, build_rtp, parse_event, parse_rtp

ULAW_SILENCE = b"\xff" * FRAME_BYTES


@pytest.fixture
def peer() -> Iterator[socket.socket]:
    """A raw UDP socket playing the far end."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    yield sock
    sock.close()


def frame(n: int) -> bytes:
    return bytes([n % 256]) * FRAME_BYTES


def read_frames(stream: RtpStream, count: int) -> list[bytes]:
    frames = []
    while len(frames) < count:
        got = stream.read(timeout=2.0)
        assert got is not None, f"no frame after {len(frames)}"
        frames.append(got)
    return frames


def test_audio_flows_between_two_streams_in_order(engine: RtpEngine) -> None:
    a, b = engine.open(PCMU), engine.open(PCMU)
    a.remote, b.remote = b.local_address, a.local_address
    a.play(b"".join(frame(n) for n in range(1, 51)))
    frames = read_frames(b, 120)
    first = frames.index(frame(1))
    assert frames[first:first + 50] == [frame(n) for n in range(1, 51)]
    assert set(frames[:first]) <= {ULAW_SILENCE}, "silence is sent while nothing plays"
    assert b.stats.lost == 0 and b.stats.ignored == 0
    a.close()
    b.close()
    wait_for(lambda: engine.stream_count == 0)
    assert a.sock.fileno() == -1


def test_packets_are_well_formed_and_paced_by_timestamp(engine: RtpEngine,
                                                        peer: socket.socket) -> None:
    stream = engine.open(PCMA, remote=peer.getsockname())
    stream.play(b"\x01" * 1000)  # 6.25 frames: the last is padded with A-law silence
    packets = [parse_rtp(peer.recv(2048)) for _ in range(10)]
    stream.close()
    assert {p.payload_type for p in packets} == {PCMA}
    assert len({p.ssrc for p in packets}) == 1
    assert [(b.sequence - a.sequence) & 0xFFFF for a, b in itertools.pairwise(packets)] == [1] * 9
    assert [(b.timestamp - a.timestamp) for a, b in itertools.pairwise(packets)] == [160] * 9
    payloads = [p.payload for p in packets]
    assert payloads[:6] == [b"\x01" * 160] * 6
    assert payloads[6] == b"\x01" * 40 + b"\xd5" * 120
    assert payloads[7:] == [b"\xd5" * 160] * 3


def send(peer: socket.socket, stream: RtpStream, seq: int, payload: bytes,
         pt: int = PCMU, ts: int | None = None) -> None:
    packet = RtpPacket(pt, seq, seq * 160 if ts is None else ts, 1234, payload)
    peer.sendto(build_rtp(packet), stream.local_address)


def test_jitter_buffer_reorders_and_fills_losses(engine: RtpEngine,
                                                 peer: socket.socket) -> None:
    stream = engine.open(PCMU, remote=peer.getsockname())
    order = [0, 1, 2, 3, 4, 6, 7, 9, 8, 10, 11, 12]  # 5 lost, 8 and 9 swapped
    for seq in order:
        send(peer, stream, seq, frame(seq + 1))
    frames = read_frames(stream, 13)
    assert frames == [frame(n + 1) if n != 5 else ULAW_SILENCE for n in range(13)]
    assert stream.stats.lost == 1
    send(peer, stream, 3, frame(99))  # long past its playout time
    wait_for(lambda: stream.stats.late == 1)
    stream.close()


def test_garbage_and_foreign_packets_are_ignored(engine: RtpEngine,
                                                 peer: socket.socket) -> None:
    stream = engine.open(PCMU, remote=peer.getsockname())
    junk = [b"", b"\x00" * 5, b"\x40" + bytes(171), b"\x80\xc8" + bytes(30),
            build_rtp(RtpPacket(PCMA, 1, 160, 1, frame(1))),          # wrong codec
            build_rtp(RtpPacket(PCMU, 1, 160, 1, b"")),               # no audio
            build_rtp(RtpPacket(101, 1, 160, 1, bytes([42, 0, 0, 0])))]  # not a DTMF digit
    for data in junk:
        peer.sendto(data, stream.local_address)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.sendto(build_rtp(RtpPacket(PCMU, 1, 160, 1, frame(7))), stream.local_address)
    wait_for(lambda: stream.stats.ignored == len(junk) + 1, what="every bad packet counted")
    for seq in range(JITTER_FRAMES + 2):
        send(peer, stream, 100 + seq, frame(50))
    assert frame(50) in read_frames(stream, JITTER_FRAMES + 2)
    assert stream.stats.received == JITTER_FRAMES + 2
    stream.close()


def test_dtmf_round_trip_between_streams(engine: RtpEngine) -> None:
    heard: list[str] = []
    a = engine.open(PCMU)
    b = engine.open(PCMU, on_digit=heard.append)
    a.remote, b.remote = b.local_address, a.local_address
    a.send_digits("12#")
    digits = [b.digits.get(timeout=2.0) for _ in range(3)]
    assert digits == ["1", "2", "#"]
    wait_for(lambda: a.stats.sent > 40)
    assert b.digits.empty(), "each key press is reported once, not per packet"
    assert heard == ["1", "2", "#"]
    with pytest.raises(ValueError, match="not DTMF digits"):
        a.send_digits("1x")
    a.close()
    b.close()


def test_dtmf_packets_follow_rfc_4733(engine: RtpEngine, peer: socket.socket) -> None:
    stream = engine.open(PCMU, remote=peer.getsockname())
    stream.send_digits("5")
    packets = [parse_rtp(peer.recv(2048)) for _ in range(20)]
    stream.close()
    events = [p for p in packets if p.payload_type == 101]
    assert len(events) == 8 and events[0].marker and not any(p.marker for p in events[1:])
    assert len({p.timestamp for p in events}) == 1, "one event, one timestamp"
    parsed = [parse_event(p.payload) for p in events]
    assert {e.digit for e in parsed} == {"5"}
    assert [e.end for e in parsed] == [False] * 5 + [True] * 3
    assert [e.duration for e in parsed] == [160, 320, 480, 640, 800, 800, 800, 800]


def test_flush_stops_playback_at_once(engine: RtpEngine, peer: socket.socket) -> None:
    stream = engine.open(PCMU, remote=peer.getsockname())
    stream.play(frame(9) * 500)  # 10 s
    assert parse_rtp(peer.recv(2048)).payload in (frame(9), ULAW_SILENCE)
    stream.flush()
    assert not stream.playing
    peer.settimeout(0.2)
    while True:  # drain what was sent before the flush
        try:
            data = peer.recv(2048)
        except TimeoutError:
            break
        if parse_rtp(data).payload == ULAW_SILENCE:
            break
    assert all(parse_rtp(peer.recv(2048)).payload == ULAW_SILENCE for _ in range(5))
    stream.close()


def test_queue_and_port_range_limits(peer: socket.socket) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1] & ~1
    engine = RtpEngine(ports=range(base + 100, base + 106))
    engine.start()
    try:
        streams = [engine.open(PCMU) for _ in range(3)]
        assert [s.local_address[1] for s in streams] == [base + 100, base + 102, base + 104]
        with pytest.raises(OSError, match="no free pair of RTP and RTCP ports"):
            engine.open(PCMU)
        with pytest.raises(ValueError, match="more than 300 s of audio"):
            streams[0].play(ULAW_SILENCE * 15_001)
        with pytest.raises(ValueError, match=r"payload type 9 is not G\.711"):
            engine.open(9)
    finally:
        engine.stop()
    assert all(s.sock.fileno() == -1 for s in streams)


def test_dtmf_uses_the_negotiated_payload_type(engine: RtpEngine) -> None:
    a = engine.open(PCMU, dtmf_payload_type=96)
    b = engine.open(PCMU, dtmf_payload_type=96)
    other = engine.open(PCMU)  # still expects 101: the same packets are not digits to it
    a.remote, b.remote, other.remote = b.local_address, a.local_address, a.local_address
    a.send_digits("7")
    assert b.digits.get(timeout=2.0) == "7"
    a.remote = other.local_address
    a.send_digits("8")
    wait_for(lambda: other.stats.ignored >= 1, what="payload type 96 ignored by a 101 stream")
    assert other.digits.empty()
    for stream in (a, b, other):
        stream.close()


def test_bridge_relays_frames_both_ways_translating_the_codec(engine: RtpEngine) -> None:
    # caller phone <-> caller leg (mu-law) == bridge == staff leg (A-law) <-> staff phone
    caller_phone, caller_leg = engine.open(PCMU), engine.open(PCMU)
    staff_leg, staff_phone = engine.open(PCMA), engine.open(PCMA)
    caller_phone.remote, caller_leg.remote = caller_leg.local_address, caller_phone.local_address
    staff_phone.remote, staff_leg.remote = staff_leg.local_address, staff_phone.local_address
    caller_leg.bridge(staff_leg, ULAW_TO_ALAW)
    staff_leg.bridge(caller_leg, ALAW_TO_ULAW)
    spoken = bytes(range(0, 256, 2))[:FRAME_BYTES // 2] * 2  # one distinctive frame
    caller_phone.play(spoken * 10)
    staff_phone.play(spoken[::-1] * 10)
    heard_by_staff = read_frames(staff_phone, 40)
    heard_by_caller = read_frames(caller_phone, 40)
    assert heard_by_staff.count(spoken.translate(ULAW_TO_ALAW)) == 10
    assert heard_by_caller.count(spoken[::-1].translate(ALAW_TO_ULAW)) == 10
    assert caller_leg.read(timeout=0.1) is None, "a bridged leg keeps nothing for read()"
    caller_leg.bridge(None)
    caller_phone.play(spoken)
    assert spoken in read_frames(caller_leg, 20), "unbridged, the leg's audio is read again"
    for stream in (caller_phone, caller_leg, staff_leg, staff_phone):
        stream.close()


def audio(frames: int) -> bytes:
    """`frames` 20 ms frames of distinct bytes, so any misplaced byte shows."""
    return bytes((i * 7 + i // 160) % 251 for i in range(frames * FRAME_BYTES))


@pytest.mark.parametrize("packet_ms", [10, 30, 40, 60])
def test_packets_of_any_length_are_heard(engine: RtpEngine, peer: socket.socket,
                                         packet_ms: int) -> None:
    stream = engine.open(PCMU, remote=peer.getsockname())
    sent, size = audio(30), packet_ms * 8
    for seq, start in enumerate(range(0, len(sent), size)):
        send(peer, stream, seq, sent[start:start + size], ts=5000 + start)
    assert b"".join(read_frames(stream, 30)) == sent
    assert stream.stats.lost == 0 and stream.stats.ignored == 0
    stream.close()


def test_short_packets_out_of_order_and_lost_fill_their_frames(engine: RtpEngine,
                                                               peer: socket.socket) -> None:
    stream = engine.open(PCMU, remote=peer.getsockname())
    sent = audio(10)
    halves = [(n, sent[n * 80:(n + 1) * 80]) for n in range(20)]
    order = [0, 1, 3, 2, 4, 5, 6, 8, 9, *range(10, 20)]  # 7 lost: half of frame 3 silent
    for n in order:
        send(peer, stream, n, halves[n][1], ts=n * 80)
    frames = read_frames(stream, 10)
    whole = [sent[i * 160:(i + 1) * 160] for i in (0, 1, 2, *range(4, 10))]
    assert frames[:3] + frames[4:] == whole
    assert frames[3] == sent[480:560] + ULAW_SILENCE[:80]
    stream.close()


def test_a_new_source_is_heard_whatever_its_timestamps(engine: RtpEngine,
                                                       peer: socket.socket) -> None:
    """A peer whose media restarts (a new SSRC, RFC 3550 8) starts its own timeline:
    its packets are not taken for late ones of the old source."""
    stream = engine.open(PCMU, remote=peer.getsockname())
    first, second = audio(10), audio(10)[::-1]
    for n in range(10):
        peer.sendto(build_rtp(RtpPacket(PCMU, n, 4_000_000 + n * 160, 1111,
                                        first[n * 160:(n + 1) * 160])), stream.local_address)
    assert b"".join(read_frames(stream, 10)) == first
    for n in range(10):  # timestamps far behind the first source's
        peer.sendto(build_rtp(RtpPacket(PCMU, 500 + n, 7 + n * 160, 2222,
                                        second[n * 160:(n + 1) * 160])), stream.local_address)
    heard = b"".join(read_frames(stream, 40))
    assert second in heard and stream.stats.late == 0
    stream.close()


def rtp_from(sock: socket.socket, stream: RtpStream, seq: int, ssrc: int = 77) -> None:
    sock.sendto(build_rtp(RtpPacket(PCMU, seq, seq * 160, ssrc, frame(seq))),
                stream.local_address)


def udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    return sock


def test_a_stream_latches_to_where_the_peer_really_sends_from(engine: RtpEngine) -> None:
    sdp_address = ("127.0.0.1", 9)  # what a phone behind NAT writes in its SDP
    with udp() as nat, udp() as moved, udp() as stranger:
        stream = engine.open(PCMU, remote=sdp_address, latching=True)
        rtp_from(nat, stream, 1)
        wait_for(lambda: stream.remote == nat.getsockname(), what="latched to the NAT")
        assert parse_rtp(nat.recv(2048)).payload_type == PCMU, "our RTP goes there now"
        for seq in range(2, 20):
            rtp_from(stranger, stream, seq, ssrc=666)
        wait_for(lambda: stream.stats.ignored == 18, what="a stranger's packets ignored")
        assert stream.remote == nat.getsockname()
        rtp_from(moved, stream, 20)  # the same SSRC from a new port: the NAT rebound
        wait_for(lambda: stream.remote == moved.getsockname(), what="followed the SSRC")
        stream.close()


def test_latching_is_only_for_the_first_moments_and_can_be_off(
        engine: RtpEngine, peer: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media, "LATCH_WINDOW_S", 0.2)
    with udp() as late:
        stream = engine.open(PCMU, remote=("127.0.0.1", 9), latching=True)
        time.sleep(0.3)  # the phone stayed silent; then someone sprays the port
        rtp_from(late, stream, 1)
        wait_for(lambda: stream.stats.ignored == 1, what="too late to latch")
        assert stream.remote == ("127.0.0.1", 9)
        stream.retarget(("127.0.0.1", 11))  # a re-INVITE moved the media: a new window
        rtp_from(late, stream, 2)
        wait_for(lambda: stream.remote == late.getsockname(), what="latched after the move")
        stream.close()
        fixed = engine.open(PCMU, remote=peer.getsockname(), latching=False)
        rtp_from(late, fixed, 1)
        wait_for(lambda: fixed.stats.ignored == 1, what="ignored without latching")
        assert fixed.remote == peer.getsockname()
        fixed.close()
    spoken = engine.open(PCMU, remote=peer.getsockname(), latching=True)
    send(peer, spoken, 1, frame(1))  # the SDP's address speaks first: nobody else may latch
    with udp() as other:
        wait_for(lambda: spoken.stats.received == 1)
        rtp_from(other, spoken, 2, ssrc=999)
        wait_for(lambda: spoken.stats.ignored == 1)
    assert spoken.remote == peer.getsockname()
    spoken.close()
