"""Waking a selector loop from other threads."""

from __future__ import annotations

import contextlib
import socket
import threading


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


def stop_loop(stopping: threading.Event, waker: Waker, thread: threading.Thread,
              timeout: float) -> bool:
    """Tell a loop to stop, wake it and wait up to `timeout` for its thread; False if it
    had already been told, so the caller's own clean-up runs once."""
    if stopping.is_set():
        return False
    stopping.set()
    waker.wake()
    if thread.is_alive():
        thread.join(timeout)
    return True
