"""The call record spool: snapshots of call records that Redis could not take, one JSON
line each, in a `SpoolFile` (``<data_dir>/calls/spool.jsonl``) until Redis is back.

A replay stores only the latest snapshot of each call: the last line with its id, since
the writer appends a call's snapshots in the order the call moved, and a file set aside
earlier holds older ones than the fresh spool beside it. A record is keyed by its call
id and storing the same snapshot again changes nothing (`CallStore.save_snapshot`), so
a replay cut short and run again stores each record once, as it was last.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ivr.records.store import CallStore
from ivr.spool_file import SpoolFile, parse_lines

logger = logging.getLogger(__name__)

SPOOL_PATH = Path("calls/spool.jsonl")
"""Where call records wait while Redis is unreachable, relative to data_dir."""
MAX_REPLAY_ROUNDS = 3
"""Spool files taken in one `replay()`: the set-aside one, then the fresh one, then a spare."""
_REQUIRED = ("id", "trunk", "started_at", "ended_at")


def parse_snapshot(raw: bytes) -> dict[str, Any]:
    """One spooled snapshot (a record as `dataclasses.asdict` gives it); ValueError if the
    line is not one."""
    data = json.loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) \
            or any(name not in data for name in _REQUIRED):
        raise ValueError("not a call record snapshot")
    return data


class RecordSpool:
    """Call record snapshots waiting for Redis; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        self.file = SpoolFile(path, "call record")
        self.path = path
        self._replay_lock = threading.Lock()

    def append(self, snapshots: Sequence[Mapping[str, Any]]) -> None:
        """Add `snapshots` durably (one write, one fsync); OSError if they are not."""
        self.file.append([json.dumps(s).encode() for s in snapshots])

    def pending(self) -> bool:
        """Whether any snapshots wait to be replayed."""
        return self.file.pending()

    def replay(self, store: CallStore) -> int:
        """Store the latest spooled snapshot of each call in Redis; how many records that
        was. redis.RedisError leaves what is not stored yet for the next replay."""
        stored = 0
        with self._replay_lock:
            for _ in range(MAX_REPLAY_ROUNDS):
                if not self.file.set_aside():
                    break
                stored += self._replay_file(store)
        return stored

    def _replay_file(self, store: CallStore) -> int:
        snapshots, bad = parse_lines(self.file.read_aside(), parse_snapshot)
        latest = {s["id"]: s for s in snapshots}  # later lines replace earlier ones
        for snapshot in latest.values():
            store.save_snapshot(snapshot)
        self.file.replayed(bad)
        logger.info("Spool %s replayed: %d call records stored (from %d snapshots), "
                    "%d lines unreadable", self.path, len(latest), len(snapshots), len(bad))
        return len(latest)


__all__ = ["SPOOL_PATH", "RecordSpool", "parse_snapshot"]
