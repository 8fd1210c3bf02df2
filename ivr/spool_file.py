"""Spool files: what Redis could not take yet (tickets, call records), one JSON line
each, kept on disk until it is back.

    <name>              appended to while Redis is unreachable; each append is fsynced
                        (and the directory, when the file is new) before it returns
    <name>.replaying    the file set aside by a replay; deleted only once every line in
                        it is in Redis, so a replay cut short is run again
    <name>.bad          lines that could not be read, as JSON records; never deleted

A crash in the middle of an append leaves an unfinished last line; the next append
starts a new line first, and the replay moves the unfinished one to the ``.bad`` file
rather than dropping it. Appends and set-asides hold an exclusive lock on the file, so
one spool is safe across threads and processes. What a line holds, and how it goes
into Redis, is the business of the spool's owner (`ivr.tickets.spool`,
`ivr.records.spool`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

logger = logging.getLogger(__name__)

REPLAYING_SUFFIX = ".replaying"
BAD_SUFFIX = ".bad"
FILE_MODE = 0o600
"""Spool files hold callers' numbers and words: readable by the server's user only."""

T = TypeVar("T")


@dataclass(frozen=True)
class BadLine:
    number: int
    text: str
    error: str


def parse_lines(data: bytes, parse: Callable[[bytes], T]) -> tuple[list[T], list[BadLine]]:
    """What `parse` makes of each line of a spool file's bytes, and the lines it refused
    (with ValueError)."""
    good: list[T] = []
    bad: list[BadLine] = []
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            good.append(parse(raw))
        except ValueError as exc:
            unfinished = number == len(lines)  # no newline after it: a write cut short
            bad.append(BadLine(number, raw.decode("utf-8", "replace"),
                               f"{exc}{' (unfinished last line)' if unfinished else ''}"))
    return good, bad


class SpoolFile:
    """An append-only spool file of `kind` lines ("ticket", "call record"), with the file
    a replay sets aside and the file of unreadable lines beside it."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.kind = kind
        self.replaying = path.with_name(path.name + REPLAYING_SUFFIX)
        self.bad = path.with_name(path.name + BAD_SUFFIX)

    def append(self, lines: Sequence[bytes]) -> None:
        """Add `lines` (each without a newline) durably: on disk, fsynced, when this
        returns; OSError otherwise."""
        data = b"".join(line + b"\n" for line in lines)
        _make_directory(self.path.parent)
        fd = self._open_locked()
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # end the line a crash cut short, keep ours whole
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if size == 0:
            _fsync_directory(self.path.parent)

    def pending(self) -> bool:
        """Whether any lines wait to be replayed."""
        return self.path.exists() or self.replaying.exists()

    def set_aside(self) -> bool:
        """Make sure a file waits at `replaying`: the one an earlier replay left, else
        the spool, renamed under its lock so no append lands in it afterwards. False
        when there is nothing to replay."""
        if self.replaying.exists():
            return True
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

    def read_aside(self) -> bytes:
        return self.replaying.read_bytes()

    def replayed(self, bad: Sequence[BadLine]) -> None:
        """Every line of the set-aside file is in Redis: keep the `bad` ones in the
        ``.bad`` file and delete it."""
        if bad:
            self._quarantine(bad)
        self.replaying.unlink()
        _fsync_directory(self.path.parent)

    def _quarantine(self, bad: Sequence[BadLine]) -> None:
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
            logger.error("Spool %s line %d is not a %s, kept in %s: %s",
                         self.path, line.number, self.kind, self.bad, line.error)

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


__all__ = ["BadLine", "SpoolFile", "parse_lines"]
