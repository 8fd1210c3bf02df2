"""A Redis master, its replica and three sentinels on loopback, as real processes.

Each process runs in its own process group (a `GroupProcess`, so `kill -9` is one
signal) and its own directory, from a config written there. The sentinels' files name
each other and the replica (``sentinel myid``, ``known-sentinel``, ``known-replica``:
the lines Sentinel writes itself when it saves what it has learnt), so they agree at
once instead of after a few rounds of hello messages. `DOWN_AFTER_MS` and
`FAILOVER_TIMEOUT_MS` are short, so a killed master is replaced within seconds.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path

import redis

from tests.peers import START_TIMEOUT_S, GroupProcess, require

MASTER_NAME = "hotline-test"
DOWN_AFTER_MS = 1000
"""A master silent this long is subjectively down to a sentinel (production: 30 s)."""
FAILOVER_TIMEOUT_MS = 3000
"""Sentinel's failover-timeout: a stuck failover is retried after twice this long."""
QUORUM = 2
FAILOVER_WAIT_S = 20.0


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisNode(GroupProcess):
    """A redis-server on 127.0.0.1:`port`, replicating `replica_of` if given."""

    def __init__(self, workdir: Path, password: str | None = None,
                 replica_of: int | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_tcp_port()
        self.password = password
        lines = [f"port {self.port}", "bind 127.0.0.1", f"dir {workdir}", 'save ""',
                 "appendonly no", "repl-diskless-sync-delay 0"]  # a replica syncs at once
        if password is not None:
            lines += [f"requirepass {password}", f"masterauth {password}"]
        if replica_of is not None:
            lines.append(f"replicaof 127.0.0.1 {replica_of}")
        config = workdir / "redis.conf"
        config.write_text("\n".join(lines) + "\n")
        super().__init__([require("redis-server", "redis-server"), str(config)],
                         workdir / "redis.log")

    def client(self, timeout_s: float = 1.0) -> redis.Redis:
        """A plain client of this one server, for the test to look with."""
        return redis.Redis(port=self.port, password=self.password, decode_responses=True,
                           socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    def role(self) -> str | None:
        """"master" or "slave" as the server says, None if it does not answer."""
        with self.client() as client:
            try:
                return str(client.role()[0])
            except redis.RedisError:
                return None

    def start(self) -> None:
        super().start()
        _wait(lambda: self.role() is not None, self, f"redis-server on port {self.port}")


class SentinelNode(GroupProcess):
    """`redis-server FILE --sentinel` on 127.0.0.1:`port`, watching the master."""

    def __init__(self, workdir: Path, port: int, myid: str, master: RedisNode,
                 replica: RedisNode, peers: list[tuple[int, str]],
                 password: str | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.myid, self.password = port, myid, password
        name = MASTER_NAME
        lines = [f"port {port}", "bind 127.0.0.1", f"dir {workdir}", f"sentinel myid {myid}",
                 f"sentinel monitor {name} 127.0.0.1 {master.port} {QUORUM}",
                 f"sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}",
                 f"sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}",
                 f"sentinel known-replica {name} 127.0.0.1 {replica.port}"]
        lines += [f"sentinel known-sentinel {name} 127.0.0.1 {p} {i}" for p, i in peers]
        if master.password is not None:
            lines.append(f"sentinel auth-pass {name} {master.password}")
        if password is not None:  # its own, and the one it gives its peers
            lines += [f"requirepass {password}", f"sentinel sentinel-pass {password}"]
        config = workdir / "sentinel.conf"  # Sentinel rewrites it, so it must be its own
        config.write_text("\n".join(lines) + "\n")
        super().__init__([require("redis-server", "redis-server"), str(config), "--sentinel"],
                         workdir / "sentinel.log")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, decode_responses=True,
                           socket_timeout=1.0, socket_connect_timeout=1.0)

    def master_state(self) -> dict[str, object] | None:
        """What this sentinel knows of the master, None if it does not answer."""
        with self.client() as client:
            try:
                return dict(client.sentinel_master(MASTER_NAME))
            except redis.RedisError:
                return None

    def start(self) -> None:
        super().start()
        _wait(lambda: self.master_state() is not None, self, f"sentinel on port {self.port}")


class SentinelRig:
    """One master, one replica, three sentinels; `start` returns once all agree."""

    def __init__(self, workdir: Path, password: str | None = None,
                 sentinel_password: str | None = None) -> None:
        self.master = RedisNode(workdir / "master", password)
        self.replica = RedisNode(workdir / "replica", password, replica_of=self.master.port)
        ports = [free_tcp_port() for _ in range(3)]
        ids = [secrets.token_hex(20) for _ in ports]
        self.sentinels = [
            SentinelNode(workdir / f"sentinel-{i}", port, ids[i], self.master, self.replica,
                         [(p, n) for p, n in zip(ports, ids, strict=True) if p != port],
                         sentinel_password)
            for i, port in enumerate(ports)]

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.sentinels]

    @property
    def nodes(self) -> list[GroupProcess]:
        return [self.master, self.replica, *self.sentinels]

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            _wait(self._agreed, self.replica, "the sentinels to agree and the replica to sync")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Sentinels first, so none starts a failover, then the replicas, so no master
        waits for one at shutdown."""
        for sentinel in self.sentinels:
            sentinel.stop()
        servers = [self.master, self.replica]
        for server in sorted(servers, key=lambda s: s.running and s.role() == "master"):
            server.stop()

    def master_port(self) -> int | None:
        """The master's port if every sentinel that answers names the same master, up."""
        ports = set()
        for sentinel in self.sentinels:
            state = sentinel.master_state()
            if state is None:
                continue
            if state.get("is_sdown") or state.get("is_odown"):
                return None
            ports.add(int(str(state["port"])))
        return ports.pop() if len(ports) == 1 else None

    def _agreed(self) -> bool:
        for sentinel in self.sentinels:
            state = sentinel.master_state()
            if state is None or state["num-other-sentinels"] != 2 or state["num-slaves"] != 1:
                return False
        with self.replica.client() as client:
            return client.info("replication").get("master_link_status") == "up"


def _wait(ready: Callable[[], bool], process: GroupProcess, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if not process.running or time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}: "
                               f"{process.log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.02)
