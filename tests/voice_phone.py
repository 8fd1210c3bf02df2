"""The media side of a test caller who talks: speaks queued audio, presses keys, listens.

sipp plays the caller's SIP; the scenario's SDP names this socket's port (-key
rtp_port, as in tests/sipp/uac_forwarded.xml), so the test owns the audio: it says
a synthesized question, hears the bot's answer, and knows when each happened to the
millisecond. A benchmark takes "end of the caller's speech -> first packet of the
bot's answer" from `said_until` and `heard_speech_spans`.

Like a phone, it sends a packet every 20 ms for the whole call, silence when it has
nothing to say, on an absolute grid: packet n is due n * 20 ms after the first, so
a late wake-up delays one packet and never the ones after it. RTP is symmetric: it
sends to whoever sent RTP to its socket first, unless told the remote up front.
(tests/sipp/uac_voicebot.xml is the other way to speak: sipp streams a recording
itself, and nobody hears the bot.)
"""

from __future__ import annotations

import collections
import contextlib
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from speech.g711 import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)
from speech.synthesizer import Samples
from tests.speech_audio import SPEECH_RMS

RATE, FRAME = 8000, 160
FRAME_S = FRAME / RATE
PCMU, PCMA, TELEPHONE_EVENT = 0, 8, 101
WORD_GAP_S = 0.5
"""Quiet shorter than this inside a prompt (between words and sentences) does not end it."""
KEY_PRESS_S = 0.1
END_PACKETS = 3
"""RFC 4733 2.5.1.4: the final packet of an event is sent three times."""
DTMF_VOLUME = 10
"""-10 dBm0, as phones send."""
DTMF_DIGITS = "0123456789*#ABCD"
MAX_CATCH_UP_S = 0.1
"""A send loop this far behind its grid skips the missed slots instead of bursting them
(queued speech is delayed, not lost); `max_late_s` tells a benchmark it happened."""
POLL_S = 0.005
"""How often `wait_until_quiet` and `wait_said` look; the times they return come from
packet timestamps, not from this."""

_HEADER = struct.Struct("!BBHII")
_EVENT = struct.Struct("!BBH")
_CODECS = {PCMU: (ulaw_encode, ulaw_decode, ULAW_SILENCE),
           PCMA: (alaw_encode, alaw_decode, ALAW_SILENCE)}


@dataclass(frozen=True, slots=True)
class HeardPacket:
    """One RTP packet as it arrived; `samples` is empty unless it carried G.711 audio."""

    at: float
    """time.monotonic() on arrival."""
    payload_type: int
    sequence: int
    timestamp: int
    marker: bool
    payload: bytes
    samples: Samples
    rms: float


def parse_heard(data: bytes, at: float) -> HeardPacket | None:
    """The packet in `data`, or None when it is not plain RTP version 2."""
    if len(data) < _HEADER.size or data[0] >> 6 != 2 or data[0] & 0x3F:
        return None  # padding, extensions and CSRCs: nothing here sends them
    _, second, sequence, timestamp, _ = _HEADER.unpack_from(data)
    payload_type, payload = second & 0x7F, data[_HEADER.size:]
    codec = _CODECS.get(payload_type)
    samples = codec[1](payload) if codec else np.zeros(0, dtype=np.int16)
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0
    return HeardPacket(at, payload_type, sequence, timestamp, bool(second & 0x80), payload,
                       samples, rms)


def event_payloads(digit: str, duration_s: float = KEY_PRESS_S) -> list[bytes]:
    """The RFC 4733 payloads of one key press, one per 20 ms packet: the growing
    duration, then the end packet `END_PACKETS` times."""
    if digit not in DTMF_DIGITS:
        raise ValueError(f"{digit!r} is not a DTMF digit ({DTMF_DIGITS})")
    code, frames = DTMF_DIGITS.index(digit), max(1, round(duration_s / FRAME_S))
    growing = [_EVENT.pack(code, DTMF_VOLUME, n * FRAME) for n in range(1, frames + 1)]
    return growing + [_EVENT.pack(code, 0x80 | DTMF_VOLUME, frames * FRAME)] * END_PACKETS


