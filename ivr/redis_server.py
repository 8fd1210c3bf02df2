"""Redis for the server: the configured URL, or a private embedded redis-server.

With ``redis.url`` unset, `hotline serve` starts ``redis-server`` listening only
on a unix socket under ``<data_dir>/redis/`` with append-only persistence, and
stops it on exit. The CLI finds it at the same socket; if nothing listens
there, the server is not running.
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ivr.settings import Settings

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
SOCKET_TIMEOUT_S = 2.0
FAIL_FAST_TIMEOUT_S = 0.5
"""For clients that have a fallback (the ticket spool): give up quickly, no retries."""
INSTALL_HINT = ("install it with `sudo apt-get install redis-server` (or `sudo make install`), "
                "or set redis.url in the configuration to an existing Redis")
_PR_SET_PDEATHSIG = 1
_MAX_UNIX_PATH = 107


class RedisUnavailable(Exception):
    """Redis cannot be reached or started; `str()` says why and what to do."""


def socket_path(settings: Settings) -> Path:
    return settings.data_dir / "redis" / "redis.sock"


def connect(settings: Settings, fail_fast: bool = False) -> redis.Redis:
    """A client for the configured Redis, or the embedded one's socket; checked with PING.

    With `fail_fast`, a command fails within half a second when Redis is away, instead
    of redis-py's default retries: for a caller waiting on a ticket, which has a spool."""
    timeout = FAIL_FAST_TIMEOUT_S if fail_fast else SOCKET_TIMEOUT_S
    options: dict[str, Any] = {"decode_responses": True, "socket_timeout": timeout,
                               "socket_connect_timeout": timeout}
    if fail_fast:
        options["retry"] = Retry(NoBackoff(), 0)
    if settings.redis.url:
        client = redis.Redis.from_url(settings.redis.url, **options)
        where = settings.redis.url
    else:
        path = socket_path(settings)
        client = redis.Redis(unix_socket_path=str(path), **options)
        where = str(path)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        if settings.redis.url:
            raise RedisUnavailable(f"cannot reach Redis at {where}: {exc}") from exc
        raise RedisUnavailable(
            f"the hotline server is not running (nothing answers at {where}); "
            "start it with `hotline serve`") from exc
    return client


class EmbeddedRedis:
    """A private redis-server for one `hotline serve`, with append-only persistence."""

    def __init__(self, settings: Settings, binary: str = "redis-server") -> None:
        self.directory = settings.data_dir / "redis"
        self.socket = socket_path(settings)
        self.binary = binary
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        executable = shutil.which(self.binary)
        if executable is None:
            raise RedisUnavailable(f"{self.binary} not found: {INSTALL_HINT}")
        if len(str(self.socket)) > _MAX_UNIX_PATH:
            raise RedisUnavailable(f"data_dir is too deep for a unix socket path: {self.socket}")
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._answers():
            raise RedisUnavailable(f"another hotline server already uses {self.socket}; "
                                   "stop it first or give this one another data_dir")
        self.socket.unlink(missing_ok=True)
        command = [executable, "--port", "0", "--unixsocket", str(self.socket),
                   "--unixsocketperm", "700", "--dir", str(self.directory),
                   "--appendonly", "yes", "--save", "", "--daemonize", "no",
                   "--logfile", str(self.directory / "redis.log")]
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         preexec_fn=_die_with_parent)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RedisUnavailable(f"redis-server did not start; see "
                                       f"{self.directory / 'redis.log'}")
            time.sleep(0.05)
        logger.info("Embedded Redis started (pid %d) at %s", self._process.pid, self.socket)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # redis flushes the AOF on SIGTERM
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()
        logger.info("Embedded Redis stopped (exit %s)", process.returncode)

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1.0)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()


def _die_with_parent() -> None:
    """In the child: have the kernel send SIGTERM if `hotline serve` dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
