"""Data for the kb tests. The example FAQ's index and searcher are session fixtures in
tests/conftest.py, shared with the voice bot's tests (building the index tunes a model)."""

from __future__ import annotations

from tests.conftest import EXAMPLE_FAQ, ROOT

TURNS = ROOT / "tests" / "data" / "faq-turns.yaml"

__all__ = ["EXAMPLE_FAQ", "TURNS"]
