"""The record writer: saves live calls' records from a thread of its own, so no call
waits on Redis."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from ivr.records.model import ANSWERED, CallRecord, LegQualities
from ivr.records.store import CallStore

logger = logging.getLogger(__name__)

SAVE_WAIT_S = 2.0
"""How long the end of a call waits for its record to be stored."""
RETRY_S = 1.0
"""Pause before saving again after Redis failed."""
QUALITY_REFRESH_S = 5.0
"""How often a live call's record is saved again when its quality changed: RTCP reports
come about this often (RFC 3550's 5 s interval)."""


class RecordWriter:
    """Saves live calls' records from a thread of its own, so a flow never waits on Redis.

    `update` takes a snapshot of the record and returns at once; the writer keeps only
    the latest snapshot of each call and saves it when it can. `save` is the call's last
    word: it waits (up to `wait_s`) until that snapshot is in Redis. A snapshot that
    cannot be saved (Redis away) is dropped for a newer one, and the last one is retried
    until `stop`.

    A call the writer `follow`s has its quality read on the writer's thread (the RTP
    engine's counters, read without a lock) into each snapshot saved, and its latest
    snapshot saved again every `refresh_s` when the quality changed, so a call that
    stays in one step (bridged to staff, say) still shows how it sounds. `save` ends
    that: the call's own thread writes the final figures."""

    def __init__(self, store: CallStore, retry_s: float = RETRY_S,
                 refresh_s: float = QUALITY_REFRESH_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.retry_s = retry_s
        self.refresh_s = refresh_s
        self._clock = clock
        self._pending: dict[str, dict[str, Any] | None] = {}
        """Call id -> the latest snapshot not yet saved (`dataclasses.asdict`); None: the
        followed call's latest snapshot again, if its quality changed."""
        self._live: dict[str, Callable[[], LegQualities]] = {}
        self._latest: dict[str, dict[str, Any]] = {}
        """A followed call's latest snapshot, saved again when its quality changes."""
        self._refresh_at = clock() + refresh_s
        self._saved: dict[str, threading.Event] = {}
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="call-records", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def follow(self, call_id: str, quality: Callable[[], LegQualities]) -> None:
        """Keep the live call's record current with `quality` until `save`; `quality`
        must not block (`RtpStream.quality`)."""
        with self._changed:
            self._live[call_id] = quality
            self._changed.notify()

    def update(self, record: CallRecord) -> None:
        """Save `record` as it is now, soon; never blocks on Redis."""
        snapshot = dataclasses.asdict(record)
        with self._changed:
            self._pending[record.id] = snapshot
            self._changed.notify()

    def save(self, record: CallRecord, wait_s: float = SAVE_WAIT_S) -> bool:
        """Save `record` as it is now and wait until it is stored; False if that took
        longer than `wait_s` (it is still saved once Redis answers, until `stop`)."""
        with self._changed:
            self._live.pop(record.id, None)
            self._latest.pop(record.id, None)
            saved = self._saved.setdefault(record.id, threading.Event())
            saved.clear()
        self.update(record)
        return saved.wait(wait_s)

    def stop(self, timeout: float = SAVE_WAIT_S) -> None:
        """Save what is pending (waiting up to `timeout`), then stop."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
        self._thread.join(timeout)
        with self._changed:
            unsaved = sum(1 for snapshot in self._pending.values() if snapshot is not None)
            if unsaved:
                logger.error("%d call records not saved at shutdown: Redis unreachable",
                             unsaved)

    def _run(self) -> None:
        while (job := self._next()) is not None:
            call_id, snapshot, quality, refresh = job
            changed = quality is not None and _with_quality(snapshot, call_id, quality)
            if refresh and not changed:
                continue
            try:
                self.store.save_snapshot(snapshot)
            except redis.RedisError as exc:
                with self._changed:
                    self._pending.setdefault(call_id, snapshot)  # unless a newer one came
                    stopping = self._stopping
                logger.warning("Call %s: record not saved yet, Redis unreachable: %s",
                               call_id, exc)
                if stopping:
                    return
                time.sleep(self.retry_s)
                continue
            with self._changed:
                if call_id not in self._pending and (saved := self._saved.pop(call_id, None)):
                    saved.set()

    def _next(self) -> tuple[str, dict[str, Any], Callable[[], LegQualities] | None,
                             bool] | None:
        """The next snapshot to save, its call's quality if followed, and whether it is
        only a refresh; waits for one, and is None once stopping with nothing left."""
        with self._changed:
            while True:
                now = self._clock()
                if now >= self._refresh_at:
                    self._refresh_at = now + self.refresh_s
                    if not self._stopping:
                        for call_id in self._latest:
                            self._pending.setdefault(call_id, None)
                if self._pending:
                    call_id = next(iter(self._pending))
                    snapshot = self._pending.pop(call_id)
                    quality = self._live.get(call_id)
                    if snapshot is not None and quality is not None:
                        self._latest[call_id] = snapshot
                    elif snapshot is None:
                        snapshot = self._latest.get(call_id)
                        if snapshot is None or quality is None:
                            continue
                        return call_id, snapshot, quality, True
                    return call_id, snapshot, quality, False
                if self._stopping:
                    return None
                self._changed.wait(self._refresh_at - now if self._live else None)


def _with_quality(snapshot: dict[str, Any], call_id: str,
                  quality: Callable[[], LegQualities]) -> bool:
    """Write a live call's quality, read now, into its snapshot; whether that changed it.
    The staff leg's goes to the latest forward attempt, the one bridged."""
    try:
        caller, staff = quality()
    except Exception:  # the record is saved all the same
        logger.exception("Call %s: reading its quality failed", call_id)
        return False
    changed = snapshot.get("quality") != caller
    snapshot["quality"] = caller
    attempts = snapshot["forward_attempts"]
    if staff is not None and attempts and attempts[-1]["outcome"] == ANSWERED:
        changed = changed or attempts[-1].get("quality") != staff
        attempts[-1]["quality"] = staff
    return changed


__all__ = ["QUALITY_REFRESH_S", "RETRY_S", "SAVE_WAIT_S", "RecordWriter"]
