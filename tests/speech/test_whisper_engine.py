"""English end to end: Piper speech, G.711 mu-law at 8 kHz, endpointer, faster-whisper.

Whisper writes "E01" and "4729" where the caller said the words, and "Where's"
for "Where is", so transcripts are normalized before the word error rate is
taken. Each decode costs about 0.6 s of CPU, so the test decodes few utterances.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from speech.engines import create_recognizer
from speech.recognizer import Recognition, SpeechSettings, VadSettings, WhisperSettings
from speech.whisper_engine import WhisperModel, WhisperRecognizer
from tests.speech.conftest import Speak, frames, silence, turn

pytestmark = pytest.mark.slow

SENTENCES = [
    "Where is my order?",
    "The screen says E zero one and the welder stopped.",
    "I need to speak to an engineer right now.",
    "My invoice number is four seven two nine.",
]
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CONTRACTIONS = {"where's": "where is", "what's": "what is", "it's": "it is", "i'm": "i am",
                "don't": "do not", "can't": "can not"}
MAX_WER = 0.10


def normalize(text: str) -> list[str]:
    """Lower case, digits spelled out one by one, contractions expanded, no punctuation."""
    text = re.sub(r"\d", lambda m: f" {DIGITS[int(m[0])]} ", text.lower())
    words = re.sub(r"[^a-z' ]", " ", text).split()
    return " ".join(CONTRACTIONS.get(w, w) for w in words).replace("'", "").split()


def errors(reference: list[str], hypothesis: list[str]) -> int:
    """Word-level edit distance."""
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, hyp in enumerate(hypothesis, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1,
                                           previous + (ref != hyp))
    return row[-1]


def test_normalize_and_errors() -> None:
    assert normalize("Where's my order? E01, 4729.") == \
        ["where", "is", "my", "order", "e", "zero", "one", "four", "seven", "two", "nine"]
    assert errors(["a", "b", "c", "d"], ["a", "x", "c"]) == 2


def test_piper_through_mu_law_is_understood(whisper_model: WhisperModel, english: Speak,
                                            models_dir: Path) -> None:
    recognizer = create_recognizer(SpeechSettings(engine="whisper"), models_dir)
    assert isinstance(recognizer, WhisperRecognizer) and recognizer.model is whisper_model
    wrong = total = 0
    for sentence in SENTENCES:
        speech = english(sentence)
        found = [e for f in frames(turn(speech, tail_s=1.5)) for e in recognizer.accept(f)]
        assert [e.kind for e in found] == ["start", "final"], "one turn, no partials"
        final = found[-1]
        assert final.confidence is not None and 0.3 < final.confidence <= 1.0
        reference, hypothesis = normalize(sentence), normalize(final.text)
        wrong, total = wrong + errors(reference, hypothesis), total + len(reference)
        recognizer.reset()
    assert wrong / total <= MAX_WER, f"WER {wrong}/{total}"
    recognizer.close()


def test_key_words_survive_a_hang_up_without_trailing_silence(whisper_model: WhisperModel,
                                                              english: Speak) -> None:
    recognizer = WhisperRecognizer(whisper_model)
    kinds = [e.kind for f in frames(turn(english(SENTENCES[1]), tail_s=0.0))
             for e in recognizer.accept(f)]
    assert kinds == ["start"]
    text = " ".join(normalize(recognizer.finish().text))
    assert "welder" in text and "e zero one" in text
    assert recognizer.finish().text == recognizer.finish().text, "finish() is idempotent"


def test_silence_is_no_input_and_nothing_is_decoded(whisper_model: WhisperModel) -> None:
    recognizer = WhisperRecognizer(whisper_model, VadSettings(no_input_ms=1000))
    found = [e for f in frames(turn(silence(0.0), lead_s=1.5, tail_s=0.0))
             for e in recognizer.accept(f)]
    assert found == [Recognition("no-input")]
    assert recognizer.finish() == Recognition("final")
    recognizer.reset()
    assert recognizer.accept(np.zeros(160, dtype=np.int16)) == []


class CountingRecognizer(WhisperRecognizer):
    """Counts decodes and notes the audio length of each."""

    decoded: list[float]

    def transcribe(self, pcm: bytes) -> Recognition:
        self.decoded = [*getattr(self, "decoded", []), len(pcm) / 16000]
        return super().transcribe(pcm)


def test_the_decode_starts_at_a_pause_and_its_result_ends_the_turn(
        whisper_model: WhisperModel, english: Speak) -> None:
    recognizer = CountingRecognizer(whisper_model)
    audio = turn(english(SENTENCES[0]), lead_s=0.5, tail_s=1.0)
    events = [e for f in frames(audio) for e in recognizer.accept(f)]
    assert [e.kind for e in events] == ["start", "final"]
    assert normalize(events[-1].text) == normalize(SENTENCES[0])
    [seconds] = recognizer.decoded
    # decoded from the pre-roll to 200 ms into the pause, not to the END 700 ms in
    speech_s = len(english(SENTENCES[0])) / 8000
    assert speech_s < seconds < speech_s + 0.3 + 0.3


def test_words_after_a_pause_are_not_lost_to_an_early_decode(
        whisper_model: WhisperModel, english: Speak) -> None:
    recognizer = CountingRecognizer(whisper_model)
    first, second = english("Where is my order?"), english("It was due on Monday.")
    audio = turn(np.concatenate([first, silence(0.45), second]), lead_s=0.5, tail_s=1.0)
    events = [e for f in frames(audio) for e in recognizer.accept(f)]
    assert [e.kind for e in events] == ["start", "final"]
    assert normalize(events[-1].text)[-3:] == ["due", "on", "monday"], events[-1].text
    assert len(recognizer.decoded) == 2, "the decode at the pause was dropped"


def test_early_decoding_can_be_turned_off(whisper_model: WhisperModel, english: Speak) -> None:
    recognizer = CountingRecognizer(whisper_model,
                                    whisper=WhisperSettings(early_decode_ms=0))
    audio = turn(english(SENTENCES[0]), lead_s=0.5, tail_s=1.0)
    events = [e for f in frames(audio) for e in recognizer.accept(f)]
    assert [e.kind for e in events] == ["start", "final"]
    [seconds] = recognizer.decoded
    assert seconds > len(english(SENTENCES[0])) / 8000 + 0.6, "decoded at the END"
