"""Hold music for the DTMF talk-off bench: a packaged soundtrack, and synthesized music.

Music is the classic talk-off trap: sustained notes are pure enough, and two of
them (or a note and another's harmonic) can sit on a DTMF row and column
frequency. No music file comes with the machine; Debian's planetblupi-music-ogg
(a game's soundtrack, GPL-3+) is decoded by sox when installed. The synthesized
music is generated here, deterministically from a seed.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speech.synthesizer import Samples

RATE = 8000
MUSIC_DIR = Path("/usr/share/planetblupi/music")
MUSIC_PACKAGE = "planetblupi-music-ogg"
LEVEL_DBFS = -20.0
"""The synthesized music's RMS level: that of hold music."""


def packaged_tracks(cache: Path) -> list[Samples] | None:
    """The packaged soundtrack's tracks at 8 kHz mono (decoded once by sox, then cached),
    or None when the package or sox is not installed."""
    tracks = sorted(MUSIC_DIR.glob("*.ogg"))
    if not tracks or shutil.which("sox") is None:
        return None
    found = []
    for track in tracks:
        path = cache / f"music-{track.stem}.npy"
        if not path.exists():
            raw = subprocess.run(["sox", str(track), "-t", "raw", "-e", "signed", "-b", "16",
                                  "-c", "1", "-r", str(RATE), "-L", "-"],
                                 capture_output=True, check=True).stdout
            np.save(path, np.frombuffer(raw, "<i2"))
        found.append(np.load(path))
    return found


@dataclass(frozen=True)
class Instrument:
    """Additive synthesis: the relative amplitudes of harmonics 1, 2, 3 ..."""

    harmonics: tuple[float, ...]
    attack_s: float
    release_s: float
    vibrato: float = 0.0
    """Relative depth of a 5 Hz vibrato."""


FLUTE = Instrument((1.0, 0.25, 0.1, 0.05), 0.04, 0.08, vibrato=0.004)
ORGAN = Instrument((1.0, 0.5, 0.3, 0.1, 0.15, 0.05), 0.02, 0.05)
STRINGS = Instrument(tuple(1 / k for k in range(1, 12)), 0.12, 0.2, vibrato=0.003)
BRASS = Instrument(tuple(1 / k ** 0.7 for k in range(1, 10)), 0.05, 0.1)
BASS = Instrument(tuple(1 / k ** 1.5 for k in range(1, 8)), 0.01, 0.1)
PROGRESSIONS = ((0, 5, 3, 4), (0, 3, 4, 0), (5, 3, 0, 4), (0, 4, 5, 3), (1, 4, 0, 0))
"""Chord roots as scale degrees (0 = I, 4 = V, 5 = vi ...)."""
MAJOR, MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)


def note(hz: float, seconds: float, instrument: Instrument, level: float) -> np.ndarray:
    """One note with an attack/release envelope; harmonics above 3.6 kHz are left out."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    bend = 1 + instrument.vibrato * np.sin(2 * np.pi * 5.0 * t)
    phase = 2 * np.pi * hz * np.cumsum(bend) / RATE
    wave = np.zeros(n)
    for k, amplitude in enumerate(instrument.harmonics, start=1):
        if k * hz < 3600:
            wave += amplitude * np.sin(k * phase)
    envelope = np.minimum(1.0, np.minimum(t / instrument.attack_s,
                                          (seconds - t) / instrument.release_s))
    return np.asarray(wave * np.clip(envelope, 0.0, 1.0) * level)


def synthesize(seconds: float, seed: int) -> Samples:
    """Polyphonic music in every key: a melody, a counter-melody, chords and a bass.

    Each 16-bar section picks a key, a mode, a tuning up to 40 cents off A440 (so
    notes fall anywhere between the tempered ones), a tempo, a progression, an
    instrument per voice and a texture: all four voices, or the two melodies alone
    (a duet, where two notes can hold most of the power). Levels are those of hold
    music, about -20 dBFS.
    """
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * RATE))
    at = 0.0
    melodic = (FLUTE, ORGAN, STRINGS, BRASS)
    while at < seconds:
        tonic = 440.0 * 2 ** ((int(rng.integers(12)) - 9 + rng.uniform(-0.4, 0.4)) / 12)
        scale = MAJOR if rng.random() < 0.6 else MINOR
        beat = 60.0 / rng.uniform(70, 140)
        progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
        lead, counter, pad = (melodic[int(i)] for i in rng.integers(len(melodic), size=3))
        duet = rng.random() < 0.3
        for bar in range(16):
            root = progression[bar % 4]
            chord = [scale[(root + step) % 7] + 12 * ((root + step) // 7) for step in (0, 2, 4)]
            start = int(at * RATE)
            for semitone in chord if not duet else ():
                add(out, start, note(tonic * 2 ** ((semitone - 12) / 12), 4 * beat, pad, 0.05))
            for half in () if duet else (0, 2):
                add(out, start + int(half * beat * RATE),
                    note(tonic * 2 ** ((chord[0] - 24) / 12), 2 * beat, BASS, 0.12))
            melody(out, at, beat, tonic, scale, lead, 12, 0.1, rng)
            melody(out, at, beat, tonic, scale, counter, 0, 0.06, rng)
            at += 4 * beat
    out = out[:int(seconds * RATE)]
    out *= 32768 * 10 ** (LEVEL_DBFS / 20) / np.sqrt(np.mean(out**2))
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def melody(out: np.ndarray, at: float, beat: float, tonic: float, scale: tuple[int, ...],
           instrument: Instrument, octave: int, level: float, rng: np.random.Generator) -> None:
    """One bar of a stepwise melody in eighths, quarters and halves."""
    degree, played = int(rng.integers(7, 14)), 0.0
    while played < 4:
        length = min(4 - played, float(rng.choice([0.5, 0.5, 1.0, 1.0, 2.0])))
        degree = int(np.clip(degree + rng.integers(-2, 3), 0, 20))
        semitone = scale[degree % 7] + 12 * (degree // 7) + octave - 12
        add(out, int((at + played * beat) * RATE),
            note(tonic * 2 ** (semitone / 12), length * beat, instrument, level))
        played += length


def add(out: np.ndarray, start: int, sound: np.ndarray) -> None:
    """Mix `sound` into `out` from sample `start`, cut at the end of `out`."""
    end = min(len(out), start + len(sound))
    if end > start:
        out[start:end] += sound[:end - start]
