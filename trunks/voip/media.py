"""The RTP engine: every call's media in one thread, paced by an absolute clock.

Stock pyVoIP runs two threads per call and paces with relative sleeps, and it
loses pacing near 100 calls. Here one thread runs a selector over every
stream's socket and a grid of 20 ms ticks: tick n is due at ``t0 + n * 20 ms``,
whatever the previous tick cost. At each tick every stream sends one frame
(queued audio, a DTMF event, or silence) and plays out one received frame from
its jitter buffer, filling gaps with silence. Received audio and digits are
queued, bounded, for the call's worker thread.

Streams move encoded G.711 payloads; audio conversion belongs to `speech.g711`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from trunks.voip.rtcp import REPORT_INTERVAL_S, is_rtcp
from trunks.voip.rtcp_session import LegQuality, RtcpSession
from trunks.voip.rtp import (
    DTMF_DIGITS,
    RtpPacket,
    RtpParseError,
    TelephoneEvent,
    build_event,
    build_rtp,
    parse_event,
    parse_rtp,
)
from trunks.waker import Waker, stop_loop

logger = logging.getLogger(__name__)

FRAME_S = 0.020
"""Packet time: 20 ms of audio per packet."""
FRAME_BYTES = 160
"""20 ms of 8 kHz G.711."""
PCMU, PCMA, TELEPHONE_EVENT = 0, 8, 101
SILENCE = {PCMU: b"\xff" * FRAME_BYTES, PCMA: b"\xd5" * FRAME_BYTES}
JITTER_FRAMES = 3
"""Frames buffered before playout starts (60 ms), absorbing arrival jitter."""
MAX_JITTER_FRAMES = 50
"""A packet further ahead than this (1 s) restarts playout instead of being buffered."""
MAX_RECEIVED_FRAMES = 500
"""Played-out frames kept for a slow reader (10 s); the oldest are dropped."""
MAX_QUEUED_FRAMES = 15_000
"""Audio queued to send (5 minutes); `play` refuses more."""
BIND_ATTEMPTS = 64
"""Tries at an even port with a free odd neighbour when the system picks the ports."""
MAX_CATCH_UP_TICKS = 5
"""After a stall, ticks sent late in a burst before the grid is moved on (100 ms)."""
MAX_BRIDGED_FRAMES = 5
"""Frames from a bridged peer waiting to be sent; older ones are dropped (100 ms)."""
LATCH_WINDOW_S = 2.0
"""How long after its SDP address is set a stream may latch to a source the SDP did not
name; a peer behind NAT sends at once, and later a stranger's packets are ignored."""
DTMF_FRAMES = 5
"""A sent digit lasts 100 ms, then 60 ms of silence (RFC 4733 end packets sent 3 times)."""


@dataclass
class RtpStats:
    sent: int = 0
    received: int = 0
    lost: int = 0
    """Frames played out as silence because no packet covering them came in time (with
    a peer that suppresses silence, its pauses count too)."""
    late: int = 0
    ignored: int = 0
    """Malformed packets, packets of another payload type, or from an address that is
    neither the remote's nor one it latched to."""
    skipped_ticks: int = 0


