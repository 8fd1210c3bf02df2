"""One search index of the example FAQ for the whole session (building it tunes a model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.settings import load_yaml
from kb.calibration import Calibration
from kb.faq import Faq
from kb.index import Index, open_index
from kb.search import Searcher

BUILD_TIMEOUT_S = 900
"""Tuning the model for the example FAQ takes one to three minutes of CPU."""
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_FAQ = ROOT / "config" / "faq.yaml"
TURNS = ROOT / "tests" / "data" / "faq-turns.yaml"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The first test to use the index pays for building it, so allow for that."""
    for item in items:
        if "example_index" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_S))


@pytest.fixture(scope="session")
def kb_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir whose kb/ holds the session's indexes (for `hotline kb --faq`)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def kb_cache(kb_data_dir: Path) -> Path:
    return kb_data_dir / "kb"


@pytest.fixture(scope="session")
def example_faq() -> Faq:
    return load_yaml(EXAMPLE_FAQ, Faq)


@pytest.fixture(scope="session")
def example_index(example_faq: Faq, kb_cache: Path) -> Index:
    return open_index(example_faq, kb_cache)


@pytest.fixture(scope="session")
def searcher(example_faq: Faq, example_index: Index) -> Searcher:
    return Searcher(example_faq, example_index, Calibration.load())
