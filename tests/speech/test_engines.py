"""The recognizer factory's model checks and preloading."""

from __future__ import annotations

from pathlib import Path

import pytest

from speech.engines import check_model, preload
from speech.errors import ModelNotFound, RecognizerError, SpeechError
from speech.models import packaged_vosk_model
from speech.recognizer import SHARED_MODELS, SpeechSettings
from speech.vosk_engine import VoskModel
from speech.whisper_engine import WhisperModel, model_path


def test_check_model_finds_the_packaged_models(tmp_path: Path) -> None:
    packaged = packaged_vosk_model()
    assert packaged is not None and check_model(SpeechSettings(), tmp_path) == packaged
    assert (check_model(SpeechSettings(engine="whisper"), tmp_path) / "model.bin").is_file()
    with pytest.raises(ModelNotFound, match=r"set speech\.whisper\.model"):
        model_path(tmp_path)
    assert issubclass(ModelNotFound, RecognizerError) and issubclass(RecognizerError, SpeechError)


@pytest.mark.slow
def test_preload_uses_the_shared_models(vosk_model: VoskModel, whisper_model: WhisperModel,
                                        tmp_path: Path) -> None:
    preload(SpeechSettings(), tmp_path)
    preload(SpeechSettings(engine="whisper"), tmp_path)
    loaded = SHARED_MODELS.loaded()
    assert ("vosk", str(vosk_model.path)) in loaded
    assert ("whisper", f"{whisper_model.path}#1") in loaded
