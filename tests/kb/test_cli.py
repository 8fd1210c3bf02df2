"""`hotline kb ask|eval|build|calibrate` on the example FAQ; `build` from scratch."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ivr.cli import cli
from kb.index import BUILD_STEPS, Index
from tests.kb.conftest import EXAMPLE_FAQ, INDEX_BUILD_TIMEOUT_S, SMALL_FAQ, TURNS

Invoke = Callable[..., Result]


@pytest.fixture
def run(kb_data_dir: Path, example_index: Index) -> Invoke:
    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env={"HOTLINE_DATA_DIR": str(kb_data_dir)})
    return invoke


def test_ask_prints_the_decision_as_json(run: Invoke) -> None:
    result = run("kb", "ask", "how often should we change the oil", "--faq", str(EXAMPLE_FAQ),
                 "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert list(answer) == ["decision", "id", "score", "confidence", "answer", "candidates"]
    assert answer["decision"] == "answer"
    assert answer["id"] == "service-interval"
    assert answer["answer"].startswith("Change the air filter")
    assert answer["candidates"][0] == {"id": "service-interval", "score": answer["score"]}


def test_ask_without_an_answer_has_a_null_id(run: Invoke) -> None:
    result = run("kb", "ask", "what time does the football start", "--faq", str(EXAMPLE_FAQ),
                 "--json")
    answer = json.loads(result.output)
    assert answer["decision"] in ("none", "clarify")
    assert answer["id"] is None and answer["answer"] is None
    assert len(answer["candidates"]) == 3


def test_eval_reports_accuracy_and_latency(run: Invoke) -> None:
    result = run("kb", "eval", str(TURNS), "--faq", str(EXAMPLE_FAQ), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["turns"] == 20 and report["in_scope"] == 15
    assert report["in_scope_top1"] == 1.0
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
    text = run("kb", "eval", str(TURNS), "--faq", str(EXAMPLE_FAQ)).output
    assert "overall accuracy:" in text and "out-of-scope rejection:" in text


def test_calibrate_writes_a_calibration_eval_can_use(run: Invoke, tmp_path: Path) -> None:
    out = tmp_path / "calibration.json"
    result = run("kb", "calibrate", str(TURNS), "--faq", str(EXAMPLE_FAQ), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "cross-validated" in result.output
    assert json.loads(out.read_text())["fitted"]["turns"] == 20
    again = run("kb", "eval", str(TURNS), "--faq", str(EXAMPLE_FAQ), "--calibration", str(out),
                "--json")
    assert again.exit_code == 0, again.output


def test_a_broken_faq_is_refused_with_its_line(run: Invoke, tmp_path: Path) -> None:
    faq = tmp_path / "faq.yaml"
    faq.write_text("entries:\n"
                   "  - {id: a, category: c, questions: [q], answer: x}\n"
                   "  - {id: a, category: c, priority: P9, questions: [q], answer: y}\n")
    result = run("kb", "ask", "hello", "--faq", str(faq))
    assert result.exit_code == 2
    assert "line 3: entries[1].priority" in result.output
    assert "Traceback" not in result.output


def test_eval_refuses_turns_expecting_unknown_ids(run: Invoke, tmp_path: Path) -> None:
    turns = tmp_path / "turns.yaml"
    turns.write_text("- {text: hello, expect: no-such-entry}\n")
    result = run("kb", "eval", str(turns), "--faq", str(EXAMPLE_FAQ))
    assert result.exit_code == 2
    assert "no-such-entry" in result.output


@pytest.mark.slow
@pytest.mark.timeout(INDEX_BUILD_TIMEOUT_S)
def test_build_shows_its_progress(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["kb", "build", "--faq", str(SMALL_FAQ)],
                                env={"HOTLINE_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    # Not a terminal: a line every few seconds on stderr rather than a bar.
    lines = re.findall(r"^FAQ index: (\d+)% \((\d+) of (\d+) steps\), about \d+ (?:s|min \d\d s) "
                       r"left$", result.stderr, re.MULTILINE)
    assert lines, result.stderr
    done = [int(d) for _, d, _ in lines]
    assert done == sorted(set(done)) and 0 < done[-1] < BUILD_STEPS
    assert {int(total) for _, _, total in lines} == {BUILD_STEPS}
    assert all(int(percent) == 100 * int(d) // BUILD_STEPS for percent, d, _ in lines)
    assert f"{SMALL_FAQ}: index of 2 entries in {tmp_path / 'kb'}" in result.stdout
