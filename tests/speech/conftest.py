"""Speech fixtures: telephone-path audio (tests/speech_audio.py) and the models, loaded
once per session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from speech.recognizer import SpeechSettings
from speech.synthesizer import EspeakSynthesizer, Samples
from speech.vosk_engine import VoskModel
from speech.whisper_engine import WhisperModel
from tests.speech_audio import RATE, silence, speak, telephone, turn

Speak = Callable[[str], Samples]


__all__ = ["RATE", "Speak", "frames", "silence", "turn"]


def frames(audio: Samples) -> Iterator[bytes]:
    for start in range(0, len(audio) - 159, 160):
        yield audio[start:start + 160].astype("<i2").tobytes()


@pytest.fixture(scope="session")
def korean() -> Speak:
    """Korean from espeak-ng (poor, but good enough for short words), cached."""
    voice, cache = EspeakSynthesizer("ko"), {}

    def speak(text: str) -> Samples:
        if text not in cache:
            cache[text] = telephone(*voice.synthesize(text))
        return cache[text]

    return speak


@pytest.fixture(scope="session")
def english() -> Speak:
    """English from Piper's "joe" voice with its noise turned off: the same audio every run."""
    return speak


@pytest.fixture(scope="session")
def vosk_model(tmp_path_factory: pytest.TempPathFactory) -> VoskModel:
    """The packaged Korean model (2-3 s and 0.5 GiB to load), shared by the session."""
    from speech.vosk_engine import load_model

    return load_model(SpeechSettings(), tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def whisper_model() -> WhisperModel:
    """The packaged tiny.en model, shared by the session."""
    from speech.whisper_engine import load_model

    return load_model(SpeechSettings(engine="whisper"))


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"
