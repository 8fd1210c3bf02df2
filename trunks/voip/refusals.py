"""Counting and logging the requests a trunk's endpoint refuses.

A flood of INVITEs from an address that is not the trunk's (a scanner, a toll
fraud attempt) must not flood the log too. `RefusalLog` logs the first refusal
from a source at once, then at most one line per source and `window_s` with the
count since ("Refused 1234 INVITEs from 203.0.113.9 in the last 60 s (not a trunk
address)"). Its table of sources is bounded, so a spray from many addresses
cannot grow memory without limit: when it is full, the least recently seen source
is forgotten (its count is still in the counter).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

logger = logging.getLogger(__name__)

WINDOW_S = 60.0
"""At most one log line per source and reason in this many seconds."""
MAX_SOURCES = 1024
"""Sources remembered at once."""

REFUSED = Counter(
    "hotline_sip_refused", "Requests the trunks' SIP endpoints refused, by reason: "
    "not_trunk_address (403), malformed (400, 505), unsupported_media (415, 488), "
    "draining (503)",
    ["trunk", "reason"], registry=None)
"""Process-wide; to be registered with each server's registry like SETUP_SECONDS."""


@dataclass
class _Source:
    logged_at: float
    since: int = 0
    """Refusals since the last line."""


class RefusalLog:
    """Counts one trunk's refusals and logs them at a bounded rate."""

    def __init__(self, trunk: str, *, window_s: float = WINDOW_S,
                 max_sources: int = MAX_SOURCES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.trunk = trunk
        self.window_s = window_s
        self.max_sources = max_sources
        self._clock = clock
        self._sources: OrderedDict[tuple[str, str, str], _Source] = OrderedDict()

    def refused(self, address: str, method: str, reason: str, label: str) -> None:
        """Count a `method` request from `address` refused for `reason` (words for the
        log) under the counter's `label`; log it if the window allows."""
        REFUSED.labels(self.trunk, label).inc()
        key, now = (address, method, reason), self._clock()
        source = self._sources.get(key)
        if source is None:
            self._sources[key] = _Source(now)
            while len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)
            logger.warning("SIP endpoint %s refused %s %s from %s (%s)", self.trunk,
                           _article(method), method, address, reason)
            return
        self._sources.move_to_end(key)
        source.since += 1
        if now - source.logged_at >= self.window_s:
            logger.warning("SIP endpoint %s refused %d %ss from %s in the last %.0f s (%s)",
                           self.trunk, source.since, method, address, now - source.logged_at,
                           reason)
            source.logged_at, source.since = now, 0


def _article(word: str) -> str:
    return "an" if word[:1].upper() in "AEIOU" else "a"
