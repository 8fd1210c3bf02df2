"""Recognizer settings, the shared model loader and frame splitting."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from speech.recognizer import DEFAULT_MODELS_DIR, SharedModels, SpeechSettings, split_frames


def test_settings_defaults_and_validation() -> None:
    settings = SpeechSettings()
    assert settings.engine == "vosk" and settings.vosk.model is None
    assert settings.whisper.beam_size == 5 and settings.whisper.cpu_threads == 1
    assert (settings.vad.mode, settings.vad.start_frames, settings.vad.start_window) == (3, 6, 8)
    assert (settings.vad.end_silence_ms, settings.vad.min_dbfs) == (700, -45.0)
    assert (settings.vad.no_input_ms, settings.vad.max_utterance_ms) == (5000, 15000)
    assert settings.list_url == "https://alphacephei.com/vosk/models/model-list.json"
    custom = SpeechSettings.model_validate({"engine": "whisper", "vad": {"end_silence_ms": 600},
                                            "whisper": {"language": "de"}})
    assert custom.vad.end_silence_ms == 600 and custom.whisper.language == "de"
    for bad in ({"engine": "kaldi"}, {"vad": {"mode": 4}}, {"vosk": {"modle": "x"}},
                {"whisper": {"beam_size": 0}}):
        with pytest.raises(ValidationError):
            SpeechSettings.model_validate(bad)
    with pytest.raises(ValidationError):
        settings.engine = "whisper"  # type: ignore[misc]


def test_models_path_follows_data_dir(tmp_path: Path) -> None:
    assert SpeechSettings().models_dir == DEFAULT_MODELS_DIR
    assert SpeechSettings().models_path(tmp_path / "data") == tmp_path / "data" / "models"
    assert SpeechSettings(models_dir=tmp_path / "m").models_path(Path("var")) == tmp_path / "m"
    assert SpeechSettings(models_dir=Path("models")).models_path(Path("var")) == \
        Path.cwd() / "models"


def test_shared_models_load_once_under_concurrency() -> None:
    shared, loads = SharedModels(), []

    def load() -> str:
        loads.append(1)
        time.sleep(0.05)
        return "model"

    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(shared.get(("x", "a"), load)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got == ["model"] * 8 and len(loads) == 1
    assert shared.get(("x", "b"), lambda: "other") == "other"
    assert shared.loaded() == [("x", "a"), ("x", "b")]
    shared.clear()
    assert shared.loaded() == []


def test_split_frames() -> None:
    two = np.arange(320, dtype=np.int16)
    assert [len(f) for f in split_frames(two)] == [320, 320]
    assert b"".join(split_frames(two.tobytes())) == two.tobytes()
    for bad in (b"", bytes(321), bytes(160)):
        with pytest.raises(ValueError, match="whole 20 ms frames"):
            list(split_frames(bad))
