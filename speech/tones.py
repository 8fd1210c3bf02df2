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
