"""Data for the kb tests. The example FAQ's index and searcher are session fixtures in
tests/conftest.py, shared with the voice bot's tests (building the index tunes a model)."""

from __future__ import annotations

from tests.conftest import EXAMPLE_FAQ, INDEX_BUILD_TIMEOUT_S, ROOT

TURNS = ROOT / "tests" / "data" / "faq-turns.yaml"
SMALL_FAQ = ROOT / "tests" / "data" / "faq-two-entries.yaml"
"""Two entries: for tests that build an index of their own, in under a minute."""

__all__ = ["EXAMPLE_FAQ", "INDEX_BUILD_TIMEOUT_S", "SMALL_FAQ", "TURNS"]
