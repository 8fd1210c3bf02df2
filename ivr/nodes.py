"""Which hotline nodes are alive: a lease per node in Redis, renewed while it runs.

Keys: ``{p}:lease:{node}`` (the holder's token, expiring), ``{p}:lease-info:{node}``
(what the node says about itself, expiring with it), ``{p}:lease-last`` (a hash: what each
node last said, kept after its lease lapses, so others can still reach a node that looks
dead), ``{p}:leases`` (the names, by last renewal) and ``{p}:drain:{node}`` (an operator
asked the node to drain: it sees the request at its next renewal, and a node starting under
that name clears it). The trunk monitor's own heartbeat is ``{p}:node:{node}``.

The token is the node's *run*: a process restarted under the same name is a new run, and
the calls an earlier run left open (`ivr.records`, ``{p}:live:{node}``) are known as
cut off by its end (`ivr.calls.takeover`).

Each `hotline serve` claims its node name once, with a token of its own, and renews the
lease every `RENEW_S`; the lease expires `LEASE_S` after the last renewal, so a node that
dies or loses Redis drops out of `hotline nodes status` within a few seconds. The lease
carries what the other nodes and the operators need: the node's SIP and HTTP addresses,
its live calls, whether it drains, when it started. A second process claiming a name whose
lease is held by a live process is refused (`NodeNameTaken`), so two nodes can never share
a name and each other's records.

A renewal that finds the lease gone (expired while Redis was away, or taken) claims it
again if it is free; one that finds another token logs an error and keeps trying: the
operator has started two processes with one name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from trunks.config import split_hostport

logger = logging.getLogger(__name__)

LEASE_S = 6.0
"""A node's lease lasts this long after its last renewal."""
RENEW_S = 2.0
"""How often a node renews its lease: three tries before it lapses."""
REDIS_TIMEOUT_S = 1.0
"""A renewal that Redis does not answer within this long counts as missed."""
UNSPECIFIED = frozenset({"0.0.0.0", "::", ""})
"""Listen addresses meaning every interface: the node is reached by its host name."""

_RENEW = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[4] - 86400)
redis.call('HSET', KEYS[4], ARGV[5], ARGV[2])
return 1
"""
"""Renew (or claim, if free) the lease whose token is ARGV[1], with its info ARGV[2]."""


class NodeNameTaken(RuntimeError):
    """Another live process holds this node's lease."""


@dataclass
class NodeInfo:
    """What a node's lease says about it."""

    name: str
    sip: dict[str, str] = field(default_factory=dict)
    """Trunk name -> the SIP address it listens on."""
    http: str | None = None
    live_calls: int = 0
    draining: bool = False
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_at: float = 0.0
    renewed_at: float = 0.0


