"""The endpointer and barge-in detector on synthetic audio: a buzzy vowel and noise.

Times below are in audio seconds, counted by frames, so they do not depend on
the machine's speed.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from speech.recognizer import VadSettings
from speech.vad import BargeIn, Endpoint, Endpointer, frame_dbfs
from tests.speech.conftest import RATE, frames

ONSET_S = 1.0


def vowel(seconds: float, dbfs: float = -12.0, f0: float = 140.0) -> np.ndarray:
    """A voiced, speech-like sound: harmonics of a wavering f0, with a syllable rhythm."""
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 20)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return np.asarray(x / np.sqrt(np.mean(x**2)) * 32768 * 10 ** (dbfs / 20))


def noise(seconds: float, dbfs: float | None, seed: int = 1) -> np.ndarray:
    """White noise at `dbfs`, or digital silence for None."""
    if dbfs is None:
        return np.zeros(int(seconds * RATE))
    return np.random.default_rng(seed).standard_normal(int(seconds * RATE)) * 32768 * \
        10 ** (dbfs / 20)


def pcm(*parts: np.ndarray) -> np.ndarray:
    return np.clip(np.concatenate(parts), -32768, 32767).astype(np.int16)


def events(audio: np.ndarray, settings: VadSettings | None = None) -> list[tuple[str, float]]:
    """(event, time at the end of the frame that caused it) for the whole of `audio`."""
    endpointer = Endpointer(settings)
    found = []
    for i, frame in enumerate(frames(audio)):
        point = endpointer.push(frame)
        if point is not None:
            found.append((point.value, round((i + 1) * 0.02, 3)))
    return found


@pytest.mark.parametrize("background", [None, -55.0, -40.0])
def test_one_start_and_end_per_utterance(background: float | None) -> None:
    speech_s = 1.5
    audio = pcm(noise(ONSET_S, background),
                vowel(speech_s) + noise(speech_s, background, seed=2),
                noise(2.0, background, seed=3))
    (start, t_start), (end, t_end) = events(audio)
    assert start == "start" and end == "end"
    assert 0.1 <= t_start - ONSET_S <= 0.2, "6 voiced frames of 8: about 120 ms"
    assert 0.6 <= t_end - (ONSET_S + speech_s) <= 0.9, "700 ms of silence ends it"


def test_a_pause_does_not_split_an_utterance() -> None:
    audio = pcm(noise(ONSET_S, None), vowel(0.8), noise(0.3, None), vowel(0.8), noise(2.0, None))
    assert [e for e, _ in events(audio)] == ["start", "end"]
    assert events(audio)[1][1] == pytest.approx(ONSET_S + 1.9 + 0.7, abs=0.1)


def test_energy_gate_ends_speech_when_the_noise_floor_jumps() -> None:
    """Silence during speech, then -50 dBFS noise: webrtcvad alone keeps hearing speech."""
    audio = pcm(noise(ONSET_S, None), vowel(1.5), noise(6.0, -50.0))
    speech_end = ONSET_S + 1.5
    gated = events(audio, VadSettings(mode=1))
    ungated = events(audio, VadSettings(mode=1, min_dbfs=-100.0))
    assert gated[1][1] - speech_end == pytest.approx(0.7, abs=0.1)
    assert ungated[1][1] - speech_end > 2.0, "without the gate the end comes seconds late"


def test_quiet_speech_below_the_gate_is_not_speech() -> None:
    audio = pcm(noise(ONSET_S, None), vowel(1.5, dbfs=-50.0), noise(1.0, None))
    assert events(audio, VadSettings(no_input_ms=10_000)) == []


def test_no_input_once_then_nothing() -> None:
    audio = pcm(noise(1.5, -55.0), vowel(1.0), noise(1.0, -55.0))
    assert events(audio, VadSettings(no_input_ms=1000)) == [("no-input", 1.0)]


def test_max_utterance_cuts_endless_speech() -> None:
    endpointer = Endpointer(VadSettings(max_utterance_ms=2000))
    found = [endpointer.push(f) for f in frames(pcm(noise(ONSET_S, None), vowel(5.0)))]
    assert [p for p in found if p] == [Endpoint.START, Endpoint.END]
    assert endpointer.cut and endpointer.done


def test_preroll_keeps_the_onset_and_reset_starts_a_new_turn() -> None:
    endpointer = Endpointer()
    audio = pcm(noise(ONSET_S, None), vowel(1.0), noise(1.0, None))
    all_frames = list(frames(audio))
    i = next(i for i, frame in enumerate(all_frames) if endpointer.push(frame) is Endpoint.START)
    preroll = endpointer.preroll()
    assert len(preroll) == 15 and preroll == all_frames[i - 14:i + 1], "300 ms up to the start"
    assert preroll[0] == bytes(320), "it reaches back before the onset"
    endpointer.reset()
    assert not endpointer.speaking and endpointer.preroll() == []
    assert [p for p in map(endpointer.push, all_frames) if p] == [Endpoint.START, Endpoint.END]


def test_frame_checks_and_levels() -> None:
    with pytest.raises(ValueError, match="10, 20 or 30 ms frame at 8 kHz, got 200 bytes"):
        Endpointer().push(bytes(200))
    full = (np.sin(np.arange(160) * 2 * np.pi / 16) * 32767).astype("<i2").tobytes()
    assert frame_dbfs(full) == pytest.approx(-3.0, abs=0.1)
    assert frame_dbfs(bytes(320)) == -120.0
    with pytest.raises(ValidationError, match="start_frames must not exceed start_window"):
        VadSettings(start_frames=9, start_window=8)


def test_barge_in_needs_loud_sustained_speech() -> None:
    detector = BargeIn()
    quiet = pcm(vowel(1.0, dbfs=-40.0))
    assert not any(map(detector.push, frames(quiet))), "below -35 dBFS: echo, not the caller"
    click = pcm(vowel(0.1), noise(0.5, None))
    assert not any(map(detector.push, frames(click))), "100 ms is a click or a cough"
    detector.reset()
    loud = list(frames(pcm(noise(0.2, None), vowel(1.0))))
    fired = [i for i, frame in enumerate(loud) if detector.push(frame)]
    assert len(fired) == 1, "declared once"
    assert 0.2 <= (fired[0] + 1) * 0.02 - 0.2 <= 0.3, "after 200-300 ms of speech"
    assert detector.preroll()[-1] == loud[fired[0]] and len(detector.preroll()) == 15
    detector.reset()
    assert not detector.detected and detector.preroll() == []
    with pytest.raises(ValueError, match="frames <= window"):
        BargeIn(frames=16, window=15)
