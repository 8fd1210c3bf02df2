"""Synthesized DTMF key presses for the talk-off bench, over a quiet line through mu-law.

`KEY_SETS` are the conditions: real presses at several levels, twists, frequency
errors and durations, which a receiver should find, and tones that ITU-T Q.24 says
are no key press (3.5 % off frequency, 20 ms long, twist past the limits, too quiet).
Each press starts at a random offset within a 20 ms frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speech import g711
from speech.dtmf_tones import COLUMNS_HZ, FULL_SCALE_DBM0, KEYPAD, RATE, ROWS_HZ
from speech.synthesizer import Samples

FRAME = 160
KEYS = "".join(KEYPAD)
LINE_NOISE_DBFS = -60.0
"""A quiet line."""


def tone_pair(key: str, ms: float, dbm0: float = -10.0, twist_db: float = 0.0,
              row_error: float = 0.0, col_error: float = 0.0, seed: int = 0) -> np.ndarray:
    """A key's two tones: the low one at `dbm0`, the high one `twist_db` louder."""
    row = next(i for i, keys in enumerate(KEYPAD) if key in keys)
    low = ROWS_HZ[row] * (1 + row_error)
    high = COLUMNS_HZ[KEYPAD[row].index(key)] * (1 + col_error)
    amplitude = 32767 * 10 ** ((dbm0 - FULL_SCALE_DBM0) / 20)
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, 2)
    t = np.arange(round(ms * RATE / 1000)) / RATE
    high_gain = 10 ** (twist_db / 20)
    return np.asarray(amplitude * (np.sin(2 * np.pi * low * t + phase[0])
                                   + high_gain * np.sin(2 * np.pi * high * t + phase[1])))


@dataclass(frozen=True)
class KeySet:
    """Every key pressed `repeat` times under one condition, each at a new offset."""

    label: str
    expect: bool
    """True: each press should be found. False: nothing should be."""
    ms: float = 60.0
    dbm0: float = -10.0
    twist_db: float = 0.0
    row_error: float = 0.0
    col_error: float = 0.0
    pause_ms: float = 100.0
    snr_db: float | None = None
    repeat: int = 4

    @property
    def keys(self) -> str:
        return KEYS * self.repeat

    def audio(self) -> Samples:
        """The presses over a quiet line (or white noise at `snr_db`), through mu-law."""
        rng = np.random.default_rng(len(self.label))
        parts = [np.zeros(RATE // 5)]
        for i, key in enumerate(self.keys):
            parts += [np.zeros(int(rng.integers(FRAME))),
                      tone_pair(key, self.ms, self.dbm0, self.twist_db, self.row_error,
                                self.col_error, seed=i),
                      np.zeros(round(self.pause_ms * RATE / 1000))]
        noise_dbfs = LINE_NOISE_DBFS
        if self.snr_db is not None:  # against both tones' power (each at dbm0, no twist)
            noise_dbfs = self.dbm0 - FULL_SCALE_DBM0 - self.snr_db
        return on_line([*parts, np.zeros(RATE // 5)], len(self.label) + 1, noise_dbfs)


KEY_SETS = [
    KeySet("-10 dBm0, 60 ms", True),
    KeySet("-3 dBm0, 60 ms", True, dbm0=-3.0),
    KeySet("-25 dBm0, 60 ms", True, dbm0=-25.0),
    KeySet("-10 dBm0, 40 ms, 40 ms pauses", True, ms=40.0, pause_ms=40.0),
    KeySet("-10 dBm0, 500 ms", True, ms=500.0),
    KeySet("normal twist 4 dB", True, twist_db=4.0),
    KeySet("normal twist 7 dB", True, twist_db=7.0),
    KeySet("reverse twist 3 dB", True, twist_db=-3.0),
    KeySet("both tones 1.5 % high", True, row_error=0.015, col_error=0.015),
    KeySet("both tones 1.5 % low", True, row_error=-0.015, col_error=-0.015),
    KeySet("white noise, 15 dB SNR", True, dbm0=-20.0, snr_db=15.0),
    KeySet("20 ms tones", False, ms=20.0),
    KeySet("low tone 3.5 % high", False, row_error=0.035),
    KeySet("low tone 3.5 % low", False, row_error=-0.035),
    KeySet("high tone 3.5 % high", False, col_error=0.035),
    KeySet("high tone 3.5 % low", False, col_error=-0.035),
    KeySet("normal twist 10 dB", False, twist_db=10.0),
    KeySet("reverse twist 6 dB", False, twist_db=-6.0),
    KeySet("-40 dBm0", False, dbm0=-40.0),
]
"""Real key presses (expect True) and tones that Q.24 says are no key press."""


def presses(keys: str, ms: float, pause_ms: float, seed: int) -> Samples:
    """`keys` pressed in turn at -10 dBm0, each at a random offset in a frame."""
    rng = np.random.default_rng(seed)
    parts = [np.zeros(RATE // 5)]
    for i, key in enumerate(keys):
        parts += [np.zeros(int(rng.integers(FRAME))), tone_pair(key, ms, seed=seed + i),
                  np.zeros(round(pause_ms * RATE / 1000))]
    return on_line([*parts, np.zeros(RATE // 5)], seed)


def pairs(pause_ms: float, repeat: int) -> Samples:
    """Each key pressed twice for 60 ms with `pause_ms` between, then 150 ms of quiet."""
    rng = np.random.default_rng(int(pause_ms))
    parts = []
    for i, key in enumerate(KEYS * repeat):
        parts += [np.zeros(int(rng.integers(FRAME))), tone_pair(key, 60.0, seed=2 * i),
                  np.zeros(round(pause_ms * RATE / 1000)), tone_pair(key, 60.0, seed=2 * i + 1),
                  np.zeros(round(0.150 * RATE))]
    return on_line(parts, int(pause_ms))


def on_line(parts: list[np.ndarray], seed: int,
            noise_dbfs: float = LINE_NOISE_DBFS) -> Samples:
    """`parts` joined over white noise at `noise_dbfs` (a quiet line), through mu-law."""
    audio = np.concatenate(parts)
    noise = np.random.default_rng(seed).standard_normal(len(audio))
    audio += noise * 32768 * 10 ** (noise_dbfs / 20)
    pcm = np.clip(np.round(audio), -32768, 32767).astype(np.int16)
    return g711.ulaw_decode(g711.ulaw_encode(pcm))
