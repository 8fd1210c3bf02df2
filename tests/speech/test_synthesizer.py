"""Synthesis with the real engines, audio files, resampling and the prompt cache."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from speech.errors import AudioFileError, SynthesisError
from speech.prompts import PromptCache, encode
from speech.synthesizer import (
    EspeakSynthesizer,
    PiperSynthesizer,
    Samples,
    Synthesizer,
    create_synthesizer,
    read_wav,
    resample,
)

TEXT = "For a technician, press one."


def rms(samples: Samples) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


@pytest.mark.parametrize("engine", [EspeakSynthesizer, PiperSynthesizer])
def test_engines_speak(engine: type[Synthesizer]) -> None:
    samples, rate = engine().synthesize(TEXT)
    assert rate == 22050
    assert 0.8 < len(samples) / rate < 4.0, "a short sentence takes a second or two"
    assert rms(samples) > 300, "speech, not silence"


def test_factory() -> None:
    assert isinstance(create_synthesizer("piper"), PiperSynthesizer)
    assert create_synthesizer("espeak", voice="en-gb").name == "espeak:en-gb"
    with pytest.raises(SynthesisError, match="unknown speech engine 'festival'"):
        create_synthesizer("festival")


def tone(rate: int, seconds: float = 1.0, hz: float = 440.0) -> Samples:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * hz * t) * 10000).astype(np.int16)


def test_resample_keeps_pitch_and_length() -> None:
    out = resample(tone(22050), 22050, 8000)
    assert abs(len(out) - 8000) <= 1
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64)))
    assert abs(np.argmax(spectrum) * 8000 / len(out) - 440) < 2


def write_wav(path: Path, samples: bytes, rate: int, width: int, channels: int) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setsampwidth(width)
        wav.setnchannels(channels)
        wav.setframerate(rate)
        wav.writeframes(samples)
    return path


def test_read_wav_mixes_stereo_and_widens_8_bit(tmp_path: Path) -> None:
    left = tone(16000)
    stereo = np.stack([left, left], axis=1).astype("<i2").tobytes()
    samples, rate = read_wav(write_wav(tmp_path / "s.wav", stereo, 16000, 2, 2))
    assert rate == 16000 and np.array_equal(samples, left)
    eight = bytes([128, 255, 0])
    samples, _ = read_wav(write_wav(tmp_path / "e.wav", eight, 8000, 1, 1))
    assert samples.tolist() == [0, 127 << 8, -128 << 8]
    (tmp_path / "junk.wav").write_bytes(b"RIFF nonsense")
    with pytest.raises(AudioFileError, match=r"junk\.wav: not a readable WAV file"):
        read_wav(tmp_path / "junk.wav")


class Counting(Synthesizer):
    """espeak-ng, counting how often it is asked."""

    def __init__(self) -> None:
        self.inner = EspeakSynthesizer()
        self.name = self.inner.name
        self.calls = 0

    def synthesize(self, text: str) -> tuple[Samples, int]:
        self.calls += 1
        return self.inner.synthesize(text)


def test_prompt_cache_synthesizes_once_and_persists(tmp_path: Path) -> None:
    engine = Counting()
    cache = PromptCache(tmp_path / "prompts", engine)
    first = cache.text(TEXT)
    assert np.array_equal(cache.text(TEXT), first) and engine.calls == 1
    assert rms(first) > 300 and 0.8 < len(first) / 8000 < 4.0
    again = PromptCache(tmp_path / "prompts", engine)
    assert np.array_equal(again.text(TEXT), first) and engine.calls == 1, "read from disk"
    recorded = cache.file(write_wav(tmp_path / "r.wav", tone(16000).tobytes(), 16000, 2, 1))
    assert abs(len(recorded) - 8000) <= 1
    assert len(encode(first, 0)) == len(first) == len(encode(first, 8))
    with pytest.raises(ValueError, match="payload type 9"):
        encode(first, 9)
