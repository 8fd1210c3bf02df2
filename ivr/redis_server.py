"""Redis for the server: the configured URL, a master found through Sentinel, or a
private embedded redis-server.

`connect` makes every client the server and the CLI use. With ``redis.sentinels``
it asks the sentinels for the master of ``redis.master_name`` and asks again on
every new connection, so after a failover the client reaches the promoted replica
(redis-py's `SentinelConnectionPool`). A command that fails while the master
changes is not retried here: its caller's own fallback (retry later, spool, route
without overrides) acts at once.

With neither ``redis.url`` nor ``redis.sentinels``, `hotline serve` starts
``redis-server`` listening only on a unix socket under ``<data_dir>/redis/`` with
append-only persistence, and stops it on exit. The CLI finds it at the same
socket; if nothing listens there, the server is not running.
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from ivr.settings import RedisSettings, Settings

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
SOCKET_TIMEOUT_S = 2.0
FAIL_FAST_TIMEOUT_S = 0.5
"""For clients that have a fallback (the ticket spool): give up quickly, no retries."""
INSTALL_HINT = ("install it with `sudo apt-get install redis-server` (or `sudo make install`), "
                "or set redis.url or redis.sentinels in the configuration to an existing "
                "Redis")
_PR_SET_PDEATHSIG = 1
_MAX_UNIX_PATH = 107


class RedisUnavailable(Exception):
    """Redis cannot be reached or started; `str()` says why and what to do."""


def socket_path(settings: Settings) -> Path:
    return settings.data_dir / "redis" / "redis.sock"


def connect(settings: Settings, fail_fast: bool = False, check: bool = True) -> redis.Redis:
    """A client for the configured Redis (through its sentinels, if given), or the
    embedded one's socket; checked with PING (`check`: else it connects at its first
    command, so a server can start while Redis is away).

    With `fail_fast`, a command fails within half a second when Redis is away, instead
    of redis-py's default retries: for a caller waiting on a ticket, which has a spool.
    Through Sentinel, a new connection first asks the sentinels in turn, each within
    the same timeout, so a sentinel that does not answer adds that much."""
    timeout = FAIL_FAST_TIMEOUT_S if fail_fast else SOCKET_TIMEOUT_S
    options: dict[str, Any] = {"decode_responses": True, "socket_timeout": timeout,
                               "socket_connect_timeout": timeout}
    if fail_fast:
        options["retry"] = Retry(NoBackoff(), 0)
    config = settings.redis
    if config.sentinels:
        client = _master_client(config, options)
    elif config.url:
        if config.password is not None:
            options["password"] = config.password.get_secret_value()
        client = redis.Redis.from_url(config.url, **options)
    else:
        client = redis.Redis(unix_socket_path=str(socket_path(settings)), **options)
    if not check:
        return client
    try:
        client.ping()
    except redis.RedisError as exc:
        why = _unreachable(settings, client, exc)
        client.close()
        raise RedisUnavailable(why) from exc
    return client


def describe(settings: Settings) -> str:
    """Which Redis `connect` reaches, in words, without passwords."""
    config = settings.redis
    if config.sentinels:
        return (f"master {config.master_name!r} through the sentinels at "
                f"{', '.join(config.sentinels)}")
    if config.url:
        return _without_password(config.url)
    return f"an embedded redis-server at {socket_path(settings)}"


class _SentinelMaster(redis.Redis):
    """The master's client; closing it also closes its connections to the sentinels."""

    def close(self) -> None:
        super().close()
        pool = self.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            pool.sentinel_manager.close()


def _master_client(config: RedisSettings, options: dict[str, Any]) -> redis.Redis:
    """A client of the master the sentinels name now, and again on each new connection."""
    asking = {key: options[key] for key in ("socket_timeout", "socket_connect_timeout")}
    if config.sentinel_password is not None:
        asking["password"] = config.sentinel_password.get_secret_value()
    if config.password is not None:
        options = {**options, "password": config.password.get_secret_value()}
    options.setdefault("retry", Retry(NoBackoff(), 0))  # as with redis.url: see above
    sentinel = Sentinel(config.sentinel_addresses, sentinel_kwargs=asking)
    assert config.master_name is not None  # the settings require it with sentinels
    client: redis.Redis = sentinel.master_for(config.master_name, redis_class=_SentinelMaster,
                                              **options)
    return client


def _unreachable(settings: Settings, client: redis.Redis, exc: redis.RedisError) -> str:
    """Why `connect` failed, for a person: where it looked and what answered."""
    config = settings.redis
    if config.sentinels:
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        where = f"cannot reach Redis {describe(settings)}"
        if isinstance(exc, MasterNotFoundError):
            return f"{where}: {_sentinels_say(pool.sentinel_manager, config)}"
        if pool.master_address is not None:  # they named it, and it did not answer
            host, port = pool.master_address
            return f"{where}: the master at {host}:{port}: {exc}"
        return f"{where}: {exc}"
    if config.url:
        return f"cannot reach Redis at {describe(settings)}: {exc}"
    return (f"the hotline server is not running (nothing answers at {socket_path(settings)}); "
            "start it with `hotline serve`")


def _sentinels_say(sentinel: Sentinel, config: RedisSettings) -> str:
    """Why the sentinels name no master: none can be asked, none knows the name, or
    the master they know is down."""
    name = config.master_name
    known: dict[str, dict[str, Any]] = {}
    errors = []
    for client in sentinel.sentinels:
        kwargs = client.get_connection_kwargs()
        try:
            masters = client.sentinel_masters()
            known.update(masters if isinstance(masters, dict) else {})
        except redis.RedisError as exc:
            errors.append(f"{kwargs['host']}:{kwargs['port']}: {str(exc).rstrip('.')}")
    if not known:
        return "asking the sentinels failed (" + "; ".join(errors) + ")"
    if name not in known:
        return (f"the sentinels monitor no master named {name!r} (they monitor "
                f"{', '.join(sorted(known))})")
    state = known[name]
    flags = state.get("flags", ())
    flags = ", ".join(sorted(flags)) if isinstance(flags, set | frozenset | list) else flags
    return (f"the sentinels see the master at {state['ip']}:{state['port']} as {flags}; "
            "a failover may be under way")


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


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
