"""The rig of bench/redis_failover.py and bench/rolling_restart.py: the node-failure rig
(bench/cluster.py: a sipp caller through carrier A and the shipped front door to two
`hotline serve` nodes, key 1 forwarding to a sipp phone behind carrier B) on whatever
Redis the caller gives, with callers of their own hold times, and what an operator does
to a node: drain it, kill it, start it again.

`Cluster` starts the carriers, the front door and the nodes (Redis is the caller's, so it
can be a Sentinel rig), waits until all are up, and stops them in reverse. `Callers`
places the calls in the background while the bench does its operation. `caller_calls`
(bench/node_failure_measures.py) reads what the callers saw.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import yaml

from bench.cluster import (
    CALLER_SCENARIO,
    CARRIER_A_HOST,
    CARRIER_B_HOST,
    FRONTDOOR_CFG,
    FRONTDOOR_HOST,
    NODES,
    Load,
    Serve,
    SippPhone,
    _frontdoor_ready,
    _node_config,
    _nodes_ready,
    _wait,
)
from ivr.nodes import live_nodes
from ivr.records import SPOOL_PATH, CallRecord, CallStore, RecordSpool
from ivr.redis_server import connect
from ivr.settings import load_settings
from tests.peers import Carrier, FrontDoor, free_udp_port, require, sip_ping, started

DRAIN_TIMEOUT_S = 60.0
"""The nodes' `drain_timeout_s`: longer than any caller holds, so a drain hangs up nobody."""
RESTART_TIMEOUT_S = 60.0
"""How long a restarted node may take to be listed and answer OPTIONS."""


@dataclass(frozen=True)
class Caller:
    number: str
    hold_s: float
    presses: bool
    """Presses 1 half a second in (forwarded to the staff phone); else stays in the menu."""


class Cluster:
    """Two `hotline serve` nodes behind the front door, on the Redis of `redis_config`
    (the `redis` section of hotline.yaml), with the carriers and the staff phone."""

    def __init__(self, work: Path, redis_config: dict[str, Any], callers: int,
                 rate: float) -> None:
        self.work, self.redis_config = work, redis_config
        self.load = Load(callers, rate, 10.0, 0.0, 3, 5.0)  # what _node_config reads
        self.stack = contextlib.ExitStack()
        self.nodes: dict[str, Serve] = {}
        self.configs: dict[str, Path] = {}
        self.listen: dict[str, dict[str, int]] = {}

    def __enter__(self) -> Cluster:
        try:
            self._start()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def _start(self) -> None:
        work, stack = self.work, self.stack
        self.phone = started(stack, SippPhone(work / "phone", trace=True))
        port = free_udp_port()
        carrier_a = started(stack, Carrier(work / "carrier-a", host=CARRIER_A_HOST,
                                            hotline=(FRONTDOOR_HOST, port)))
        carrier_b = started(stack, Carrier(work / "carrier-b", host=CARRIER_B_HOST,
                                            staff=self.phone.address))
        self.target = carrier_a.address
        self.listen = {name: {"carrier-a": free_udp_port(), "carrier-b": free_udp_port()}
                       for name in NODES}
        addresses = [f"127.0.0.1:{self.listen[n]['carrier-a']}" for n in NODES]
        frontdoor = started(stack, FrontDoor(work / "frontdoor", addresses, [carrier_a.address],
                                              host=FRONTDOOR_HOST, port=port, cfg=FRONTDOOR_CFG))
        self.frontdoor_log = frontdoor.log
        people = 60
        for name in NODES:
            config = _node_config(work / name, name, self.load, "redis://unused", self.listen[name],
                                  people, carrier_a.address, carrier_b.address)
            data = yaml.safe_load(config.read_text())
            data["redis"], data["drain_timeout_s"] = self.redis_config, DRAIN_TIMEOUT_S
            config.write_text(yaml.safe_dump(data))
            self.configs[name] = config
            self.nodes[name] = started(stack, Serve(config))
        self.client = connect(load_settings(self.configs[NODES[0]]))
        stack.callback(self.client.close)
        _wait(lambda: _nodes_ready(self.nodes, self.listen, self.client),
              "the nodes up, their trunks UP")
        _wait(lambda: _frontdoor_ready(frontdoor.log, addresses), "the front door's nodes up")

    def start(self, name: str) -> None:
        """Start node `name` again (after a drain or a kill)."""
        self.nodes[name].start()

    def listed(self, name: str) -> bool:
        """Whether `hotline nodes status` lists `name`'s running process and the node
        answers OPTIONS."""
        process = self.nodes[name].process
        try:
            listed = process is not None and any(
                n.name == name and n.pid == process.pid and not n.draining
                for n in live_nodes(self.client, "hotline"))
        except redis.RedisError:
            return False
        return listed and sip_ping(self.listen[name]["carrier-a"])

    def drain(self, name: str) -> None:
        """`hotline nodes drain NAME --wait`, as an operator runs it."""
        subprocess.run([*self.nodes[name].command[:3], "nodes", "drain", name, "--wait",
                        "--by", "bench", "--config", str(self.configs[name])],
                       cwd=self.nodes[name].log.parent, check=True, env=self._env(),
                       stdout=subprocess.DEVNULL)
        self.nodes[name].process.wait(30)  # type: ignore[union-attr]
        self.nodes[name].process = None

    def wait_listed(self, name: str) -> float:
        """Wait until `name` is listed and answers OPTIONS; the Unix time it was."""
        _wait(lambda: self.listed(name), f"{name} listed again", RESTART_TIMEOUT_S)
        return time.time()

    def records(self, limit: int) -> list[CallRecord]:
        return CallStore(self.client).recent(limit)

    def spools_empty(self) -> bool:
        return not any(RecordSpool(self.work / n / "var" / SPOOL_PATH).pending() for n in NODES)

    def settle(self, limit: int, timeout_s: float) -> float:
        """Wait (at most `timeout_s`) until the spools are empty and every record has an
        end; the seconds it took."""
        started = time.monotonic()

        def settled() -> bool:
            try:
                return self.spools_empty() and all(r.ended_at is not None
                                                   for r in self.records(limit))
            except redis.RedisError:
                return False

        _wait(settled, "the spools replayed and the records closed", timeout_s, required=False)
        return time.monotonic() - started

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


