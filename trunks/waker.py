"""Waking a selector loop from other threads."""

from __future__ import annotations

import contextlib
import socket


class Waker:
    """A socket pair: a loop's selector watches `reader`; any thread may call `wake`."""

    def __init__(self) -> None:
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)

    def wake(self) -> None:
        # BlockingIOError: wake-ups are already pending. Other OSError: closed, loop stopped.
        with contextlib.suppress(OSError):
            self._writer.send(b"x")

    def drain(self) -> None:
        """Read the pending wake-ups; the loop calls this when `reader` is ready."""
        with contextlib.suppress(BlockingIOError):
            while self.reader.recv(4096):
                pass

    def close(self) -> None:
        self.reader.close()
        self._writer.close()
