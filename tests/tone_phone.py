"""The media side of a test phone: sends a steady tone as G.711 RTP, keeps what it hears.

sipp plays a phone's SIP; the scenario's SDP names this socket's port, so the
test owns the audio and can check what crossed the hotline in each direction.
RTP is symmetric: the tone goes to whoever sent RTP to this socket first.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np

from speech.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

RATE, FRAME = 8000, 160
PCMU, PCMA = 0, 8


def spectrum(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frequencies and magnitudes of 8 kHz `audio`, through a Hann window."""
    samples = audio.astype(float)
    magnitudes = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.fft.rfftfreq(len(samples), 1 / RATE), magnitudes


def dominant_hz(audio: np.ndarray) -> float:
    """The strongest frequency of 8 kHz `audio`."""
    freqs, magnitudes = spectrum(audio)
    return float(freqs[int(np.argmax(magnitudes))])


def purity(audio: np.ndarray, hz: float) -> float:
    """The share of the energy of 8 kHz `audio` within 20 Hz of `hz`: near 1 for a clean
    tone, far lower when it was distorted (decoded with the wrong G.711 law, say)."""
    freqs, magnitudes = spectrum(audio)
    power = magnitudes ** 2
    return float(power[np.abs(freqs - hz) <= 20].sum() / power.sum())


class TonePhone:
    def __init__(self, hz: float, payload_type: int = PCMU) -> None:
        self.hz = hz
        self.payload_type = payload_type
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.005)
        self.port: int = self.sock.getsockname()[1]
        self.remote: tuple[str, int] | None = None
        self.heard: list[tuple[float, np.ndarray]] = []
        """(arrival time, decoded samples) of every audio packet received."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tone-{hz:g}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def dominant_hz(self, since: float = 0.0, until: float = float("inf")) -> float | None:
        """The strongest frequency of the non-silent audio heard in [since, until)."""
        audio = self._audio(since, until)
        return None if audio is None else dominant_hz(audio)

    def purity(self, hz: float, since: float = 0.0, until: float = float("inf")) -> float:
        """`purity` of the non-silent audio heard in [since, until); 0 if none."""
        audio = self._audio(since, until)
        return 0.0 if audio is None else purity(audio, hz)

    def _audio(self, since: float, until: float) -> np.ndarray | None:
        frames = [s for t, s in self.heard if since <= t < until and np.abs(s).max() > 300]
        return np.concatenate(frames) if len(frames) >= 10 else None

    def _run(self) -> None:
        encode = ulaw_encode if self.payload_type == PCMU else alaw_encode
        decoders = {PCMU: ulaw_decode, PCMA: alaw_decode}
        seq, sample, start = 0, 0, time.monotonic()
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(2048)
            except TimeoutError:
                pass
            else:
                self.remote = self.remote or source
                kind = data[1] & 0x7F
                if len(data) == 12 + FRAME and kind in decoders:
                    self.heard.append((time.monotonic(), decoders[kind](data[12:])))
            due = start + seq * 0.02
            if self.remote is not None and time.monotonic() >= due:
                t = (sample + np.arange(FRAME)) / RATE
                payload = encode((np.sin(2 * np.pi * self.hz * t) * 8000).astype(np.int16))
                header = struct.pack("!BBHII", 0x80, self.payload_type, seq & 0xFFFF,
                                     sample & 0xFFFFFFFF, 0x5EED)
                self.sock.sendto(header + payload, self.remote)
                seq, sample = seq + 1, sample + FRAME
            elif self.remote is None:
                start = time.monotonic()