class RtpStream:
    """One call's media: a UDP socket, its send queue, jitter buffer and digit queue."""

    def __init__(self, engine: RtpEngine, sock: socket.socket, payload_type: int,
                 remote: tuple[str, int] | None, on_digit: Callable[[str], None] | None,
                 dtmf_payload_type: int = TELEPHONE_EVENT, latching: bool = False,
                 rtcp_sock: socket.socket | None = None) -> None:
        self.engine = engine
        self.rtcp_sock = rtcp_sock
        """RTCP's socket, on the RTP port + 1 (None: RTCP only multiplexed, if at all)."""
        self.rtcp_port: int | None = None
        """The peer's RTCP port if its SDP named one (a=rtcp); else its RTP port + 1."""
        self.dtmf_payload_type = dtmf_payload_type
        """Telephone-event payload type, as negotiated in the SDP."""
        self.sock = sock
        bound = sock.getsockname()[:2]
        self.local_address: tuple[str, int] = (engine.advertise or bound[0], bound[1])
        """Where our SDP says to send this stream's RTP: the engine's advertised host (if
        set) and the port bound."""
        self.payload_type = payload_type
        self.remote = remote
        self.sending = True
        """Whether to send: False while the far end holds the call (RFC 3264 6.1: an
        answer of recvonly or inactive sends nothing); its clock runs on meanwhile."""
        self.stats = RtpStats()
        self.digits: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._on_digit = on_digit
        self.on_frame: Callable[[bytes], None] | None = None
        """Given each frame the stream plays out (silence fill included), on the engine's
        thread, so it must be quick: an in-band DTMF detector."""
        self._silence = SILENCE[payload_type]
        self._outbound: deque[bytes] = deque()
        self._dtmf: deque[str] = deque()
        self._event: tuple[str, int, int] | None = None  # digit, start timestamp, frames sent
        # RFC 3550: random SSRC and initial sequence number and timestamp
        self._ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._timestamp = secrets.randbits(32)
        self.rtcp = RtcpSession(self._ssrc, engine.cname, interval_s=engine.rtcp_interval_s)
        self.latching = latching
        """Whether the stream may latch to where the peer's RTP comes from."""
        self._latched_ssrc: int | None = None
        self._latch_until = time.monotonic() + LATCH_WINDOW_S
        self._jitter: dict[int, bytearray] = {}  # 20 ms frames by index from _base_ts
        self._base_ts: int | None = None
        self._playout_ssrc: int | None = None
        """The SSRC whose timestamps `_base_ts` counts from."""
        self._next_frame = 0
        self._prebuffer = 0
        self._last_event_ts: int | None = None
        self._received: deque[bytes] = deque(maxlen=MAX_RECEIVED_FRAMES)
        self._received_ready = threading.Condition()
        self._peer: tuple[RtpStream, bytes | None] | None = None
        self.closed = False
        self.last_heard = time.monotonic()
        """When the latest well-formed packet (audio or DTMF) came from the remote."""

    # Called from call threads.

    def play(self, payload: bytes) -> None:
        """Queue encoded audio to send; the last partial frame is padded with silence."""
        frames = [payload[i:i + FRAME_BYTES] for i in range(0, len(payload), FRAME_BYTES)]
        if frames and len(frames[-1]) < FRAME_BYTES:
            frames[-1] += self._silence[len(frames[-1]):]
        if len(self._outbound) + len(frames) > MAX_QUEUED_FRAMES:
            raise ValueError(f"more than {MAX_QUEUED_FRAMES * FRAME_S:.0f} s of audio queued")
        self._outbound.extend(frames)

    def flush(self) -> None:
        """Drop queued audio at once (barge-in)."""
        self._outbound.clear()

    @property
    def playing(self) -> bool:
        return bool(self._outbound)

    def send_digits(self, digits: str) -> None:
        """Queue RFC 4733 DTMF events, sent between audio frames."""
        if any(d not in DTMF_DIGITS for d in digits):
            raise ValueError(f"not DTMF digits: {digits!r}")
        self._dtmf.extend(digits)

    def retarget(self, remote: tuple[str, int]) -> None:
        """Send to `remote` from now on (an SDP answer, or a re-INVITE that moved the
        peer's media); latching starts over from there."""
        if remote != self.remote:
            self.remote = remote
            self._latched_ssrc = None
            self._latch_until = time.monotonic() + LATCH_WINDOW_S

    def use_codec(self, payload_type: int, dtmf_payload_type: int | None) -> None:
        """Switch to the codec the far end's SDP answer chose."""
        self._silence = SILENCE[payload_type]
        self.payload_type = payload_type
        if dtmf_payload_type is not None:
            self.dtmf_payload_type = dtmf_payload_type

    def bridge(self, peer: RtpStream | None, translate: bytes | None = None) -> None:
        """Send each frame this stream plays out on to `peer` (None: stop), through the
        `bytes.translate` table `translate` when the two use different codecs. Bridge
        both ways for a conversation; while bridged, `read` gets nothing."""
        self._peer = None if peer is None else (peer, translate)

    def read(self, timeout: float | None = None) -> bytes | None:
        """The next played-out 20 ms frame (silence where packets were lost), or None."""
        with self._received_ready:
            if not self._received and not self._received_ready.wait(timeout):
                return None
            return self._received.popleft() if self._received else None

    def quality(self) -> LegQuality:
        """The call's quality so far, both ways, from RTCP and our own counts."""
        return self.rtcp.quality()

    def close(self) -> None:
        self.engine.remove(self)

    # Called from the engine thread.

    def tick(self) -> None:
        self._send_next()
        self._play_out()
        report = self.rtcp.due()
        if report is not None:
            self._send_rtcp(report)

    def on_readable(self) -> None:
        while True:
            try:
                data, source = self.sock.recvfrom(2048)
            except OSError:  # nothing more to read now, or an error queued for a send
                return
            self._on_datagram(data, source[:2])

    def on_rtcp_readable(self) -> None:
        assert self.rtcp_sock is not None
        while True:
            try:
                data, source = self.rtcp_sock.recvfrom(2048)
            except OSError:
                return
            self._on_rtcp(data, source[:2])

    def close_sockets(self) -> None:
        self.sock.close()
        if self.rtcp_sock is not None:
            self.rtcp_sock.close()

    def send_bye(self) -> None:
        """RTCP BYE with a last report, as the stream closes."""
        self._send_rtcp(self.rtcp.bye())

    def _send_rtcp(self, data: bytes) -> None:
        remote = self.remote
        if remote is None:
            return
        sock = self.sock if self.rtcp.mux or self.rtcp_sock is None else self.rtcp_sock
        destination = self.rtcp.remote or (
            remote if self.rtcp.mux else (remote[0], self.rtcp_port or remote[1] + 1))
        with contextlib.suppress(OSError):
            sock.sendto(data, destination)

    def _on_rtcp(self, data: bytes, source: tuple[str, int]) -> None:
        """A report from the peer: only from the peer's address (latched or not)."""
        if self.remote is None or source[0] != self.remote[0] \
                or not self.rtcp.on_rtcp(data, source):
            self.stats.ignored += 1

    def _send_next(self) -> None:
        if self.remote is None or not self.sending:  # queued audio waits for the resume
            self._timestamp = (self._timestamp + FRAME_BYTES) & 0xFFFFFFFF
            return
        packet = self._next_event_packet()
        if packet is None:
            payload = self._outbound.popleft() if self._outbound else self._silence
            packet = RtpPacket(self.payload_type, self._seq, self._timestamp, self._ssrc, payload)
        with contextlib.suppress(OSError):
            self.sock.sendto(build_rtp(packet), self.remote)
            self.stats.sent += 1
            self.rtcp.on_sent(packet)
        self._seq = (self._seq + 1) & 0xFFFF
        self._timestamp = (self._timestamp + FRAME_BYTES) & 0xFFFFFFFF

    def _next_event_packet(self) -> RtpPacket | None:
        if self._event is None:
            if not self._dtmf:
                return None
            self._event = (self._dtmf.popleft(), self._timestamp, 0)
        digit, start, sent = self._event
        self._event = (digit, start, sent + 1)
        if sent >= DTMF_FRAMES + 3 + 3:  # 3 end packets, then 3 frames of silence
            self._event = None
            return None
        if sent >= DTMF_FRAMES + 3:
            return RtpPacket(self.payload_type, self._seq, self._timestamp, self._ssrc,
                             self._silence)
        end = sent >= DTMF_FRAMES
        duration = FRAME_BYTES * min(sent + 1, DTMF_FRAMES)
        payload = build_event(TelephoneEvent(digit, end, 10, duration))
        return RtpPacket(self.dtmf_payload_type, self._seq, start, self._ssrc, payload,
                         sent == 0)

    def _on_datagram(self, data: bytes, source: tuple[str, int]) -> None:
        if is_rtcp(data):  # RTCP multiplexed on the RTP port (RFC 5761)
            self._on_rtcp(data, source)
            return
        try:
            packet = parse_rtp(data)
        except RtpParseError:
            self.stats.ignored += 1
            return
        if self.remote is not None and source != self.remote and not self._latch(packet, source):
            self.stats.ignored += 1
            return
        self.last_heard = time.monotonic()
        self.rtcp.on_received(packet)
        if packet.payload_type == self.dtmf_payload_type:
            self._on_event(packet)
        elif packet.payload_type == self.payload_type and packet.payload:
            self.stats.received += 1
            self._buffer(packet)
        else:
            self.stats.ignored += 1

    def _latch(self, packet: RtpPacket, source: tuple[str, int]) -> bool:
        """Symmetric RTP (RFC 4961): whether to take `packet`, from an address other than
        the one the SDP gave, and send there from now on. The stream latches once, to the
        first source heard within `LATCH_WINDOW_S` of its SDP address being set, unless
        that address spoke first; after that only a packet carrying the latched SSRC moves
        it (the peer's NAT mapping changed)."""
        if not self.latching:
            return False
        if self._latched_ssrc is None:
            if time.monotonic() > self._latch_until:
                return False
        elif packet.ssrc != self._latched_ssrc:
            return False
        logger.info("RTP stream %d: latched to %s:%d (SSRC %08x); the SDP said %s",
                    self.local_address[1], *source, packet.ssrc, self.remote)
        self.remote, self._latched_ssrc = source, packet.ssrc
        return True

    def _buffer(self, packet: RtpPacket) -> None:
        """Put an audio packet's samples into the jitter buffer's 20 ms frames by its
        timestamp, so packets of any length (10, 30, 60 ms ...) and out of order fill the
        frames they cover."""
        if self._base_ts is None or packet.ssrc != self._playout_ssrc:
            self._start_playout(packet.timestamp)  # a new source: its own timeline (a
            self._playout_ssrc = packet.ssrc  # phone whose media restarts, a B2BUA)
        assert self._base_ts is not None
        offset = (packet.timestamp - self._base_ts) & 0xFFFFFFFF
        if offset >= 1 << 31:
            offset -= 1 << 32  # before the base: a late packet
        first = offset // FRAME_BYTES
        last = (offset + len(packet.payload) - 1) // FRAME_BYTES
        if first - self._next_frame > MAX_JITTER_FRAMES:  # a jump: play on from here
            self._start_playout(packet.timestamp)
            offset, first, last = 0, 0, (len(packet.payload) - 1) // FRAME_BYTES
        if last < self._next_frame:
            self.stats.late += 1
            return
        if self._latched_ssrc is None and self.remote is not None:
            self._latched_ssrc = packet.ssrc  # the SDP's address spoke first
        payload, position = packet.payload, offset
        while payload:
            index, within = divmod(position, FRAME_BYTES)
            size = min(FRAME_BYTES - within, len(payload))
            if index >= self._next_frame:
                frame = self._jitter.setdefault(index, bytearray(self._silence))
                frame[within:within + size] = payload[:size]
            payload, position = payload[size:], position + size

    def _start_playout(self, timestamp: int) -> None:
        self._jitter.clear()
        self._base_ts, self._next_frame = timestamp, 0
        self._prebuffer = JITTER_FRAMES

    def _relay(self, frame: bytes) -> None:
        if len(self._outbound) >= MAX_BRIDGED_FRAMES:
            self._outbound.popleft()  # keep the conversation's delay short
        self._outbound.append(frame)

    def _on_event(self, packet: RtpPacket) -> None:
        try:
            event = parse_event(packet.payload)
        except RtpParseError:
            self.stats.ignored += 1
            return
        if packet.timestamp == self._last_event_ts:
            return  # the same key press, repeated or ending
        self._last_event_ts = packet.timestamp
        self.receive_digit(event.digit)

    def receive_digit(self, digit: str) -> None:
        """A key the caller pressed, however it came (RFC 4733 here, SIP INFO, tones)."""
        self.digits.put(digit)
        if self._on_digit is not None:
            self._on_digit(digit)

    def _play_out(self) -> None:
        if self._base_ts is None:
            return
        if self._prebuffer:
            self._prebuffer -= 1
            return
        buffered = self._jitter.pop(self._next_frame, None)
        if buffered is None:
            frame = self._silence
            if self._jitter:
                self.stats.lost += 1
        else:
            frame = bytes(buffered)
        self._next_frame += 1
        if self.on_frame is not None:
            try:
                self.on_frame(frame)
            except Exception:  # a listener's failure must not stop the call's audio
                logger.exception("RTP stream %d: frame listener failed; removed",
                                 self.local_address[1])
                self.on_frame = None
        bridged = self._peer
        if bridged is not None:
            peer, translate = bridged
            peer._relay(frame if translate is None else frame.translate(translate))
            return
        with self._received_ready:
            self._received.append(frame)
            self._received_ready.notify()


