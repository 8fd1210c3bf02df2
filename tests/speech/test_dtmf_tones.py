"""The in-band DTMF detector on synthesized key presses, against ITU-T Q.24's limits.

Tones are generated here at a given level (dBm0 per tone), twist and frequency
error, with random phases; where the alignment could matter, a test places them at
many offsets within a 20 ms frame, so no result rests on a lucky one. Talk-off on
speech and music is measured in bench/dtmf_talkoff.py, not here.
"""

from __future__ import annotations

import numpy as np
import pytest

from speech import g711
from speech.dtmf_tones import (
    COLUMNS_HZ,
    FULL_SCALE_DBM0,
    KEYPAD,
    RATE,
    ROWS_HZ,
    DtmfDetector,
    DtmfSettings,
)

KEYS = "".join(KEYPAD)
FRAME = 160
PRESS_MS, PAUSE_MS = 60.0, 60.0


def press(key: str, ms: float = PRESS_MS, dbm0: float = -10.0, twist_db: float = 0.0,
          row_error: float = 0.0, col_error: float = 0.0, seed: int = 0) -> np.ndarray:
    """One key's tone pair: the low-group tone at `dbm0`, the high-group one `twist_db`
    louder, each off its nominal frequency by the given fraction, at random phases."""
    row = next(i for i, keys in enumerate(KEYPAD) if key in keys)
    low, high = ROWS_HZ[row] * (1 + row_error), COLUMNS_HZ[KEYPAD[row].index(key)] * (1 + col_error)
    amplitude = 32767 * 10 ** ((dbm0 - FULL_SCALE_DBM0) / 20)
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, 2)
    t = np.arange(round(ms * RATE / 1000)) / RATE
    high_gain = 10 ** (twist_db / 20)
    return np.asarray(amplitude * (np.sin(2 * np.pi * low * t + phase[0])
                                   + high_gain * np.sin(2 * np.pi * high * t + phase[1])))


def pause(ms: float = PAUSE_MS) -> np.ndarray:
    return np.zeros(round(ms * RATE / 1000))


def pcm(*parts: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.concatenate(parts)), -32768, 32767).astype(np.int16)


def keyed(keys: str, offset: int = 0, **tone: float) -> np.ndarray:
    """`keys` pressed in turn with pauses between, starting `offset` samples into a frame."""
    parts = [pause(100)[:800 - offset]]
    for i, key in enumerate(keys):
        parts += [press(key, seed=i, **tone), pause()]  # type: ignore[arg-type]
    return pcm(*parts, pause(100))


def detect(samples: np.ndarray, chunk: int = FRAME, settings: DtmfSettings | None = None) -> str:
    detector = DtmfDetector(settings)
    return "".join(d for start in range(0, len(samples), chunk)
                   for d in detector.push(samples[start:start + chunk]))


def test_every_key() -> None:
    assert detect(keyed(KEYS)) == KEYS


@pytest.mark.parametrize("key", list(KEYS))
def test_each_key_alone_is_reported_once(key: str) -> None:
    assert detect(pcm(pause(), press(key, 500), pause())) == key


@pytest.mark.parametrize("row_error, col_error", [(0.015, 0.0), (-0.015, 0.0), (0.0, 0.015),
                                                  (0.0, -0.015), (0.015, -0.015),
                                                  (-0.015, 0.015)])
def test_frequencies_within_one_and_a_half_percent_are_accepted(
        row_error: float, col_error: float) -> None:
    for twist in (0.0, -3.0, 7.0):
        assert detect(keyed(KEYS, row_error=row_error, col_error=col_error,
                            twist_db=twist)) == KEYS


@pytest.mark.parametrize("row_error, col_error", [(0.035, 0.0), (-0.035, 0.0), (0.0, 0.035),
                                                  (0.0, -0.035), (0.05, 0.05)])
def test_frequencies_three_and_a_half_percent_off_are_rejected(
        row_error: float, col_error: float) -> None:
    assert detect(keyed(KEYS, row_error=row_error, col_error=col_error)) == ""


def test_forty_ms_tones_are_accepted_at_any_alignment() -> None:
    for offset in range(0, FRAME, 9):
        assert detect(keyed(KEYS, offset=offset, ms=40.0)) == KEYS, offset


@pytest.mark.parametrize("ms", [10.0, 20.0, 23.0])
def test_tones_shorter_than_23_ms_are_rejected_at_any_alignment(ms: float) -> None:
    for offset in range(0, FRAME, 9):
        assert detect(keyed(KEYS, offset=offset, ms=ms)) == "", offset


@pytest.mark.parametrize("twist_db, found", [(7.5, KEYS), (-3.5, KEYS), (9.0, ""), (-5.0, ""),
                                             (12.0, "")])
def test_twist_up_to_8_db_normal_and_4_db_reverse(twist_db: float, found: str) -> None:
    """Positive twist: the high-group tone is louder."""
    assert detect(keyed(KEYS, twist_db=twist_db)) == found


