"""Prompts as telephone audio: synthesized or recorded, converted once, cached.

A prompt becomes 8 kHz 16-bit PCM, kept in memory and on disk under the cache
directory, keyed by the synthesizer's voice and the text (or by a WAV file's path
and modification time). Calls encode it to their codec with `speech.g711`, which
is cheap; synthesis, the slow part, happens once per voice and text.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from speech.g711 import ALAW_TO_ULAW, ULAW_TO_ALAW, alaw_encode, ulaw_encode
from speech.synthesizer import Samples, Synthesizer, read_wav, resample

logger = logging.getLogger(__name__)

TELEPHONE_RATE = 8000
PCMU, PCMA = 0, 8
QUIET = 200
"""Samples below this magnitude (about -44 dBFS) count as the synthesizer's padding."""


class PromptCache:
    """8 kHz prompts by text or file; safe to share between call threads."""

    def __init__(self, directory: Path, synthesizer: Synthesizer) -> None:
        self.directory = directory
        self.synthesizer = synthesizer
        self._memory: dict[str, Samples] = {}
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)

    def text(self, text: str) -> Samples:
        """`text` spoken by the synthesizer, at 8 kHz."""
        key = hashlib.sha256(f"{self.synthesizer.name}\n{text}".encode()).hexdigest()[:32]
        return self._cached(key, lambda: resample(*self.synthesizer.synthesize(text),
                                                  TELEPHONE_RATE))

    def file(self, path: Path) -> Samples:
        """A recorded WAV prompt, converted to 8 kHz mono."""
        stamp = f"{path.resolve()}\n{path.stat().st_mtime_ns}"
        key = hashlib.sha256(stamp.encode()).hexdigest()[:32]
        return self._cached(key, lambda: resample(*read_wav(path), TELEPHONE_RATE))

    def warm(self, texts: list[str], files: list[Path]) -> None:
        """Prepare every prompt of a flow at start-up, so no caller waits for synthesis."""
        for text in texts:
            self.text(text)
        for path in files:
            self.file(path)

    def _cached(self, key: str, make: Callable[[], Samples]) -> Samples:
        with self._lock:
            if key in self._memory:
                return self._memory[key]
        path = self.directory / f"{key}.pcm"
        if path.exists():
            samples = np.fromfile(path, dtype="<i2")
        else:
            samples = make()
            temporary = path.with_suffix(".tmp")
            samples.astype("<i2").tofile(temporary)
            temporary.replace(path)  # atomic: a crash never leaves half a prompt
        with self._lock:
            self._memory[key] = samples
        return samples


def trimmed(samples: Samples) -> Samples:
    """`samples` without the near-silence before and after the sound (a synthesizer pads
    each utterance; a word spoken inside a sentence, such as a digit, should not be)."""
    loud = np.flatnonzero(np.abs(samples) > QUIET)
    return samples[loud[0]:loud[-1] + 1] if len(loud) else samples


def encode(samples: Samples, payload_type: int) -> bytes:
    """8 kHz samples as the call's G.711 payload (0: mu-law, 8: A-law)."""
    if payload_type == PCMU:
        return ulaw_encode(samples)
    if payload_type == PCMA:
        return alaw_encode(samples)
    raise ValueError(f"payload type {payload_type} is not G.711")


def translation(source: int, target: int) -> bytes | None:
    """The `bytes.translate` table from one G.711 payload type to another; None if
    they are the same."""
    if source == target:
        return None
    tables = {(PCMU, PCMA): ULAW_TO_ALAW, (PCMA, PCMU): ALAW_TO_ULAW}
    if (source, target) not in tables:
        raise ValueError(f"cannot translate payload type {source} to {target}")
    return tables[source, target]