class RtpEngine:
    """Runs every `RtpStream`; start it once per process."""

    def __init__(self, host: str = "127.0.0.1", ports: range | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 rtcp_interval_s: float = REPORT_INTERVAL_S,
                 advertise: str | None = None) -> None:
        """`host`: the address streams bind (0.0.0.0: every interface); `advertise`: the
        one our SDP announces, when peers must use another (a wildcard bind, NAT);
        `rtcp_interval_s`: each stream's nominal RTCP report interval."""
        self.host = host
        self.advertise = advertise
        self.rtcp_interval_s = rtcp_interval_s
        self.cname = f"hotline-{secrets.token_hex(4)}@{host}"
        """Our RTCP canonical name (RFC 3550 6.5.1), one per engine."""
        self._ports = ports
        self._next_port = ports.start if ports else 0
        self._clock = clock
        self._streams: dict[int, RtpStream] = {}  # by id(): a closed socket has no fileno
        self._changes: queue.SimpleQueue[tuple[bool, RtpStream]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._waker = Waker()
        self._thread = threading.Thread(target=self._run, name="rtp-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if not stop_loop(self._stopping, self._waker, self._thread, timeout):
            return
        pending = []  # opened, but the loop never took them in
        with contextlib.suppress(queue.Empty):
            while True:
                pending.append(self._changes.get_nowait()[1])
        for stream in [*self._streams.values(), *pending]:
            stream.closed = True
            stream.close_sockets()
        self._streams.clear()
        self._waker.close()

    def open(self, payload_type: int = PCMU, remote: tuple[str, int] | None = None,
             on_digit: Callable[[str], None] | None = None,
             dtmf_payload_type: int = TELEPHONE_EVENT, latching: bool = False) -> RtpStream:
        """A new stream on a free port; `remote` may be set later (from the SDP answer).
        With `latching`, symmetric RTP: see `RtpStream._latch`."""
        if payload_type not in SILENCE:
            raise ValueError(f"payload type {payload_type} is not G.711 (0 or 8)")
        rtp, rtcp = self._bind()
        stream = RtpStream(self, rtp, payload_type, remote, on_digit, dtmf_payload_type,
                           latching, rtcp)
        self._changes.put((True, stream))
        self._waker.wake()
        return stream

    def remove(self, stream: RtpStream) -> None:
        if not stream.closed:
            stream.closed = True
            self._changes.put((False, stream))
            self._waker.wake()

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def _bind(self) -> tuple[socket.socket, socket.socket]:
        """Sockets for RTP, on an even port, and RTCP, on the next one (RFC 3550 11)."""
        with self._lock:
            ports = self._ports or range(0, 1)
            for _ in range(0, max(len(ports), BIND_ATTEMPTS), 2):
                if self._ports is None:
                    port = 0
                else:
                    port = self._next_port
                    self._next_port = port + 2 if port + 2 < ports.stop else ports.start
                pair = self._bind_pair(port)
                if pair is not None:
                    return pair
        where = "" if self._ports is None else f" in {ports.start}-{ports.stop - 1}"
        raise OSError(f"no free pair of RTP and RTCP ports{where}")

    def _bind_pair(self, port: int) -> tuple[socket.socket, socket.socket] | None:
        """RTP on `port` (0: any even port the system has free) and RTCP on the next."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        rtp, rtcp = socket.socket(family, socket.SOCK_DGRAM), socket.socket(family,
                                                                             socket.SOCK_DGRAM)
        try:
            rtp.bind((self.host, port))
            chosen = rtp.getsockname()[1]
            if chosen % 2 == 0:
                rtcp.bind((self.host, chosen + 1))
                rtp.setblocking(False)
                rtcp.setblocking(False)
                return rtp, rtcp
        except OSError:
            pass
        rtp.close()
        rtcp.close()
        return None

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._waker.reader, selectors.EVENT_READ)
            next_tick = self._clock()
            while not self._stopping.is_set():
                try:
                    next_tick = self._step(selector, next_tick)
                except Exception:  # one bad stream must not stop every call's audio
                    logger.exception("RTP engine step failed; continuing")
                    next_tick = self._clock() + FRAME_S

    def _step(self, selector: selectors.BaseSelector, next_tick: float) -> float:
        for key, _ in selector.select(max(0.0, next_tick - self._clock())):
            if key.fileobj is self._waker.reader:
                self._apply_changes(selector)
            else:
                key.data()
        now = self._clock()
        ticks = 0
        while now >= next_tick:
            if ticks == MAX_CATCH_UP_TICKS:
                skipped = int((now - next_tick) / FRAME_S) + 1
                for stream in self._streams.values():
                    stream.stats.skipped_ticks += skipped
                next_tick += skipped * FRAME_S
                break
            for stream in self._streams.values():
                stream.tick()
            next_tick += FRAME_S
            ticks += 1
        return next_tick

    def _apply_changes(self, selector: selectors.BaseSelector) -> None:
        self._waker.drain()
        while True:
            try:
                add, stream = self._changes.get_nowait()
            except queue.Empty:
                return
            if add and not stream.closed:
                selector.register(stream.sock, selectors.EVENT_READ, stream.on_readable)
                if stream.rtcp_sock is not None:
                    selector.register(stream.rtcp_sock, selectors.EVENT_READ,
                                      stream.on_rtcp_readable)
                self._streams[id(stream)] = stream
            elif not add:
                if self._streams.pop(id(stream), None) is not None:
                    selector.unregister(stream.sock)
                    if stream.rtcp_sock is not None:
                        selector.unregister(stream.rtcp_sock)
                    stream.send_bye()
                stream.close_sockets()