def test_limits_come_from_the_settings() -> None:
    loose = DtmfSettings(normal_twist_db=12.0, reverse_twist_db=6.0)
    assert detect(keyed(KEYS, twist_db=10.0), settings=loose) == KEYS
    assert detect(keyed(KEYS, twist_db=-5.0), settings=loose) == KEYS


@pytest.mark.parametrize("dbm0, found", [(-3.0, KEYS), (-25.0, KEYS), (-35.0, ""), (-45.0, "")])
def test_level(dbm0: float, found: str) -> None:
    assert detect(keyed(KEYS, dbm0=dbm0)) == found


@pytest.mark.parametrize("snr_db", [15.0, 20.0])
def test_keys_in_white_noise(snr_db: float) -> None:
    """SNR: both tones' power against the noise's over the whole band, noise throughout."""
    rng = np.random.default_rng(int(snr_db))
    for twist in (0.0, -3.0, 7.0):
        clean = keyed(KEYS, dbm0=-20.0, twist_db=twist, row_error=0.01, col_error=-0.01)
        tone_power = 2 * (32767 * 10 ** ((-20.0 - FULL_SCALE_DBM0) / 20)) ** 2 / 2
        noise = rng.standard_normal(len(clean)) * np.sqrt(tone_power / 10 ** (snr_db / 10))
        assert detect(pcm(clean + noise)) == KEYS, twist


def test_noise_alone_holds_no_key() -> None:
    noise = np.random.default_rng(3).standard_normal(10 * RATE) * 3000
    assert detect(pcm(noise)) == ""


@pytest.mark.parametrize("gap_ms, found", [(40.0, "55"), (60.0, "55"), (200.0, "55"),
                                           (10.0, "5"), (20.0, "5")])
def test_the_same_key_again_needs_a_pause(gap_ms: float, found: str) -> None:
    """A pause of 40 ms separates two presses; a shorter drop-out is one press."""
    for offset in range(0, FRAME, 20):
        audio = pcm(pause(100)[offset:], press("5", 80, seed=1), pause(gap_ms),
                    press("5", 80, seed=2), pause(100))
        assert detect(audio) == found, offset


def test_a_different_key_straight_after_counts() -> None:
    assert detect(pcm(pause(), press("1", 80), press("9", 80, seed=1), pause())) == "19"


@pytest.mark.parametrize("chunk", [1, 7, 40, 159, 161, 480, 1000, 100_000])
def test_any_frame_length_gives_the_same_keys(chunk: int) -> None:
    assert detect(keyed(KEYS, offset=37), chunk=chunk) == KEYS


def test_a_press_split_across_frames_at_random_points() -> None:
    audio = keyed(KEYS, offset=71, ms=45.0)
    rng = np.random.default_rng(5)
    cuts = np.sort(rng.choice(np.arange(1, len(audio)), size=300, replace=False))
    detector = DtmfDetector()
    found = "".join(d for piece in np.split(audio, cuts) for d in detector.push(piece))
    assert found == KEYS


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
@pytest.mark.parametrize("dbm0", [-3.0, -10.0, -25.0])
def test_keys_through_g711(law: str, dbm0: float) -> None:
    audio = keyed(KEYS, dbm0=dbm0, twist_db=2.0)
    if law == "ulaw":
        line = g711.ulaw_decode(g711.ulaw_encode(audio))
    else:
        line = g711.alaw_decode(g711.alaw_encode(audio))
    assert detect(line) == KEYS


def test_reset_forgets_a_press_in_progress() -> None:
    """A 50 ms tone cut 30 ms in: each part alone is too short for a key press."""
    tone = pcm(pause(), press("7", 50), pause())
    cut = len(pause()) + 240
    detector = DtmfDetector()
    assert detector.push(tone[:cut]) + detector.push(tone[cut:]) == ["7"]
    detector.reset()
    assert detector.push(tone[:cut]) == []
    detector.reset()
    assert detector.push(tone[cut:]) == []
    assert detector.push(pcm(press("7", 60, seed=3), pause())) == ["7"]


def test_a_voice_holds_no_key() -> None:
    """Buzzy vowels gliding through the DTMF band: harmonics of a 90-300 Hz pitch."""
    t = np.arange(6 * RATE) / RATE
    f0 = 90 + 210 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.25 * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 30))
    assert detect(pcm(voice * 8000)) == ""


def test_notes_with_harmonics_on_a_key_hold_no_key() -> None:
    """Two sustained notes exactly on 770 and 1336 Hz (key 5), each with the second
    harmonic of a soft organ stop: the high note's harmonic gives them away."""
    t = np.arange(RATE) / RATE
    notes = sum(np.sin(2 * np.pi * hz * t) + 0.2 * np.sin(4 * np.pi * hz * t)
                for hz in (770.0, 1336.0))
    assert detect(pcm(pause(), notes * 6000, pause())) == ""
    assert detect(pcm(pause(), press("5", 1000), pause())) == "5"


@pytest.mark.parametrize("bad", [{"min_hits": 0}, {"release_hops": 0}, {"max_deviation": 0.0},
                                 {"max_deviation": 0.06}, {"min_share": 1.5}])
def test_settings_are_checked(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="DTMF"):
        DtmfSettings(**bad)  # type: ignore[arg-type]
