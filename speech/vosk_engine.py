"""Streaming recognition with Vosk (Kaldi), partial results as the caller speaks.

Call audio comes at 8 kHz; Vosk's models are mostly wideband (16 kHz), so each
recognizer resamples with its own soxr stream. That stream holds back up to about
115 ms of audio, which is flushed into the decoder when a turn ends, or the last
syllable would never be decoded.

A turn ends at the endpointer's END (`speech.vad`), or earlier if Vosk's own
endpoint fires with words (its rules need 0.5 to 2 s of trailing silence and
cannot be tuned from Python in vosk 0.3.45). After Vosk reports an endpoint,
`Result()` must be called, or it keeps reporting one on almost every frame.
Kaldi releases the GIL while decoding, at about 3.5 ms of CPU per 20 ms frame.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import vosk

from speech.errors import RecognizerError
from speech.models import vosk_model_path
from speech.recognizer import (
    RATE,
    SHARED_MODELS,
    Recognition,
    SpeechSettings,
    TurnRecognizer,
    VadSettings,
)
from speech.vad import Endpoint, Endpointer

logger = logging.getLogger(__name__)

KALDI_DEFAULT_RATE = 16000
"""Kaldi's feature extraction rate, Hz, when conf/mfcc.conf does not name one."""
_SAMPLE_FREQUENCY = re.compile(r"^--sample-frequency=(\d+)", re.MULTILINE)
_NOTHING = np.zeros(0, dtype=np.int16)


@dataclass(frozen=True)
class VoskModel:
    """A loaded Vosk model, shared by every call's recognizer."""

    path: Path
    model: Any
    sample_rate: int


def model_sample_rate(path: Path) -> int:
    """The rate a model's features expect, from its mfcc.conf (Vosk does not say)."""
    for conf in (path / "conf" / "mfcc.conf", path / "mfcc.conf"):
        try:
            found = _SAMPLE_FREQUENCY.search(conf.read_text(encoding="utf-8"))
        except OSError:
            continue
        if found:
            return int(found[1])
    return KALDI_DEFAULT_RATE


def load_model(settings: SpeechSettings, models_dir: Path) -> VoskModel:
    """The configured model, loaded once per process; raises ModelNotFound."""
    path = vosk_model_path(settings.vosk.model, models_dir)
    return SHARED_MODELS.get(("vosk", str(path)), lambda: _load(path))


def _load(path: Path) -> VoskModel:
    vosk.SetLogLevel(-1)  # Kaldi logs every model part it reads on stderr
    started = time.monotonic()
    try:
        model = vosk.Model(str(path))
    except Exception as exc:  # vosk raises a bare Exception when libvosk fails
        raise RecognizerError(f"Vosk cannot load the model in {path}: {exc}") from exc
    rate = model_sample_rate(path)
    logger.info("loaded Vosk model %s (%d Hz) in %.1f s", path, rate, time.monotonic() - started)
    return VoskModel(path, model, rate)


class VoskRecognizer(TurnRecognizer):
    """One call's streaming Vosk decoder; reuse it for every turn of the call, since
    creating one takes about 70 ms."""

    def __init__(self, model: VoskModel, vad: VadSettings | None = None,
                 phrases: Sequence[str] | None = None) -> None:
        self.model = model
        self.phrases = list(phrases) if phrases else None
        if self.phrases:
            _warn_unknown_words(model, self.phrases)
        arguments: list[Any] = [model.model, float(model.sample_rate)]
        if self.phrases:
            arguments.append(json.dumps(self.phrases, ensure_ascii=False))
        try:
            self._rec: Any = vosk.KaldiRecognizer(*arguments)
        except Exception as exc:  # a bare Exception from the C library
            raise RecognizerError(f"Vosk cannot start a recognizer: {exc}") from exc
        self._rec.SetWords(True)
        self._endpointer = Endpointer(vad)
        self._resampler = self._new_resampler()
        self._partial = ""
        self._final: Recognition | None = None
        self._fed = False
        """Audio went in since the last FinalResult()."""

    def finish(self) -> Recognition:
        if self._final is None:
            self._decode(self._flush())
            self._final = _recognition(self._call("FinalResult"))
            self._fed = False
        return self._final

    def reset(self) -> None:
        if self._fed:
            # Vosk's Reset() keeps the feature pipeline, and its undecoded frames would
            # open the next turn. FinalResult() drops the pipeline, so the next frame
            # starts a fresh one; after Vosk's own endpoint it needs a (empty) feed first.
            self._call("AcceptWaveform", b"")
            self._call("FinalResult")
            self._fed = False
        self._endpointer.reset()
        self._resampler = self._new_resampler()
        self._partial = ""
        self._final = None

    def close(self) -> None:
        self._rec = None

    def _frame(self, frame: bytes) -> list[Recognition]:
        point = self._endpointer.push(frame)
        if point is Endpoint.NO_INPUT:
            self._final = Recognition("final")
            return [Recognition("no-input")]
        events = [Recognition("start")] if point is Endpoint.START else []
        started = self._endpointer.speaking or point is Endpoint.END
        if self._decode(self._resample(frame)):
            result = _recognition(self._call("Result"))
            # Vosk's endpoint came first. Without speech from the endpointer, or
            # without words, it was line noise: go on listening.
            if started and result.text:
                self._final = result
                return [*events, result]
        elif started:
            partial = json.loads(self._call("PartialResult")).get("partial", "")
            if partial and partial != self._partial:
                events.append(Recognition("partial", partial))
            self._partial = partial
        if point is Endpoint.END:
            events.append(self.finish())
        return events

    def _decode(self, samples: np.ndarray[Any, Any]) -> bool:
        """Feed samples at the model's rate; True if Vosk found an endpoint."""
        if not len(samples):
            return False
        self._fed = True
        return bool(self._call("AcceptWaveform", samples.astype("<i2").tobytes()))

    def _resample(self, frame: bytes) -> np.ndarray[Any, Any]:
        samples = np.frombuffer(frame, "<i2")
        return samples if self._resampler is None else self._resampler.resample_chunk(samples)

    def _flush(self) -> np.ndarray[Any, Any]:
        """What the resampler still holds, and a fresh resampler for what follows."""
        if self._resampler is None:
            return _NOTHING
        tail: np.ndarray[Any, Any] = self._resampler.resample_chunk(_NOTHING, last=True)
        self._resampler = self._new_resampler()
        return tail

    def _new_resampler(self) -> Any:
        if self.model.sample_rate == RATE:
            return None
        return soxr.ResampleStream(RATE, self.model.sample_rate, 1, dtype="int16")

    def _call(self, method: str, *arguments: Any) -> Any:
        if self._rec is None:
            raise RecognizerError("the Vosk recognizer is closed")
        try:
            return getattr(self._rec, method)(*arguments)
        except Exception as exc:  # libvosk failures surface as a bare Exception
            raise RecognizerError(f"Vosk {method} failed: {exc}") from exc


def _warn_unknown_words(model: VoskModel, phrases: list[str]) -> None:
    """Vosk drops words its model does not know from a grammar; say which."""
    unknown = sorted({word for phrase in phrases for word in phrase.split()
                      if model.model.vosk_model_find_word(word) < 0})
    if unknown:
        logger.warning("words not in the vocabulary of %s, ignored in phrases: %s",
                       model.path, ", ".join(unknown))


def _recognition(result_json: str) -> Recognition:
    """A final from Vosk's result JSON; confidence is the mean of the words'."""
    result = json.loads(result_json)
    words = result.get("result") or []
    confidence = float(np.mean([w["conf"] for w in words])) if words else None
    return Recognition("final", result.get("text", ""), confidence)
