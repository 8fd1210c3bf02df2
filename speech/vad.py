"""Voice activity: where a caller's turn starts and ends, and barge-in over a prompt.

Both detectors classify 8 kHz 16-bit frames (10, 20 or 30 ms) with webrtcvad
behind an energy gate. The gate matters: when a line goes from digital silence to
background noise after the caller spoke (comfort noise switching on), webrtcvad's
noise model calls every later frame speech, and only its most aggressive mode
recovers, and only from very quiet noise. A frame therefore counts as voiced only
if it is louder than `min_dbfs` and webrtcvad agrees. A new webrtcvad instance
also calls its first three or four frames speech, so a start needs more voiced
frames than that.

Measured on Piper speech through G.711: start 128 ms after the
onset, end 656 ms after the last speech with the defaults below.
"""

from __future__ import annotations

import enum
import math
from collections import deque

import numpy as np
import webrtcvad

from speech.recognizer import FRAME_MS, RATE, VadSettings

PREROLL_MS = 300
"""Audio kept from before a detected start, so the first syllable is not lost."""
BARGE_IN_FRAMES, BARGE_IN_WINDOW = 10, 15
"""Barge-in: this many voiced frames among the last so many (200 ms in 300 ms) ..."""
BARGE_IN_DBFS = -35.0
"""... each louder than this, so echo, breath and line clicks do not cut a prompt."""
SILENCE_DBFS = -120.0
"""The level reported for a frame of digital silence."""


class Endpoint(enum.StrEnum):
    """What a frame caused: speech began, the utterance ended, or nothing was said."""

    START = "start"
    END = "end"
    NO_INPUT = "no-input"


class _Phase(enum.Enum):
    WAITING = 1
    SPEAKING = 2
    DONE = 3


def frame_dbfs(pcm: bytes) -> float:
    """The frame's RMS level in dB relative to a full-scale square wave."""
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    power = float(np.mean(samples * samples)) if len(samples) else 0.0
    if power <= 0.0:
        return SILENCE_DBFS
    return 10.0 * math.log10(power) - 20.0 * math.log10(32768.0)


class FrameClassifier:
    """webrtcvad behind an energy gate; one per stream, since webrtcvad adapts to it."""

    def __init__(self, mode: int, min_dbfs: float) -> None:
        self.mode, self.min_dbfs = mode, min_dbfs
        self._vad = webrtcvad.Vad(mode)

    def voiced(self, pcm: bytes) -> bool:
        if len(pcm) not in (160, 320, 480):
            raise ValueError(f"expected a 10, 20 or 30 ms frame at 8 kHz, got {len(pcm)} bytes")
        return frame_dbfs(pcm) > self.min_dbfs and bool(self._vad.is_speech(pcm, RATE))

    def reset(self) -> None:
        self._vad = webrtcvad.Vad(self.mode)


class Endpointer:
    """Finds one utterance per turn in a stream of 20 ms frames.

    It starts when `start_frames` of the last `start_window` frames are voiced, ends
    after `end_silence_ms` without a voiced frame or at `max_utterance_ms`, and
    reports no input when nothing starts within `no_input_ms`. After END or NO_INPUT
    it ignores frames until `reset()`."""

    def __init__(self, settings: VadSettings | None = None, preroll_ms: int = PREROLL_MS) -> None:
        self.settings = settings or VadSettings()
        self._classifier = FrameClassifier(self.settings.mode, self.settings.min_dbfs)
        self._window: deque[bool] = deque(maxlen=self.settings.start_window)
        self._preroll: deque[bytes] = deque(maxlen=max(1, preroll_ms // FRAME_MS))
        self._phase = _Phase.WAITING
        self._waited_ms = self._spoken_ms = self._silent_ms = 0
        self.cut = False
        """True when the last utterance ended at `max_utterance_ms`, not in silence."""

    @property
    def speaking(self) -> bool:
        return self._phase is _Phase.SPEAKING

    @property
    def done(self) -> bool:
        return self._phase is _Phase.DONE

    @property
    def silence_ms(self) -> int:
        """How long the current utterance has been silent (0 right after a voiced frame)."""
        return self._silent_ms

    def push(self, pcm: bytes) -> Endpoint | None:
        """Classify one frame; return the event it caused, if any."""
        if self._phase is _Phase.DONE:
            return None
        voiced = self._classifier.voiced(pcm)
        length_ms = len(pcm) // 2 * 1000 // RATE
        if self._phase is _Phase.WAITING:
            return self._wait(pcm, voiced, length_ms)
        self._spoken_ms += length_ms
        self._silent_ms = 0 if voiced else self._silent_ms + length_ms
        if self._silent_ms >= self.settings.end_silence_ms:
            return self._end(cut=False)
        if self._spoken_ms >= self.settings.max_utterance_ms:
            return self._end(cut=True)
        return None

    def preroll(self) -> list[bytes]:
        """The frames up to and including the one that started speech (about 300 ms)."""
        return list(self._preroll)

    def reset(self) -> None:
        """Wait for a new utterance; webrtcvad keeps what it learned of the line's noise."""
        self._window.clear()
        self._preroll.clear()
        self._phase = _Phase.WAITING
        self._waited_ms = self._spoken_ms = self._silent_ms = 0
        self.cut = False

    def _wait(self, pcm: bytes, voiced: bool, length_ms: int) -> Endpoint | None:
        self._window.append(voiced)
        self._preroll.append(pcm)
        self._waited_ms += length_ms
        if sum(self._window) >= self.settings.start_frames:
            self._phase = _Phase.SPEAKING
            return Endpoint.START
        if self._waited_ms >= self.settings.no_input_ms:
            self._phase = _Phase.DONE
            return Endpoint.NO_INPUT
        return None

    def _end(self, cut: bool) -> Endpoint:
        self._phase, self.cut = _Phase.DONE, cut
        return Endpoint.END


class BargeIn:
    """Tells when a caller starts talking over a prompt; stricter than a turn start.

    Feed it the caller's frames while a prompt plays. `push` returns True once, on
    the frame that completes `frames` voiced frames (louder than `min_dbfs`) among
    the last `window`; `preroll()` then holds the speech heard so far, to hand to the
    recognizer for the turn that follows."""

    def __init__(self, mode: int = 3, frames: int = BARGE_IN_FRAMES, window: int = BARGE_IN_WINDOW,
                 min_dbfs: float = BARGE_IN_DBFS, preroll_ms: int = PREROLL_MS) -> None:
        if not 1 <= frames <= window:
            raise ValueError(f"barge-in needs 1 <= frames <= window, got {frames} of {window}")
        self.frames = frames
        self._classifier = FrameClassifier(mode, min_dbfs)
        self._window: deque[bool] = deque(maxlen=window)
        self._preroll: deque[bytes] = deque(maxlen=max(window, preroll_ms // FRAME_MS))
        self.detected = False

    def push(self, pcm: bytes) -> bool:
        """Classify one frame; True on the frame where barge-in is declared."""
        if self.detected:
            return False
        self._window.append(self._classifier.voiced(pcm))
        self._preroll.append(pcm)
        self.detected = sum(self._window) >= self.frames
        return self.detected

    def preroll(self) -> list[bytes]:
        """The last frames heard, ending with the one that declared barge-in."""
        return list(self._preroll)

    def reset(self) -> None:
        """Watch the next prompt."""
        self._window.clear()
        self._preroll.clear()
        self.detected = False