class VoicePhone:
    """A caller's audio on 127.0.0.1:`port`, owned by the test; close it when done."""

    def __init__(self, payload_type: int = PCMU, dtmf_payload_type: int = TELEPHONE_EVENT,
                 remote: tuple[str, int] | None = None, ssrc: int = 0x5EEC) -> None:
        if payload_type not in _CODECS:
            raise ValueError(f"payload type {payload_type} is not G.711 (0 or 8)")
        self.payload_type, self.dtmf_payload_type, self.ssrc = payload_type, dtmf_payload_type, ssrc
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.remote = remote
        self.heard: list[HeardPacket] = []
        """Every packet received, in arrival order."""
        self.sent = 0
        self.max_late_s = 0.0
        """The latest any packet left after its slot on the 20 ms grid."""
        self._encode, _, silence = _CODECS[payload_type]
        self._silence = bytes([silence]) * FRAME
        self._speech: collections.deque[bytes] = collections.deque()
        self._keys: collections.deque[tuple[bytes, bool]] = collections.deque()
        """Key-press payloads still to send, each marked True if it starts a press."""
        self._key_slot = 0
        self._words_in_flight = False
        self._said_until: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"voice-{self.port}", daemon=True)
        self._thread.start()

    def __enter__(self) -> VoicePhone:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def say(self, samples: Samples) -> None:
        """Queue 8 kHz `samples` to send after anything already queued; the last frame is
        padded with silence. `said_until` is None until all of it has gone."""
        short = -len(samples) % FRAME
        audio = np.concatenate([samples, np.zeros(short, dtype=np.int16)]).astype(np.int16)
        payload = self._encode(audio)
        with self._lock:
            self._speech.extend(payload[i:i + FRAME] for i in range(0, len(payload), FRAME))
            self._said_until = None

    def press(self, digit: str, duration_s: float = KEY_PRESS_S) -> None:
        """Send `digit` as RFC 4733 events in the next free slots; queued speech waits
        until the key is released, so no word is lost to it."""
        payloads = event_payloads(digit, duration_s)
        with self._lock:
            self._keys.extend((payload, n == 0) for n, payload in enumerate(payloads))

    @property
    def said_until(self) -> float | None:
        """time.monotonic() just after the packet with the last queued sample was sent:
        the moment the far end could have heard the whole utterance."""
        with self._lock:
            return None if self._speech else self._said_until

    def wait_said(self, timeout: float = 60.0) -> float:
        """Wait until everything queued by `say` has been sent; return `said_until`."""
        deadline = time.monotonic() + timeout
        while (said := self.said_until) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"speech still queued after {timeout} s "
                                   f"(remote {self.remote})")
            time.sleep(POLL_S)
        return said

    def heard_speech_spans(self, threshold: float = SPEECH_RMS, since: float = 0.0,
                           gap_s: float = WORD_GAP_S) -> list[tuple[float, float]]:
        """(first, last) arrival times of each run of speech packets heard after `since`;
        quiet shorter than `gap_s` joins two runs into one."""
        spans: list[tuple[float, float]] = []
        for packet in self._loud(threshold, since):
            if spans and packet.at - spans[-1][1] < gap_s:
                spans[-1] = (spans[-1][0], packet.at)
            else:
                spans.append((packet.at, packet.at))
        return spans

    def wait_until_quiet(self, after: float = 0.0, quiet_s: float = 1.0, timeout: float = 30.0,
                         threshold: float = SPEECH_RMS) -> float:
        """Wait until the far end has spoken after `after` and then been quiet for
        `quiet_s`: the end of a prompt. Return the arrival time of its last speech packet."""
        deadline = time.monotonic() + timeout
        while True:
            loud = self._loud(threshold, after)
            if loud and time.monotonic() - loud[-1].at >= quiet_s:
                return loud[-1].at
            if time.monotonic() > deadline:
                state = f"last spoke at {loud[-1].at:.3f}" if loud else "heard no speech"
                raise TimeoutError(f"far end {state}; not quiet for {quiet_s} s "
                                   f"within {timeout} s (now {time.monotonic():.3f})")
            time.sleep(POLL_S)

    def recording(self, since: float = 0.0, until: float = float("inf")) -> Samples:
        """The audio heard in [since, until), packets in arrival order."""
        parts = [p.samples for p in list(self.heard) if since <= p.at < until and len(p.samples)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def _loud(self, threshold: float, since: float) -> list[HeardPacket]:
        return [p for p in list(self.heard) if p.at > since and p.rms > threshold]

    def _run(self) -> None:
        slot, start = 0, time.monotonic()
        while not self._stop.is_set():
            if self.remote is None:
                self._receive(0.05)
                start = time.monotonic()
                continue
            due = start + slot * FRAME_S
            late = time.monotonic() - due
            if late < 0:
                self._receive(-late)
                continue
            self.max_late_s = max(self.max_late_s, late)
            if late > MAX_CATCH_UP_S:  # stalled: lose those slots, as a phone would
                slot += int(late / FRAME_S)
                continue
            self._send(slot)
            slot += 1

    def _receive(self, timeout: float) -> None:
        """Wait up to `timeout` for packets and keep each with its arrival time."""
        readable, _, _ = select.select([self.sock], [], [], max(timeout, 0.0))
        if not readable:
            return
        while True:
            try:
                data, source = self.sock.recvfrom(2048)
            except BlockingIOError:
                return
            at = time.monotonic()
            self.remote = self.remote or source
            packet = parse_heard(data, at)
            if packet is not None:
                self.heard.append(packet)

    def _send(self, slot: int) -> None:
        kind, payload, timestamp, marker = self._next_packet(slot)
        header = _HEADER.pack(0x80, (0x80 if marker else 0) | kind, slot & 0xFFFF,
                              timestamp & 0xFFFFFFFF, self.ssrc)
        assert self.remote is not None
        with contextlib.suppress(OSError):  # the far end is gone; the test will say so
            self.sock.sendto(header + payload, self.remote)
            self.sent += 1
        with self._lock:
            if self._words_in_flight and not self._speech:
                self._said_until = time.monotonic()
            self._words_in_flight = False

    def _next_packet(self, slot: int) -> tuple[int, bytes, int, bool]:
        """Payload type, payload, timestamp and marker for `slot`: a key press if one is
        under way (every packet of it stamped with its first slot), else speech, else
        silence."""
        with self._lock:
            if self._keys:
                payload, first = self._keys.popleft()
                if first:
                    self._key_slot = slot
                return self.dtmf_payload_type, payload, self._key_slot * FRAME, first
            self._words_in_flight = bool(self._speech)
            frame = self._speech.popleft() if self._speech else self._silence
        return self.payload_type, frame, slot * FRAME, slot == 0
