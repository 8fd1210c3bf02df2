"""The local spool: tickets that Redis could not take, one JSON line each.

    spool.jsonl             appended while Redis is unreachable; each line is fsynced
                            (and the directory, when the file is new) before append() returns
    spool.jsonl.replaying   the spool set aside by a replay; deleted only once every
                            ticket in it is in Redis, so a replay cut short is run again
    spool.jsonl.bad         lines that could not be read, as JSON records; never deleted

Replaying twice cannot duplicate a ticket: `TicketStore.add` recognises a
ticket it already holds by its uid. A crash in the middle of an append leaves
an unfinished last line; the next append starts a new line first, and replay
moves the unfinished one to the ``.bad`` file rather than dropping it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ivr.tickets.model import Ticket
from ivr.tickets.store import AddOutcome, TicketStore

logger = logging.getLogger(__name__)

REPLAYING_SUFFIX = ".replaying"
BAD_SUFFIX = ".bad"
FILE_MODE = 0o600
"""Spool files hold callers' numbers and words: readable by the server's user only."""
MAX_REPLAY_ROUNDS = 3
"""Spool files taken in one `replay()`: the set-aside one, then the fresh one, then a spare."""


@dataclass(frozen=True)
class BadLine:
    number: int
    text: str
    error: str


@dataclass(frozen=True)
class ReplayReport:
    stored: int = 0
    duplicates: int = 0
    """Tickets Redis already had: an earlier replay stored them before it was cut short."""
    bad: int = 0


def parse_spool(data: bytes) -> tuple[list[Ticket], list[BadLine]]:
    """The tickets in a spool file's bytes, and the lines that are not tickets."""
    tickets: list[Ticket] = []
    bad: list[BadLine] = []
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            tickets.append(Ticket.from_json(raw))
        except ValueError as exc:
            unfinished = number == len(lines)  # no newline after it: a write cut short
            bad.append(BadLine(number, raw.decode("utf-8", "replace"),
                               f"{exc}{' (unfinished last line)' if unfinished else ''}"))
    return tickets, bad


class Spool:
    """An append-only file of tickets waiting for Redis; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.replaying = path.with_name(path.name + REPLAYING_SUFFIX)
        self.bad = path.with_name(path.name + BAD_SUFFIX)
        self._replay_lock = threading.Lock()

    def append(self, ticket: Ticket) -> None:
        """Add `ticket` durably: on disk, fsynced, when this returns; OSError otherwise."""
        line = ticket.to_json().encode() + b"\n"
        _make_directory(self.path.parent)
        fd = self._open_locked()
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # end the line a crash cut short, keep ours whole
            _write_all(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if size == 0:
            _fsync_directory(self.path.parent)
        logger.debug("Ticket %s spooled to %s", ticket.id, self.path)

    def pending(self) -> bool:
        """Whether any tickets wait to be replayed."""
        return self.path.exists() or self.replaying.exists()

    def replay(self, store: TicketStore) -> ReplayReport:
        """Move every spooled ticket into Redis; redis.RedisError leaves the rest for later."""
        total = ReplayReport()
        with self._replay_lock:
            for _ in range(MAX_REPLAY_ROUNDS):
                if not self.replaying.exists() and not self._set_aside():
                    break
                report = self._replay_file(store)
                total = ReplayReport(total.stored + report.stored,
                                     total.duplicates + report.duplicates, total.bad + report.bad)
        return total

    def _set_aside(self) -> bool:
        """Rename the spool for replay, under its lock so no append lands in it afterwards."""
        if not self.path.exists():
            return False
        fd = self._open_locked(create=False)
        if fd < 0:
            return False
        try:
            os.replace(self.path, self.replaying)
        finally:
            os.close(fd)
        _fsync_directory(self.path.parent)
        return True

    def _replay_file(self, store: TicketStore) -> ReplayReport:
        tickets, bad = parse_spool(self.replaying.read_bytes())
        stored = duplicates = 0
        for ticket in tickets:
            outcome, saved = store.add(ticket, heard=True)
            if outcome == AddOutcome.DUPLICATE:
                duplicates += 1
                continue
            stored += 1
            if saved.id != ticket.id:
                logger.warning("Ticket %s from the spool is stored as %s: its id was taken",
                               ticket.id, saved.id)
        if bad:
            self._quarantine(bad)
        self.replaying.unlink()
        _fsync_directory(self.path.parent)
        logger.info("Spool %s replayed: %d tickets stored, %d already in Redis, %d unreadable",
                    self.path, stored, duplicates, len(bad))
        return ReplayReport(stored, duplicates, len(bad))

    def _quarantine(self, bad: list[BadLine]) -> None:
        records = b"".join(json.dumps({"spool": str(self.replaying), "line": b.number,
                                       "error": b.error, "text": b.text}).encode() + b"\n"
                           for b in bad)
        fd = os.open(self.bad, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        try:
            _write_all(fd, records)
            os.fsync(fd)
        finally:
            os.close(fd)
        for line in bad:
            logger.error("Spool %s line %d is not a ticket, kept in %s: %s",
                         self.path, line.number, self.bad, line.error)

    def _open_locked(self, create: bool = True) -> int:
        """A descriptor of the spool holding its exclusive lock; -1 if it is gone and
        `create` is false. Retries if a replay renamed the file while we waited."""
        flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
        while True:
            try:
                fd = os.open(self.path, flags, FILE_MODE)
            except FileNotFoundError:
                if create:
                    raise
                return -1
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)


def _make_directory(directory: Path) -> None:
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        _fsync_directory(directory.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_directory(directory: Path) -> None:
    """Make a file's creation, rename or removal in `directory` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
