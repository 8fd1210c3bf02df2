"""Build progress as log lines with the time left, or as a tqdm bar on a terminal."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from kb.progress import ProgressBar, ProgressLog, format_duration, progress_reporter


class Terminal(io.StringIO):
    """What a bar is drawn on: a stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 44.6, 60, 245, 4800)] == \
        ["0 s", "45 s", "1 min 00 s", "4 min 05 s", "1 h 20 min"]


def test_lines_are_spaced_and_tell_the_time_left() -> None:
    now = [0.0]
    lines: list[str] = []
    log = ProgressLog("FAQ index", lines.append, interval_s=5.0, clock=lambda: now[0])
    # Loading the model takes 10 s before the first step; the pace counts from there.
    for at, done in [(0, 0), (10, 1), (16, 2), (19, 3), (22, 4), (26, 5), (300, 52)]:
        now[0] = at
        log(done, 52)
    assert lines == ["FAQ index: 3% (2 of 52 steps), about 5 min 00 s left",
                     "FAQ index: 7% (4 of 52 steps), about 3 min 12 s left"]


def test_lines_go_to_the_log_by_default(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = ProgressLog(interval_s=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="kb.progress"):
        for done in range(4):
            now[0] = 2.0 * done
            log(done, 4)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "FAQ index: 50% (2 of 4 steps), about 4 s left"),
        (logging.INFO, "FAQ index: 75% (3 of 4 steps), about 2 s left")]


def test_lines_where_there_is_no_terminal() -> None:
    lines: list[str] = []
    with progress_reporter("FAQ index", io.StringIO(), lines.append) as progress:
        assert isinstance(progress, ProgressLog)


def test_a_bar_on_a_terminal_with_log_records_above_it(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    console = logging.StreamHandler(terminal)
    logging.root.addHandler(console)
    try:
        with progress_reporter() as progress:
            assert isinstance(progress, ProgressBar)
            progress(0, 4)
            progress(2, 4)
            logging.getLogger("trunks.health").warning("Trunk(carrier-a) up -> down")
            progress(4, 4)
        assert logging.root.handlers[-1] is console  # the console handler is back
    finally:
        logging.root.removeHandler(console)
    drawn = terminal.getvalue()
    assert "FAQ index:  50%" in drawn and "2/4 [" in drawn
    assert "FAQ index: 100%" in drawn and "4/4 [" in drawn and "<00:00" in drawn
    before, record, after = drawn.partition("Trunk(carrier-a) up -> down\n")
    assert record and before.endswith("\r") and after.startswith("\rFAQ index:  50%")
