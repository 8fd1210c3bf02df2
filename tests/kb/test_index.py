"""An index on disk that no longer loads is set aside and built again, once; a build
reports its progress."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import kb.index
from ivr.settings import load_yaml
from kb.calibration import Calibration
from kb.encoder import MODEL_FILE, TOKENIZER_FILE, Encoder
from kb.errors import BuildError
from kb.faq import Faq
from kb.index import BUILD_STEPS, META_FILE, VECTORS_FILE, Index, open_index
from kb.progress import Progress
from kb.search import Decision, Searcher
from kb.text import Normaliser
from tests.kb.conftest import INDEX_BUILD_TIMEOUT_S, SMALL_FAQ


def _truncate_vectors(directory: Path) -> None:
    data = (directory / VECTORS_FILE).read_bytes()
    (directory / VECTORS_FILE).write_bytes(data[:len(data) // 2])


def _flip_vector_bytes(directory: Path) -> None:
    data = bytearray((directory / VECTORS_FILE).read_bytes())
    data[4000:4016] = bytes(b ^ 0xFF for b in data[4000:4016])
    (directory / VECTORS_FILE).write_bytes(bytes(data))


def _garble_meta(directory: Path) -> None:
    (directory / META_FILE).write_text('{"entries": [')


def _empty_meta(directory: Path) -> None:
    (directory / META_FILE).write_text("{}")


def _remove_model(directory: Path) -> None:
    (directory / MODEL_FILE).unlink()


@pytest.fixture
def cache(example_index: Index, tmp_path: Path) -> Path:
    """A cache directory holding a copy of the session's example index, free to damage."""
    cache = tmp_path / "kb"
    shutil.copytree(example_index.directory, cache / example_index.directory.name)
    return cache


@pytest.fixture
def builds(example_index: Index, cache: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Where each build tuned its model. Tuning takes minutes, so the stand-in copies the
    session's tuned model; the vectors are still computed and written by kb.index."""
    built: list[Path] = []

    def tune(faq: Faq, normalise: Normaliser, base: Path, out: Path,
             progress: Progress | None = None) -> None:
        assert out.parent == cache and out.name.startswith(".building-")
        assert base == kb.index.base_model_path() and len(faq.entries) > 2
        assert normalise("f zero one") == "f01"
        built.append(out)
        time.sleep(0.2)  # a concurrent opener gets to wait on the lock
        for name in (MODEL_FILE, TOKENIZER_FILE):
            shutil.copyfile(example_index.directory / name, out / name)

    monkeypatch.setattr(kb.index, "tune_and_export", tune)
    return built


@pytest.mark.parametrize(("damage", "cause"), [
    pytest.param(_truncate_vectors, "BadZipFile", id="truncated-vectors"),
    pytest.param(_flip_vector_bytes, "Bad CRC-32", id="damaged-vectors"),
    pytest.param(_garble_meta, "JSONDecodeError", id="garbled-meta"),
    pytest.param(_empty_meta, "KeyError('entries')", id="empty-meta"),
    pytest.param(_remove_model, f"no {MODEL_FILE}", id="no-model"),
])
def test_an_index_that_no_longer_loads_is_rebuilt(damage: Callable[[Path], None], cause: str,
                                                  example_faq: Faq, example_index: Index,
                                                  cache: Path, builds: list[Path],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    directory = cache / example_index.directory.name
    damage(directory)
    with caplog.at_level(logging.WARNING, logger="kb.index"):
        index = open_index(example_faq, cache)
    assert len(builds) == 1
    assert index.directory == directory
    assert index.entry_ids == example_index.entry_ids
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(directory) in warning and cause in warning, warning
    assert (cache / f".broken-{directory.name}").is_dir()
    assert [p.name for p in cache.iterdir() if p.name.startswith(".building")] == []
    result = Searcher(example_faq, index, Calibration.load()).ask(
        "um the screen says f zero one and it stopped")
    assert (result.decision, result.id) == (Decision.ANSWER, "fault-f01-temperature")


def test_a_fresh_build_that_does_not_load_is_a_build_error(example_faq: Faq,
                                                           example_index: Index, cache: Path,
                                                           builds: list[Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    write_vectors = kb.index._write_vectors

    def write_damaged(faq: Faq, normalise: Normaliser, encoder: Encoder, work: Path) -> None:
        write_vectors(faq, normalise, encoder, work)
        _truncate_vectors(work)

    _truncate_vectors(cache / example_index.directory.name)
    monkeypatch.setattr(kb.index, "_write_vectors", write_damaged)
    with pytest.raises(BuildError, match="the index just built does not load"):
        open_index(example_faq, cache)
    assert len(builds) == 1


def test_concurrent_openers_rebuild_once(example_faq: Faq, example_index: Index, cache: Path,
                                         builds: list[Path]) -> None:
    _truncate_vectors(cache / example_index.directory.name)
    start = threading.Barrier(3)
    opened: list[Index] = []

    def open_it() -> None:
        start.wait()
        opened.append(open_index(example_faq, cache))

    threads = [threading.Thread(target=open_it) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1
    assert len(opened) == 3
    assert {i.directory for i in opened} == {cache / example_index.directory.name}
    assert all(i.entry_ids == example_index.entry_ids for i in opened)


@pytest.mark.slow
@pytest.mark.timeout(INDEX_BUILD_TIMEOUT_S)
def test_a_build_reports_every_step(tmp_path: Path) -> None:
    faq = load_yaml(SMALL_FAQ, Faq)
    reports: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        reports.append((done, total))

    index = open_index(faq, tmp_path, progress=progress)
    assert reports == [(done, BUILD_STEPS) for done in range(BUILD_STEPS + 1)]
    assert index.entry_ids == ["hours", "oil"]
    reports.clear()
    assert open_index(faq, tmp_path, progress=progress).directory == index.directory
    assert reports == []  # nothing to build
