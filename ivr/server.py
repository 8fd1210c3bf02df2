"""`hotline serve`: the long-running process that ties the packages together."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from ivr.redis_server import EmbeddedRedis, connect
from ivr.settings import Settings
from trunks.monitor import TrunkMonitor
from trunks.store import TrunkStore

logger = logging.getLogger(__name__)


class Server:
    """Owns the embedded Redis (if any) and the trunk monitor, in start-up order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopped = threading.Event()
        self.monitor: TrunkMonitor | None = None
        self._embedded = None if settings.redis.url else EmbeddedRedis(settings)

    def start(self) -> None:
        """Start everything, or nothing: a failure stops what had started and re-raises."""
        try:
            if self._embedded is not None:
                self._embedded.start()
            store = TrunkStore(connect(self.settings), self.settings.redis.prefix)
            self.monitor = TrunkMonitor(self.settings.trunks, store, self.settings.node)
            self.monitor.start()
        except BaseException:
            self.stop()
            raise
        logger.info("Hotline server running as node %s", self.settings.node)

    def stop(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
            self.monitor = None
        if self._embedded is not None:
            self._embedded.stop()
        self.stopped.set()

    def run_until_signalled(self) -> None:
        """Serve until SIGINT or SIGTERM, then shut down cleanly."""
        requested = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("Received %s, shutting down", signal.Signals(signum).name)
            requested.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            requested.wait()
        finally:
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