class Callers:
    """sipp placing `callers` at `rate` per second through `target`, in the background."""

    def __init__(self, target: str, workdir: Path, callers: list[Caller], rate: float) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.count, self.rate = workdir, len(callers), rate
        self.limit_s = self.count / rate + max(c.hold_s for c in callers) + 60
        inject = workdir / "callers.csv"
        inject.write_text("SEQUENTIAL\n" + "".join(
            f"{c.number};{'Signal=1' if c.presses else ''};{c.hold_s * 1000:.0f};\n"
            for c in callers))
        self.command = [
            require("sipp", "sip-tester"), target, "-sf", str(CALLER_SCENARIO), "-inf",
            str(inject), "-s", "1000", "-r", f"{rate:g}", "-m", str(self.count),
            "-l", str(self.count), "-i", "127.0.0.1", "-p", str(free_udp_port()),
            "-mp", str(free_udp_port()), "-nostdin", "-trace_msg", "-timeout",
            f"{self.limit_s:.0f}s"]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Callers:
        self.started_at = time.time()
        self.process = subprocess.Popen(self.command, cwd=self.workdir,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        if self.process.poll() is None and exc[0] is not None:
            self.process.kill()
        try:
            self.process.wait(self.limit_s + 10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        self.ended_at = time.time()

    def at(self, seconds: float) -> None:
        """Sleep until `seconds` after the callers started."""
        time.sleep(max(0.0, self.started_at + seconds - time.time()))


def callers(count: int, holds: Callable[[int], float], press_every: int) -> list[Caller]:
    """`count` callers, numbered as bench/cluster.py numbers them, holding `holds(i)` s;
    one in `press_every` (0: none) presses 1."""
    return [Caller(f"139{i + 1:08d}", holds(i), press_every > 0 and i % press_every == 0)
            for i in range(count)]


def spread(low_s: float, high_s: float, steps: int = 6) -> Callable[[int], float]:
    """Hold times from `low_s` to `high_s` in `steps` even steps, in turn."""
    return lambda i: low_s + (high_s - low_s) * (i % steps) / (steps - 1)
