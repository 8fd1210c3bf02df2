"""The speech package's errors.

    SpeechError
     +-- SynthesisError           text could not be turned into speech
     +-- AudioFileError           a recorded prompt cannot be read
     +-- RecognizerError          an engine failed or is not installed
          +-- ModelNotFound       a configured model directory is missing or incomplete
          +-- ModelInstallError   a model could not be installed
               +-- UnknownModel       the model list has no model of that name
               +-- DownloadFailed     the list or the archive could not be fetched
               +-- ChecksumMismatch   the archive's size or MD5 differs from the list's
               +-- BadArchive         not a zip, a member escapes the target, or no model inside
"""

from __future__ import annotations

from pathlib import Path

INSTALL_HINT = "run `hotline speech install-model {name}`"
"""What `ModelNotFound` suggests when it is given no other hint."""


class SpeechError(Exception):
    """Base of the speech package's errors."""


class SynthesisError(SpeechError):
    """Text could not be turned into speech."""


class AudioFileError(SpeechError):
    """A recorded audio file could not be used."""


class RecognizerError(SpeechError):
    """Speech could not be recognized: an engine failed or is not installed."""


class ModelNotFound(RecognizerError):
    """A model directory is missing or is not a model; says how to install one."""

    def __init__(self, name: str, path: Path | None, hint: str | None = None) -> None:
        super().__init__(name, path, hint)
        self.name, self.path = name, path
        self.hint = hint or INSTALL_HINT.format(name=name)

    def __str__(self) -> str:
        where = f" at {self.path}" if self.path is not None else ""
        return f"speech model {self.name!r} not found{where}; {self.hint}"


class ModelInstallError(RecognizerError):
    """A model could not be installed."""


class UnknownModel(ModelInstallError):
    """The model list has no model of that name; names close ones."""

    def __init__(self, name: str, suggestions: list[str]) -> None:
        super().__init__(name, suggestions)
        self.name, self.suggestions = name, suggestions

    def __str__(self) -> str:
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else \
            "; see `hotline speech list-models`"
        return f"no Vosk model named {self.name!r} in the model list{hint}"


class DownloadFailed(ModelInstallError):
    """The model list or an archive could not be fetched."""


class ChecksumMismatch(ModelInstallError):
    """The downloaded archive is not the one the list describes."""


class BadArchive(ModelInstallError):
    """The archive is unsafe or holds no model."""
