"""Call-progress tones, generated as 8 kHz samples."""

from __future__ import annotations

import numpy as np

from speech.synthesizer import Samples

RATE = 8000
RINGBACK_HZ = (440.0, 480.0)
"""The North American ringback tone (ANSI T1.401): 440 + 480 Hz ..."""
RINGBACK_ON_S, RINGBACK_OFF_S = 2.0, 4.0
"""... two seconds on, four off."""
LEVEL = 0.1
"""Each component's amplitude as a fraction of full scale (about -20 dBFS)."""


def ringback(seconds: float) -> Samples:
    """At least `seconds` of ringback, whole cycles, starting with the tone."""
    cycle = RINGBACK_ON_S + RINGBACK_OFF_S
    cycles = max(1, int(np.ceil(seconds / cycle)))
    t = np.arange(int(RINGBACK_ON_S * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * hz * t) for hz in RINGBACK_HZ) * LEVEL * 32767
    one = np.concatenate([tone, np.zeros(int(RINGBACK_OFF_S * RATE))]).astype(np.int16)
    return np.tile(one, cycles)


def tone(hz: float, seconds: float, level: float = 2 * LEVEL) -> Samples:
    """A steady sine of `hz` for `seconds` (default about -14 dBFS)."""
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * hz * t) * level * 32767).astype(np.int16)


class ToneDetector:
    """Says when a steady tone of `hz` has been heard for `min_s` without a break.

    Each frame's power at `hz` (the Goertzel algorithm) must be most of the frame's
    power, and the frame loud enough, so speech, noise and other tones do not count.
    """

    MIN_RMS = 300.0
    """About -40 dBFS: quieter frames are silence."""
    SHARE = 0.6
    """The share of the frame's power that must lie at `hz`."""

    def __init__(self, hz: float, min_s: float = 0.2) -> None:
        self.hz = hz
        self.min_s = min_s
        self._run_s = 0.0

    def push(self, samples: Samples) -> bool:
        """Add a frame (any length, 8 kHz); True once the tone has lasted `min_s`."""
        x = samples.astype(np.float64)
        n = len(x)
        if n == 0:
            return self._run_s >= self.min_s
        total = float(np.dot(x, x))
        rms = (total / n) ** 0.5
        # the power of the DFT bin nearest hz (what the Goertzel algorithm computes)
        k = round(n * self.hz / RATE)
        bin_power = abs(np.dot(x, np.exp(-2j * np.pi * k * np.arange(n) / n))) ** 2 * 2 / n
        if rms >= self.MIN_RMS and bin_power >= self.SHARE * total:
            self._run_s += n / RATE
        else:
            self._run_s = 0.0
        return self._run_s >= self.min_s
