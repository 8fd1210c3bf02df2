"""Progress of a long job, such as building the FAQ index: a bar on a terminal, lines elsewhere.

A job reports by calling a `Progress` callback with the steps done and the steps in
all, from (0, total) to (total, total). `progress_reporter` picks how to show it:

- `ProgressBar`: a tqdm bar with the time left, when stderr is a terminal. While it
  shows, records for the console log handlers are printed above it, not through it.
- `ProgressLog`: a line such as `FAQ index: 40% (21 of 52 steps), about 2 min 30 s left`
  at most every `PROGRESS_INTERVAL_S`, to the log (INFO) or to a function given, such
  as the CLI's echo.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 5.0
"""Least time between two progress lines, seconds."""
DEFAULT_WHAT = "FAQ index"

Progress = Callable[[int, int], None]
"""Called with the steps done and the steps in all."""


def format_duration(seconds: float) -> str:
    """`seconds` for a person: "45 s", "4 min 05 s", "1 h 20 min"."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, whole = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {whole:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _log_line(line: str) -> None:
    logger.info("%s", line)


class ProgressLog:
    """Progress as a line with the percentage and the time left, at most every `interval_s`.

    The time left assumes the remaining steps go at the average pace of those since the
    first step reported done; what came before it (loading a model) would skew it."""

    def __init__(self, what: str = DEFAULT_WHAT, emit: Callable[[str], None] = _log_line,
                 interval_s: float = PROGRESS_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.interval_s = what, interval_s
        self._emit, self._clock = emit, clock
        self._first: tuple[float, int] | None = None
        """When the first step was reported done, and the count then."""
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        if done <= 0 or done >= total:
            return
        if self._first is None:
            self._first, self._last = (now, done), now
            return
        since, counted = self._first
        if done == counted or now - self._last < self.interval_s:
            return
        self._last = now
        left = (now - since) / (done - counted) * (total - done)
        self._emit(f"{self.what}: {100 * done // total}% ({done} of {total} steps), "
                   f"about {format_duration(left)} left")


class ProgressBar(contextlib.AbstractContextManager["ProgressBar"]):
    """A tqdm bar on `stream`, drawn from the first report until the block ends."""

    def __init__(self, what: str = DEFAULT_WHAT, stream: TextIO | None = None) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self._bar: Any = None
        self._redirect = contextlib.ExitStack()

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = self._open(total)
        self._bar.update(done - self._bar.n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
        self._redirect.close()

    def _open(self, total: int) -> Any:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        # tqdm starts a monitor thread per process for its bars; this one needs none.
        quiet = type("QuietTqdm", (tqdm,), {"monitor_interval": 0})
        self._redirect.enter_context(logging_redirect_tqdm(tqdm_class=quiet))
        # A pseudo-terminal nobody sized says it is 0 by 0, and tqdm would draw nothing;
        # shutil falls back to 80 by 24.
        columns, lines = shutil.get_terminal_size()
        return quiet(total=total, desc=self.what, unit="step", file=self.stream,
                     ncols=columns, nrows=lines)


def progress_reporter(what: str = DEFAULT_WHAT, stream: TextIO | None = None,
                      emit: Callable[[str], None] = _log_line,
                      ) -> contextlib.AbstractContextManager[Progress]:
    """A bar on `stream` (stderr) if it is a terminal and tqdm is installed, else
    `ProgressLog` lines to `emit` (the log); use it as `with ... as progress:`."""
    stream = stream or sys.stderr
    if stream.isatty() and importlib.util.find_spec("tqdm") is not None:
        return ProgressBar(what, stream)
    return contextlib.nullcontext(ProgressLog(what, emit))
