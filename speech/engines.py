"""The recognizer factory: the configured engine, its model checked, loaded or bound to a call.

Each engine is imported only when it is configured, so a deployment running Whisper
does not need vosk installed, nor one running Vosk faster-whisper.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from speech.recognizer import Recognizer, SpeechSettings


def create_recognizer(settings: SpeechSettings, models_dir: Path,
                      phrases: Sequence[str] | None = None) -> Recognizer:
    """A recognizer for one call, with the configured engine and the shared model.

    `models_dir` is the resolved directory (`settings.models_path(data_dir)`).
    `phrases` restricts Vosk to those words and phrases (a menu's answers); Whisper
    ignores it. Raises ModelNotFound or RecognizerError."""
    if settings.engine == "vosk":
        from speech import vosk_engine

        return vosk_engine.VoskRecognizer(vosk_engine.load_model(settings, models_dir),
                                          settings.vad, phrases)
    from speech import whisper_engine

    return whisper_engine.WhisperRecognizer(whisper_engine.load_model(settings), settings.vad,
                                            settings.whisper)


def preload(settings: SpeechSettings, models_dir: Path) -> None:
    """Load the configured engine's model now, so the first caller does not wait."""
    if settings.engine == "vosk":
        from speech import vosk_engine

        vosk_engine.load_model(settings, models_dir)
    else:
        from speech import whisper_engine

        whisper_engine.load_model(settings)


def check_model(settings: SpeechSettings, models_dir: Path) -> Path:
    """The configured model's directory, checked for its files but not loaded
    (for `hotline config check`); raises ModelNotFound."""
    if settings.engine == "vosk":
        from speech import models

        return models.vosk_model_path(settings.vosk.model, models_dir)
    from speech import whisper_engine

    return whisper_engine.model_path(settings.whisper.model)
