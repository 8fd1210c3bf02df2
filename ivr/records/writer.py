"""The record writer: saves live calls' records from a thread of its own, so no call
waits on Redis, and spools them to disk while Redis cannot take them.

Its state (`WriterState`) says where snapshots go:

    STORING   into Redis, one transaction each;
    SPOOLING  after a save failed (or with a spool left from before a restart): to
              the spool, fsynced, all that are waiting at once; every `retry_s` the
              spool is replayed into Redis, and once it is empty the writer stores
              again. A live call's quality refreshes are not spooled: nobody can read
              them before Redis is back, and the call's next step or end has the
              latest figures.

One thread does both, so a call's snapshots reach Redis in the order they were taken:
nothing is stored directly while older snapshots still wait in the spool.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from ivr.records.model import ANSWERED, CallRecord, LegQualities
from ivr.records.spool import RecordSpool
from ivr.records.store import CallStore

logger = logging.getLogger(__name__)

SAVE_WAIT_S = 2.0
"""How long the end of a call waits for its record to be stored or spooled."""
RETRY_S = 1.0
"""How often the spool is replayed while Redis is unreachable."""
QUALITY_REFRESH_S = 5.0
"""How often a live call's record is saved again when its quality changed: RTCP reports
come about this often (RFC 3550's 5 s interval)."""
STOP_WAIT_S = 5.0
"""How long `stop` waits for what is pending to be stored or spooled."""

Snapshot = dict[str, Any]
"""A record as `dataclasses.asdict` gives it."""


class WriterState(enum.StrEnum):
    STORING = "storing"
    """Snapshots go to Redis."""
    SPOOLING = "spooling"
    """Redis failed: snapshots go to the spool until it is replayed."""


Dialog = Callable[[], dict[str, Any] | None]
"""A followed call's SIP dialogs while it is bridged (`SipChannel.dialog_state`)."""


@dataclass
class _Job:
    call_id: str
    snapshot: Snapshot
    quality: Callable[[], LegQualities] | None
    """The followed call's quality, read into the snapshot before it is saved."""
    refresh: bool
    """Only a refresh: saved only if the quality (or the dialog) changed."""
    dialog: Dialog | None = None
    """The followed call's dialogs, read into the snapshot's "dialog" before it is saved."""


class RecordWriter:
    """Saves live calls' records from a thread of its own, so a flow never waits on Redis.

    `update` takes a snapshot of the record and returns at once; the writer keeps only
    the latest snapshot of each call and saves it when it can. `save` is the call's last
    word: it waits (up to `wait_s`) until that snapshot is in Redis or in the spool.

    A call the writer `follow`s has its quality read on the writer's thread (the RTP
    engine's counters, read without a lock) into each snapshot saved, and its latest
    snapshot saved again every `refresh_s` when the quality changed, so a call that
    stays in one step (bridged to staff, say) still shows how it sounds. Its SIP dialogs
    while bridged are read the same way into the snapshot's "dialog" (which the store
    keeps apart from the record), so another node can take the call up if this one
    dies. `save` ends that: the call's own thread writes the final figures."""

    def __init__(self, store: CallStore, spool: RecordSpool, retry_s: float = RETRY_S,
                 refresh_s: float = QUALITY_REFRESH_S,
                 clock: Callable[[], float] = time.monotonic, node: str | None = None,
                 run: str | None = None) -> None:
        """`store` should give up quickly on a hung Redis (a client with a short timeout
        and no retries): until it does, snapshots wait in memory. `node` and `run`: this
        node's name and run (`NodeLease.run`), written into every record it saves that
        names no node."""
        self.store = store
        self.node, self.run = node, run
        self.spool = spool
        self.retry_s = retry_s
        self.refresh_s = refresh_s
        self._clock = clock
        self._pending: dict[str, Snapshot | None] = {}
        """Call id -> the latest snapshot not yet saved; None: the followed call's latest
        snapshot again, if its quality changed."""
        self._live: dict[str, Callable[[], LegQualities]] = {}
        self._dialogs: dict[str, Dialog] = {}
        self._latest: dict[str, Snapshot] = {}
        """A followed call's latest snapshot, saved again when its quality changes."""
        self._refresh_at = clock() + refresh_s
        self._saved: dict[str, threading.Event] = {}
        self._state = WriterState.SPOOLING if spool.pending() else WriterState.STORING
        """SPOOLING at start when a spool is left over: it is replayed first."""
        self._replay_at = clock()
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="call-records", daemon=True)

    @property
    def state(self) -> WriterState:
        return self._state

    def start(self) -> None:
        self._thread.start()

    def follow(self, call_id: str, quality: Callable[[], LegQualities],
               dialog: Dialog | None = None) -> None:
        """Keep the live call's record current with `quality` (and `dialog`) until
        `save`; neither may block (`RtpStream.quality`, `SipChannel.dialog_state`)."""
        with self._changed:
            self._live[call_id] = quality
            if dialog is not None:
                self._dialogs[call_id] = dialog
            self._changed.notify()

    def update(self, record: CallRecord) -> None:
        """Save `record` as it is now, soon; never blocks on Redis."""
        snapshot = dataclasses.asdict(record)
        if snapshot["node"] is None:
            snapshot["node"], snapshot["run"] = self.node, self.run
        with self._changed:
            self._pending[record.id] = snapshot
            self._changed.notify()

    def save(self, record: CallRecord, wait_s: float = SAVE_WAIT_S) -> bool:
        """Save `record` as it is now and wait until it is stored in Redis or spooled;
        False if that took longer than `wait_s` (it is still saved, unless the process
        dies first)."""
        with self._changed:
            self._live.pop(record.id, None)
            self._dialogs.pop(record.id, None)
            self._latest.pop(record.id, None)
            saved = self._saved.setdefault(record.id, threading.Event())
            saved.clear()
        self.update(record)
        return saved.wait(wait_s)

    def stop(self, timeout: float = STOP_WAIT_S) -> None:
        """Store or spool what is pending (waiting up to `timeout`), then stop. A spool
        not yet replayed stays for the next start."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
        self._thread.join(timeout)
        with self._changed:
            unsaved = sum(1 for snapshot in self._pending.values() if snapshot is not None)
        if unsaved:
            logger.error("%d call records neither stored nor spooled at shutdown", unsaved)

    def _run(self) -> None:
        while (jobs := self._next()) is not None:
            try:
                if jobs:
                    self._write(jobs)
                else:
                    self._replay()
            except Exception:  # a bug must not stop every call's record for good
                logger.exception("Call record writer failed; carrying on")
                with self._changed:
                    self._changed.wait_for(lambda: self._stopping, self.retry_s)

    def _write(self, jobs: list[_Job]) -> None:
        if self._state is WriterState.SPOOLING:  # a refresh only shows a live call's sound
            jobs = [job for job in jobs if not job.refresh]  # and nobody reads it meanwhile
        snapshots = [(job.call_id, job.snapshot) for job in jobs if _changed(job)]
        stored = self._store(snapshots) if self._state is WriterState.STORING else 0
        left = snapshots[stored:]
        durable = snapshots if not left or self._spool(left) else snapshots[:stored]
        with self._changed:
            for call_id, _ in durable:
                if call_id not in self._pending and (saved := self._saved.pop(call_id, None)):
                    saved.set()

    def _store(self, snapshots: list[tuple[str, Snapshot]]) -> int:
        """Store `snapshots` in Redis in order, until Redis fails; how many it took."""
        for n, (_, snapshot) in enumerate(snapshots):
            try:
                self.store.save_snapshot(snapshot)
            except redis.RedisError as exc:
                self._set_state(WriterState.SPOOLING, f"Redis unreachable: {exc}")
                return n
        return len(snapshots)

    def _spool(self, snapshots: list[tuple[str, Snapshot]]) -> bool:
        """Append `snapshots` to the spool; if the disk fails too, keep them in memory
        (unless newer ones came) and try again in `retry_s`, or, when stopping, give
        them up."""
        try:
            self.spool.append([snapshot for _, snapshot in snapshots])
            return True
        except OSError as exc:
            with self._changed:
                if self._stopping:
                    logger.error("%d call records lost at shutdown: Redis unreachable and "
                                 "spool %s failed: %s", len(snapshots), self.spool.path, exc)
                    return False
                for call_id, snapshot in snapshots:
                    self._pending.setdefault(call_id, snapshot)
            logger.error("%d call records not spooled to %s, kept in memory: %s",
                         len(snapshots), self.spool.path, exc)
            with self._changed:
                self._changed.wait_for(lambda: self._stopping, self.retry_s)
            return False

    def _replay(self) -> None:
        """Replay the spool into Redis; once it is empty, store directly again."""
        try:
            stored = self.spool.replay(self.store)
        except (redis.RedisError, OSError) as exc:
            logger.debug("Call record spool not replayed yet: %s", exc)
            self._replay_at = self._clock() + self.retry_s
            return
        if self.spool.pending():  # a line the replay could not move: try again later
            self._replay_at = self._clock() + self.retry_s
            return
        self._set_state(WriterState.STORING, f"{stored} spooled records stored")

    def _set_state(self, state: WriterState, why: str) -> None:
        old, self._state = self._state, state
        if state is WriterState.SPOOLING:
            self._replay_at = self._clock() + self.retry_s
        if old is not state:
            log = logger.warning if state is WriterState.SPOOLING else logger.info
            log("Call records: %s -> %s (%s; spool %s)", old.value, state.value, why,
                self.spool.path)

    def _next(self) -> list[_Job] | None:
        """[] when the spool is due for a replay (first, so a steady stream of snapshots
        cannot hold it off), else the snapshots to save now; waits for either, and is
        None once stopping with nothing left."""
        with self._changed:
            while True:
                now = self._clock()
                spooling = self._state is WriterState.SPOOLING
                if spooling and now >= self._replay_at and not self._stopping:
                    return []
                if now >= self._refresh_at:
                    self._refresh_at = now + self.refresh_s
                    if not self._stopping:
                        for call_id in self._latest:
                            self._pending.setdefault(call_id, None)
                if jobs := self._take_pending():
                    return jobs
                if self._stopping:
                    return None
                waits = [self._refresh_at - now] if self._live else []
                if spooling:
                    waits.append(self._replay_at - now)
                self._changed.wait(min(waits) if waits else None)

    def _take_pending(self) -> list[_Job]:
        """Every pending snapshot as a job (with the lock held); a refresh only for a call
        still followed."""
        jobs = []
        for call_id, snapshot in self._pending.items():
            quality = self._live.get(call_id)
            dialog = self._dialogs.get(call_id)
            if snapshot is not None:
                if quality is not None:
                    self._latest[call_id] = snapshot
                jobs.append(_Job(call_id, snapshot, quality, refresh=False, dialog=dialog))
            elif (latest := self._latest.get(call_id)) is not None and quality is not None:
                jobs.append(_Job(call_id, latest, quality, refresh=True, dialog=dialog))
        self._pending.clear()
        return jobs


def _changed(job: _Job) -> bool:
    """Read a followed call's quality and dialogs into its snapshot; whether the job is
    to be saved (a refresh only when either changed)."""
    changed = job.quality is not None and _with_quality(job.snapshot, job.call_id, job.quality)
    if job.dialog is not None:
        try:
            dialog = job.dialog()
        except Exception:  # the record is saved all the same
            logger.exception("Call %s: reading its dialogs failed", job.call_id)
        else:
            changed = changed or job.snapshot.get("dialog") != dialog
            job.snapshot["dialog"] = dialog
    return changed or not job.refresh


def _with_quality(snapshot: Snapshot, call_id: str,
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


__all__ = ["QUALITY_REFRESH_S", "RETRY_S", "SAVE_WAIT_S", "RecordWriter", "WriterState"]
