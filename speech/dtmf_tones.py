"""In-band DTMF: the keys a caller presses, heard as tone pairs in decoded 8 kHz audio.

A caller whose SDP offers no telephone-event (RFC 4733) sends its keys only as
tones in the G.711 audio. `DtmfDetector` finds them there: fed each decoded frame
of the call (int16 samples at 8 kHz, any length), it returns each key press once.

Every `HOP` samples (5 ms) a bank of Hann-windowed Goertzel filters, one per
DTMF frequency, measures a `WINDOW` (20 ms) of audio. The filters are evaluated in
closed form, as one matrix product over all the windows a frame completes: the
Goertzel recurrence's output, for a fraction of the interpreter's time. Most
audio stops there, too quiet or with too little of its power in the filters; a
window that could hold a digit is checked in full. It holds one when its
strongest low-group and high-group tones pass every check below (each
threshold's reason is in its docstring). A digit is reported after `MIN_HITS`
windows in a row hold it, and the same digit again only after `RELEASE_HOPS`
windows without it.

- Frequency: the phase each tone advances between consecutive windows measures
  its frequency to a few Hz, independent of its level; ITU-T Q.24 asks receivers
  to accept tones within 1.5 % of nominal and reject those 3.5 % or more away.
- Level, twist (the high-group tone's level less the low-group one's), dominance
  of each tone in its group, the two tones' share of the window's power, and
  the high-group tone's second harmonic (at twice its measured frequency),
  which voices and instruments carry and a DTMF generator does not.

Talk-off on speech and music, the shortest tones and pauses that count, and the
cost per frame are measured in docs/bench/dtmf-talkoff.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from speech.g711 import Int16Array

RATE = 8000
"""Samples a second."""
ROWS_HZ = (697.0, 770.0, 852.0, 941.0)
"""The low group: one per keypad row."""
COLUMNS_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
"""The high group: one per keypad column."""
KEYPAD = ("123A", "456B", "789C", "*0#D")
"""Keys by row and column."""
WINDOW = 160
"""Samples per analysis window (20 ms). Under a Hann window this separates the
closest row tones (73 Hz apart: the neighbour's filter sees a tone 14 dB down) and
keeps the other group's tone (268 Hz or more away) over 40 dB down, so twist and
frequency are measured clean. A tone 1.5 % off loses at most 1.4 dB in its filter,
and that loss is restored from the measured frequency."""
HOP = 40
"""Samples between window starts (5 ms): the resolution of durations and pauses."""
FULL_SCALE_DBM0 = 3.14
"""A full-scale sine's level in dBm0 (G.711: 3.14 for A-law, 3.17 for mu-law)."""

MIN_LEVEL_DBM0 = -30.0
"""The quietest tone accepted, each of the pair. Receiver specifications usually
ask for tones down to about -25 dBm0 each to be accepted and for much quieter ones
(-35 dBm0 and below) to be ignored; -30 sits between, with room for a lossy path,
and keeps crosstalk and the residue of echo from counting."""
NORMAL_TWIST_DB = 8.0
"""How much louder the high-group tone may be than the low-group one. Telephones
send the high group louder on purpose (lines lose more at high frequencies), so
this side is wider: 8 dB, the limit in common use since the Bell System's."""
REVERSE_TWIST_DB = 4.0
"""How much louder the low-group tone may be than the high-group one: 4 dB, the
usual reverse-twist limit."""
MAX_DEVIATION = 0.025
"""The largest relative frequency error accepted: midway between what Q.24 asks
to accept (1.5 %) and to reject (3.5 %). The measurement errs by under 0.3 % in
99 % of windows at 12 dB signal-to-noise ratio (0.55 % at worst), so both limits
hold with margin."""
MIN_SHARE = 0.8
"""The two tones' share of the window's power. A key press is two pure tones, so
nearly all of it: 0.97 at 15 dB SNR. Speech and music spread their power over
many harmonics and formants and rarely leave 80 % in two DTMF bins."""
MIN_PEAK_DB = 6.0
"""How far each tone must stand above the next strongest of its group. A clean
tone 1.5 % off nominal still leads its neighbour by about 9 dB; broadband sound
(fricatives, noise, clicks) lights several filters of a group at once."""
HARMONIC_DB = 20.0
"""How far the high-group tone's second harmonic must lie below it. DTMF generators
are specified to keep distortion products 20 dB or more down; voices and
instruments have second harmonics within a few dB to 15 dB of the fundamental.
Only the high group is checked: three of the low group's second harmonics (1394,
1540 and 1704 Hz) lie 58-71 Hz from a column tone, whose leakage into that filter
at 8 dB twist would fail a real digit."""
HARMONIC_NOISE = 4.0
"""The second harmonic may also reach this many times the power that the window's
other sound (its power less the two tones') would put in the filter if it were
white noise. A filter's noise power has an exponential distribution, 4 times its
mean exceeded in 2 % of windows, so a digit in noise at 12-15 dB SNR is not refused
for a "harmonic" that is noise; a clean tone must still meet `HARMONIC_DB`. (At 5,
one false digit got through in the half hour of synthesized music this was chosen on.)"""
MIN_HITS = 5
"""Windows in a row that must hold a digit before it is reported: 20 ms of window
starts plus the window itself. Q.24 asks that tones of 40 ms be accepted and
those under 23 ms rejected; the cut falls near 30 ms, between the two."""
RELEASE_HOPS = 8
"""Windows without the reported digit that end its key press, so the same digit
counts again (40 ms of window starts). The cut falls near 30 ms of pause: Q.24
asks that a 40 ms pause separate two presses, and a drop-out of 10-20 ms inside
one press must not split it."""

Digits = npt.NDArray[np.int64]
"""One key index (row * 4 + column) per window; -1 where no digit is held."""


@dataclass(frozen=True)
class DtmfSettings:
    """Acceptance limits; the defaults are the module's constants, documented there."""

    min_level_dbm0: float = MIN_LEVEL_DBM0
    normal_twist_db: float = NORMAL_TWIST_DB
    reverse_twist_db: float = REVERSE_TWIST_DB
    max_deviation: float = MAX_DEVIATION
    min_share: float = MIN_SHARE
    min_peak_db: float = MIN_PEAK_DB
    harmonic_db: float = HARMONIC_DB
    harmonic_noise: float = HARMONIC_NOISE
    min_hits: int = MIN_HITS
    release_hops: int = RELEASE_HOPS

    def __post_init__(self) -> None:
        if self.min_hits < 1 or self.release_hops < 1:
            raise ValueError("DTMF min_hits and release_hops must be at least 1, got "
                             f"{self.min_hits} and {self.release_hops}")
        if not 0.0 < self.max_deviation < 0.05:
            raise ValueError(f"DTMF max_deviation must be in (0, 0.05), got {self.max_deviation}")
        if not 0.0 < self.min_share <= 1.0:
            raise ValueError(f"DTMF min_share must be in (0, 1], got {self.min_share}")


_HANN = np.sin(np.pi * (np.arange(WINDOW) + 0.5) / WINDOW) ** 2
_FILTER_SCALE = math.sqrt(2) / float(_HANN.sum())
"""Scales a Hann-windowed filter so that a steady tone's power is |output|^2."""


def _filter_bank(hz: tuple[float, ...]) -> npt.NDArray[np.float64]:
    """Hann-windowed Goertzel filters for `hz` as one real matrix: the real parts'
    columns, then the imaginary parts'."""
    phase = 2 * np.pi * np.outer(np.arange(WINDOW), hz) / RATE
    bank: npt.NDArray[np.float64] = np.hstack([np.cos(phase), -np.sin(phase)])
    return bank * (_HANN[:, None] * _FILTER_SCALE)


_TONE_BANK = _filter_bank(ROWS_HZ + COLUMNS_HZ)
_POWER_WEIGHTS = _HANN**2 / (_HANN**2).sum()
"""A window's power is its squared samples' sum under these weights."""
_NOMINAL_HZ = np.array(ROWS_HZ + COLUMNS_HZ)
_NOMINAL_ADVANCE = np.exp(-2j * np.pi * _NOMINAL_HZ * HOP / RATE)
"""Undoes the phase a tone at its nominal frequency advances in one hop."""
_NOISE_GAIN = float(2 * (_HANN**2).sum() / _HANN.sum() ** 2)
"""The share of white noise's power that one filter passes (3 / WINDOW). By the
Cauchy-Schwarz inequality it also bounds any filter's output: at most this times
the window's sum of squared samples."""
_FULL_SCALE_POWER = 32767.0**2 / 2


def _hann_response(bins: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The Hann window's power response `bins` DFT bins away from its centre."""
    amplitude = np.sinc(bins) / (1.0 - bins * bins)
    return np.asarray(amplitude * amplitude)


def _power_at(windows: npt.NDArray[np.float64], hz: npt.NDArray[np.float64]
              ) -> npt.NDArray[np.float64]:
    """Each window's power at its own frequency `hz`, through the same Hann filter."""
    phase = np.outer(hz * (2 * np.pi / RATE), np.arange(WINDOW))
    weighted = windows * (_HANN * _FILTER_SCALE)
    re = np.einsum("ij,ij->i", weighted, np.cos(phase))
    im = np.einsum("ij,ij->i", weighted, np.sin(phase))
    return np.asarray(re * re + im * im)


class DtmfDetector:
    """Finds DTMF key presses in one call's decoded audio; one detector per call.

    `push` takes the call's frames in order and returns the keys pressed, each
    once, as soon as a press has lasted long enough (30-40 ms after it starts).
    Keys are the characters `0-9`, `*`, `#` and `A-D`. For a call whose SDP
    offer has no telephone-event, feed it every decoded frame the call plays out,
    and send what it returns where RFC 4733 digits go."""

    def __init__(self, settings: DtmfSettings | None = None) -> None:
        self.settings = s = settings or DtmfSettings()
        self._min_power = _FULL_SCALE_POWER * 10 ** ((s.min_level_dbm0 - FULL_SCALE_DBM0) / 10)
        self._normal_twist = 10 ** (s.normal_twist_db / 10)
        self._reverse_twist = 10 ** (s.reverse_twist_db / 10)
        self._peak = 10 ** (-s.min_peak_db / 10)
        self._harmonic = 10 ** (-s.harmonic_db / 10)
        # The most power a tone at the deviation limit loses in its filter, restored once
        # its frequency is measured: the cheap first looks allow for it.
        loss = _hann_response(s.max_deviation * _NOMINAL_HZ * (WINDOW / RATE))
        self._restore_limit = 1 / loss
        self._gate_share = s.min_share * float(loss.min())
        self._gate_power = 2 * self._min_power * float(loss.min())
        self._tail: npt.NDArray[np.float64]
        """The samples not yet classified, from the start of the last window classified."""
        self.reset()

    def push(self, samples: Int16Array) -> list[str]:
        """Add the call's next samples; return the keys whose press they confirmed."""
        buffer = np.concatenate((self._tail, samples.astype(np.float64)))
        count = (len(buffer) - WINDOW) // HOP
        if count <= 0:
            self._tail = buffer
            return []
        self._tail = buffer[count * HOP:]
        if np.dot(buffer, buffer) * _NOISE_GAIN < self._gate_power / 2:
            return self._track_quiet(count)  # no filter can reach the quietest tone
        # The first window is the last one classified before: the phase reference.
        step = buffer.itemsize
        windows = np.ndarray((count + 1, WINDOW), buffer=buffer, strides=(HOP * step, step))
        return self._track(self._classify(windows))

    def reset(self) -> None:
        """Forget the audio so far, as at the start of a call."""
        self._tail = np.zeros(WINDOW)
        self._candidate, self._run = -1, 0
        self._held, self._gap = -1, 0

    def _classify(self, windows: npt.NDArray[np.float64]) -> Digits:
        """The key each window but the first holds, or -1."""
        out = windows @ _TONE_BANK
        current = windows[1:]
        total = (current * current) @ _POWER_WEIGHTS
        squares = out[1:] ** 2
        # Two cheap looks before the full checks, each allowing for the most power an
        # off-frequency tone can lose in its filter. First: is there enough in all
        # eight filters together, for two tones and for their share of the window?
        if (squares.sum(axis=1) < np.maximum(total * self._gate_share, self._gate_power)).all():
            return np.full(len(total), -1)
        # Then: could the strongest tone of each group be loud enough, and the two hold
        # enough of the window's power?
        tones = squares[:, :8] + squares[:, 8:]
        most = tones * self._restore_limit
        row, col = most[:, :4].max(axis=1), most[:, 4:].max(axis=1)
        if not ((np.minimum(row, col) >= self._min_power)
                & (row + col >= self.settings.min_share * total)).any():
            return np.full(len(total), -1)
        return self._check(current, out, tones, total)

    def _check(self, windows: npt.NDArray[np.float64], out: npt.NDArray[np.float64],
               tones: npt.NDArray[np.float64], total: npt.NDArray[np.float64]) -> Digits:
        """Every check of each window's strongest tone pair (see the module docstring)."""
        s = self.settings
        index = np.arange(len(tones))
        row, col = tones[:, :4].argmax(axis=1), tones[:, 4:].argmax(axis=1) + 4
        phasors = out[:, :8] + 1j * out[:, 8:]
        advance = phasors[1:] * np.conj(phasors[:-1]) * _NOMINAL_ADVANCE
        deviation = np.angle(advance) * (RATE / (2 * np.pi * HOP)) / _NOMINAL_HZ
        dev_row, dev_col = deviation[index, row], deviation[index, col]
        held = (np.abs(dev_row) <= s.max_deviation) & (np.abs(dev_col) <= s.max_deviation)
        # Restore what the filter's slope took from an off-frequency tone.
        bins = WINDOW / RATE * np.clip(deviation, -s.max_deviation, s.max_deviation)
        restored = tones / _hann_response(bins * _NOMINAL_HZ)
        p_row, p_col = restored[index, row], restored[index, col]
        groups = np.sort(tones.reshape(-1, 2, 4), axis=2)
        harmonic = _power_at(windows, 2 * _NOMINAL_HZ[col] * (1 + dev_col))
        held &= (p_row >= self._min_power) & (p_col >= self._min_power)
        held &= (p_col <= p_row * self._normal_twist) & (p_row <= p_col * self._reverse_twist)
        held &= p_row + p_col >= s.min_share * total
        held &= (groups[:, :, 2] <= groups[:, :, 3] * self._peak).all(axis=1)
        # Allow for what the window's other sound (noise, mostly) puts in the filter.
        noise = np.maximum(total - p_row - p_col, 0.0) * (_NOISE_GAIN * s.harmonic_noise)
        held &= harmonic <= p_col * self._harmonic + noise
        return np.where(held, row * 4 + (col - 4), -1)

    def _track_quiet(self, count: int) -> list[str]:
        """`count` windows without a digit."""
        self._candidate, self._run = -1, count
        self._gap += count
        if self._gap >= self.settings.release_hops:
            self._held = -1
        return []

    def _track(self, digits: Digits) -> list[str]:
        """Turn per-window digits into key presses: confirmed, then held until released."""
        found = []
        for digit in digits.tolist():
            if digit == self._held:
                self._gap = 0
            else:
                self._gap += 1
                if self._gap >= self.settings.release_hops:
                    self._held = -1
            if digit == self._candidate:
                self._run += 1
            else:
                self._candidate, self._run = digit, 1
            if digit >= 0 and digit != self._held and self._run >= self.settings.min_hits:
                found.append(KEYPAD[digit // 4][digit % 4])
                self._held, self._gap = digit, 0
        return found
