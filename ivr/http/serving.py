"""Serving the HTTP app under waitress in a thread of `hotline serve`, and stopping it.

Waitress has no way to stop a server from another thread (its maintainers say so,
Pylons/waitress#343, #372): closing its sockets from outside pulls them from under
the select() of its loop. So the loop runs here one poll at a time, at most
`POLL_S` each, and checks a stop flag between polls; once the flag is set, the
loop's own thread closes the listening socket and every connection (idle keep-alive
ones included), and waitress's worker threads are shut down last.
"""

from __future__ import annotations

import logging
import threading

from flask import Flask
from waitress.server import TcpWSGIServer, create_server
from waitress.wasyncore import close_all, loop

logger = logging.getLogger(__name__)

POLL_S = 0.2
"""The longest one poll of the loop waits; a stop takes effect within this."""
STOP_S = 5.0
"""How long `stop` waits for the loop and the requests in progress."""


class HttpServer:
    """The app on `host`:`port` with `threads` workers, in a thread named "http"."""

    def __init__(self, app: Flask, host: str, port: int, threads: int) -> None:
        server = create_server(app, host=host, port=port, threads=threads, ident="hotline")
        assert isinstance(server, TcpWSGIServer)  # one address: not a MultiSocketServer
        self._server = server
        self._map = server._map  # type: ignore[attr-defined]  # waitress's socket map
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, close every connection, and wait for the loop and workers."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(STOP_S)
            if self._thread.is_alive():
                logger.warning("HTTP server did not stop within %.0f s", STOP_S)
        else:  # never started, or already ended: its sockets are closed here
            close_all(self._map, ignore_all=True)
        self._server.task_dispatcher.shutdown(timeout=int(STOP_S))

    def _run(self) -> None:
        try:
            while not self._stopping.is_set() and self._map:
                loop(timeout=POLL_S, map=self._map, count=1)
        except Exception:  # the API is gone, but calls go on: say so loudly
            logger.exception("HTTP server loop failed; the HTTP API is down")
        finally:
            close_all(self._map, ignore_all=True)


__all__ = ["HttpServer"]