class NodeLease:
    """This process's lease on its node name, renewed by a thread of its own."""

    def __init__(self, client: redis.Redis, prefix: str, info: NodeInfo,
                 live_calls: Callable[[], int] = lambda: 0,
                 wallclock: Callable[[], float] = time.time,
                 lease_s: float = LEASE_S, renew_s: float = RENEW_S,
                 on_drain: Callable[[], None] | None = None) -> None:
        """`on_drain`: called (once, from the lease's thread) when an operator asks this
        node to drain (`request_drain`)."""
        self.client, self.prefix, self.info = client, prefix, info
        self.live_calls = live_calls
        self.on_drain = on_drain
        self.lease_s, self.renew_s = lease_s, renew_s
        self.held = False
        """Whether the latest renewal succeeded."""
        self._wallclock = wallclock
        self.run = secrets.token_hex(8)
        """This process's token on the lease: the node's run."""
        self._renew = client.register_script(_RENEW)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-lease", daemon=True)

    def claim(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Claim the node's name; raise `NodeNameTaken` if a live process holds it. A
        lease left by a process that died (a restart after a crash) lapses within
        `lease_s`, so a held lease is tried again until then. Redis being unreachable is
        not an error: the renewals claim it later."""
        self.info.started_at = self._wallclock()
        for attempt in range(int(self.lease_s / self.renew_s) + 2):
            try:
                claimed = self._write()
            except redis.RedisError as exc:
                logger.warning("Node %s: lease not claimed yet, Redis unreachable: %s",
                               self.info.name, exc)
                return
            if claimed:
                self.client.delete(drain_key(self.prefix, self.info.name))  # an old request
                return
            if attempt == 0:
                logger.info("Node %s: the name's lease is held; waiting for it to lapse",
                            self.info.name)
            sleep(self.renew_s)
        if not claimed:
            holder = node_info(self.client, self.prefix, self.info.name)
            where = f" (pid {holder.pid} on {holder.host})" if holder else ""
            raise NodeNameTaken(f"node name {self.info.name!r} is held by another live "
                                f"process{where}; give each node its own `node` name")

    def start(self) -> None:
        self._thread.start()

    def publish(self) -> None:
        """Renew now, so a change (draining) shows at once rather than at the next renewal."""
        with contextlib.suppress(redis.RedisError):  # else the next renewal tries again
            self._write()

    def stop(self) -> None:
        """Stop renewing and give the lease up, so the node leaves the list at once."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.renew_s + REDIS_TIMEOUT_S)
        try:
            if self.client.get(self._key("lease")) == self.run:
                self.client.delete(self._key("lease"), info_key(self.prefix, self.info.name))
                self.client.zrem(f"{self.prefix}:leases", self.info.name)
        except redis.RedisError:
            pass  # it lapses by itself

    def _run(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                held = self._write()
            except redis.RedisError as exc:
                if self.held:
                    logger.warning("Node %s: lease not renewed, Redis unreachable: %s",
                                   self.info.name, exc)
                self.held = False
                continue
            if not held and self.held is not False:
                logger.error("Node %s: another process holds this node's name; two "
                             "processes are configured as one node", self.info.name)
            self.held = held
            self._check_drain()

    def _check_drain(self) -> None:
        if self.info.draining or self.on_drain is None:
            return
        try:
            asked = self.client.get(drain_key(self.prefix, self.info.name))
        except redis.RedisError:
            return
        if asked is not None:
            logger.info("Node %s: asked to drain (%s)", self.info.name, asked)
            self.info.draining = True
            self.on_drain()

    def _write(self) -> bool:
        info = self.info
        info.live_calls, info.renewed_at = self.live_calls(), self._wallclock()
        ttl_ms = int(self.lease_s * 1000)
        keys = [self._key("lease"), info_key(self.prefix, self.info.name), f"{self.prefix}:leases",
                last_key(self.prefix)]
        done = self._renew(keys=keys,
                           args=[self.run, json.dumps(asdict(info)), ttl_ms,
                                 info.renewed_at, info.name])
        self.held = bool(done)
        return self.held

    def _key(self, part: str) -> str:
        return f"{self.prefix}:{part}:{self.info.name}"


def http_base(info: NodeInfo) -> str | None:
    """Where other nodes reach the node's HTTP server (``http://host:port``), if it has one."""
    if info.http is None:
        return None
    host, port = split_hostport(info.http)
    host = info.host if host in UNSPECIFIED else host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def lease_run(client: redis.Redis, prefix: str, name: str) -> str | None:
    """The run that holds node `name`'s lease, or None if it lapsed."""
    run = client.get(f"{prefix}:lease:{name}")
    return None if run is None else str(run)


def last_key(prefix: str) -> str:
    return f"{prefix}:lease-last"


def drain_key(prefix: str, name: str) -> str:
    return f"{prefix}:drain:{name}"


def info_key(prefix: str, name: str) -> str:
    return f"{prefix}:lease-info:{name}"


def request_drain(client: redis.Redis, prefix: str, name: str, by: str) -> None:
    """Ask node `name` to drain; it sees the request within `RENEW_S`."""
    client.set(drain_key(prefix, name), f"by {by} at {time.strftime('%H:%M:%S')}", ex=86400)


def node_info(client: redis.Redis, prefix: str, name: str) -> NodeInfo | None:
    """What the live node `name` last said about itself, or None if its lease lapsed."""
    data = client.get(info_key(prefix, name))
    return None if data is None else NodeInfo(**json.loads(data))


def last_info(client: redis.Redis, prefix: str, name: str) -> NodeInfo | None:
    """What node `name` last said about itself, even if its lease has lapsed."""
    data = client.hget(last_key(prefix), name)
    return None if data is None else NodeInfo(**json.loads(data))


def lapsed_nodes(client: redis.Redis, prefix: str) -> list[str]:
    """The nodes that held a lease within the last day and hold none now."""
    names = sorted(str(name) for name in client.zrange(f"{prefix}:leases", 0, -1))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.exists(f"{prefix}:lease:{name}")
    return [name for name, held in zip(names, pipe.execute(), strict=True) if not held]


def live_nodes(client: redis.Redis, prefix: str) -> list[NodeInfo]:
    """Every node whose lease holds, by name."""
    names = sorted(str(name) for name in client.zrange(f"{prefix}:leases", 0, -1))
    if not names:
        return []
    found = client.mget([info_key(prefix, name) for name in names])
    return [NodeInfo(**json.loads(data)) for data in found if data is not None]


def as_rows(nodes: list[NodeInfo], now: float) -> list[dict[str, Any]]:
    """The nodes as JSON-ready rows, with how long ago each renewed."""
    return [{**asdict(n), "renewed_s_ago": round(max(0.0, now - n.renewed_at), 1)}
            for n in nodes]
