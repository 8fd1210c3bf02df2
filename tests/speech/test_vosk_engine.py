"""Vosk really decoding 8 kHz telephone audio with the packaged Korean model.

espeak-ng's Korean is too poor for free text to come back right, so free speech is
checked for the mechanics (partials, one final, timing)
and exact text only for short answers under a grammar, as a yes/no menu uses it.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from speech.engines import create_recognizer
from speech.recognizer import SHARED_MODELS, Recognition, SpeechSettings, VadSettings
from speech.vosk_engine import VoskModel, VoskRecognizer, model_sample_rate
from tests.speech.conftest import Speak, frames, silence, turn

pytestmark = pytest.mark.slow

SENTENCE = "안녕하세요 주문 상태를 확인하고 싶습니다"
AGENT = "상담원 연결"
"""'Connect me to an agent'."""
ANSWERS = ["네", "아니요", AGENT]


def feed(recognizer: VoskRecognizer, audio: object) -> list[tuple[float, Recognition]]:
    """Every event with the audio time (s) at the end of the frame that caused it."""
    found = []
    for i, frame in enumerate(frames(audio)):  # type: ignore[arg-type]
        found += [((i + 1) * 0.02, event) for event in recognizer.accept(frame)]
    return found


def test_partials_then_one_final_after_the_caller_stops(vosk_model: VoskModel,
                                                         korean: Speak) -> None:
    speech = korean(SENTENCE)
    speech_end = 1.0 + len(speech) / 8000
    recognizer = VoskRecognizer(vosk_model)
    found = feed(recognizer, turn(speech, tail_s=2.5))
    kinds = [e.kind for _, e in found]
    assert kinds[0] == "start" and kinds[-1] == "final" and kinds.count("final") == 1
    assert kinds.count("partial") >= 3 and set(kinds[1:-1]) == {"partial"}
    partials = [e.text for _, e in found if e.kind == "partial"]
    assert all(a != b for a, b in itertools.pairwise(partials)), \
        "a partial only when the text changes"
    when, final = found[-1]
    assert final.text and len(final.text.split()) >= 3
    assert final.confidence is not None and 0.0 < final.confidence <= 1.0
    assert 0.0 < when - speech_end <= 1.0, "the final comes within the 700 ms endpoint"
    assert recognizer.finish() is final, "finish() gives the turn's final again"
    assert recognizer.accept(silence(0.2)) == [], "the turn is over until reset()"
    recognizer.close()


def test_grammar_answers_over_several_turns(vosk_model: VoskModel, korean: Speak) -> None:
    recognizer = VoskRecognizer(vosk_model, phrases=ANSWERS)
    for answer in [*ANSWERS, "네"]:
        finals = [e for _, e in feed(recognizer, turn(korean(answer))) if e.kind == "final"]
        assert len(finals) == 1
        # A bigram over the phrases lets "네" slip in front of a longer answer now and
        # then (Kaldi dithers its input at random), so that one is checked by its end.
        text = finals[0].text
        assert text == answer or (answer == AGENT and text.endswith(f" {AGENT}"))
        recognizer.reset()
    recognizer.close()


def test_reset_drops_a_half_heard_utterance(vosk_model: VoskModel, korean: Speak) -> None:
    recognizer = VoskRecognizer(vosk_model, phrases=ANSWERS)
    half = korean(AGENT)
    feed(recognizer, turn(half[: len(half) // 2], tail_s=0.0))
    recognizer.reset()
    assert recognizer.finish().text == "", "nothing carried over"
    recognizer.reset()
    finals = [e for _, e in feed(recognizer, turn(korean("아니요"))) if e.kind == "final"]
    assert [f.text for f in finals] == ["아니요"]
    recognizer.close()


def test_finish_forces_a_final_from_buffered_audio(vosk_model: VoskModel,
                                                   korean: Speak) -> None:
    """No trailing silence (the caller hung up): the resampler's tail must be flushed."""
    recognizer = VoskRecognizer(vosk_model, phrases=ANSWERS)
    kinds = [e.kind for _, e in feed(recognizer, turn(korean(AGENT), tail_s=0.0))]
    assert "final" not in kinds
    final = recognizer.finish()
    assert final.kind == "final" and final.text.endswith(AGENT)
    recognizer.close()


def test_no_input_when_nothing_is_said(vosk_model: VoskModel) -> None:
    recognizer = VoskRecognizer(vosk_model, VadSettings(no_input_ms=1000))
    found = feed(recognizer, silence(1.5))
    assert [(t, e.kind) for t, e in found] == [(1.0, "no-input")]
    assert recognizer.finish() == Recognition("final")
    recognizer.close()


def test_factory_shares_one_model(vosk_model: VoskModel, tmp_path: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    first = create_recognizer(SpeechSettings(), tmp_path)
    second = create_recognizer(SpeechSettings(), tmp_path, phrases=ANSWERS)
    assert isinstance(first, VoskRecognizer) and isinstance(second, VoskRecognizer)
    assert first.model is second.model is vosk_model
    assert ("vosk", str(vosk_model.path)) in SHARED_MODELS.loaded()
    assert vosk_model.sample_rate == model_sample_rate(vosk_model.path) == 16000
    with pytest.raises(ValueError, match="whole 20 ms frames of 320 bytes, got 100"):
        first.accept(bytes(100))
    first.close()
    second.close()
    VoskRecognizer(vosk_model, phrases=["네", "qqq 네"]).close()
    assert "words not in the vocabulary of" in caplog.text and "phrases: qqq" in caplog.text


def test_vosks_own_endpoint_ends_the_turn_when_it_comes_first(vosk_model: VoskModel,
                                                              korean: Speak) -> None:
    recognizer = VoskRecognizer(vosk_model, VadSettings(end_silence_ms=4000))
    speech = korean(SENTENCE)
    found = feed(recognizer, turn(speech, tail_s=5.0))
    finals = [(t, e) for t, e in found if e.kind == "final"]
    assert len(finals) == 1 and finals[0][1].text
    assert finals[0][0] - (1.0 + len(speech) / 8000) < 3.0, "before the endpointer's 4 s"
    recognizer.reset()
    again = [e for _, e in feed(recognizer, turn(speech, tail_s=5.0)) if e.kind == "final"]
    assert again and again[0].text, "Result() was taken, so the next turn decodes normally"
    recognizer.close()
