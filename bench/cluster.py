"""Two nodes behind the shipped front door, under a steady load of callers, one node
killed mid-run: the rigs of bench/node_failure.py.

Both rigs have the same callers and front door: sipp calls through a Kamailio carrier
(carrier A) to the front door (config/kamailio/frontdoor.cfg, included by
bench/kamailio/frontdoor_watched.cfg, which logs when the dispatcher takes a node out
or back), which sends each call to one of two nodes. Behind it:

- `run_hotline`: two `hotline serve` nodes on one redis-server. A caller who presses 1
  is forwarded to the on-call staff through carrier B, whose sipp phone answers at once
  and holds; the others stay in the menu. Call-backs go through carrier B to the same
  phone, which stands for the callers' own phones too;
- `run_dispatcher`: two plain sipp UAS "nodes" that answer, hold and answer OPTIONS and
  INFO (`-aa`); no application, no Redis, nothing to recover with.

Each returns what it `Observed`: where the sipp traces and the front door's log are, when
the node was killed, and (hotline) the call and call-back records in Redis.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from failover.callbacks import CallbackRecord, Callbacks  # noqa: E402
from failover.config import CallbackSettings  # noqa: E402
from ivr.records import CallRecord, CallStore  # noqa: E402
from tests.peers import (  # noqa: E402
    Carrier,
    FrontDoor,
    GroupProcess,
    RedisServer,
    free_udp_port,
    require,
    sip_ping,
    staff_roster,
    started,
    wait_udp_bound,
)
from trunks.health import TrunkState  # noqa: E402
from trunks.store import TrunkStore  # noqa: E402

FRONTDOOR_CFG = ROOT / "bench" / "kamailio" / "frontdoor_watched.cfg"
CALLER_SCENARIO = ROOT / "bench" / "sipp" / "uac_front_door.xml"
PHONE_SCENARIO = ROOT / "bench" / "sipp" / "uas_answer_wait.xml"
CARRIER_A_HOST, FRONTDOOR_HOST, CARRIER_B_HOST = "127.0.0.3", "127.0.0.4", "127.0.0.5"
NODES = ("node-a", "node-b")
"""The hotline's node names; the first is the one killed."""
MEDIA_PORTS = {"node-a": "20000-24999", "node-b": "25000-29999"}
READY_TIMEOUT_S = 90.0
"""How long the nodes (prompts synthesized, trunks probed) and the front door may take."""
SETTLE_TIMEOUT_S = 60.0
"""After the last caller: how long records and call-backs may take to be final."""
FINAL_CALLBACK = frozenset({"answered", "failed", "ticket"})
FLOW = """\
start: menu
voice: {engine: espeak}
nodes:
  menu: {type: menu, text: Press 1 to talk to the engineer on call., options: {"1": connect},
         timeout_s: 60, retries: 1, failure: bye}
  connect: {type: forward, ring_s: 10, failure: wait}
  wait: {type: menu, text: Nobody can take your call now., options: {"1": connect},
         timeout_s: 60, retries: 1, failure: bye}
  again: {type: say, text: This is the hotline calling you back., next: bye}
  bye: {type: hangup, text: Goodbye.}
"""
"""Key 1 forwards; a forward nobody takes waits in a menu rather than hanging up, so the
hotline never ends a caller's call before the caller does."""


@dataclass(frozen=True)
class Load:
    calls: int
    rate: float
    """Calls per second."""
    hold_s: float
    """How long each caller holds the answered call."""
    kill_at_s: float
    """When the node is killed, from the start of the callers."""
    press_every: int
    """Every this many callers (the 1st, the 4th, ... for 3) press 1 and are forwarded."""
    delay_s: float
    """The hotline's `failover.callback.delay_s`."""

    def number(self, index: int) -> str:
        """Caller `index`'s number (from 0): 139 and eight digits, as `numbers` allows."""
        return f"139{index + 1:08d}"

    def presses(self, number: str) -> bool:
        return (int(number[3:]) - 1) % self.press_every == 0


@dataclass
class Observed:
    """What one system's run left to read."""

    system: str
    load: Load
    killed_at: float
    """Unix seconds."""
    nodes: list[str]
    """The nodes' addresses as the front door names them (host:port), the killed one first."""
    caller: Path
    """The callers' sipp directory (-trace_msg)."""
    frontdoor_log: Path
    phone: Path | None = None
    """The staff's and callers' phone's sipp directory (hotline)."""
    records: list[CallRecord] | None = None
    """Every call record in Redis once settled (hotline)."""
    callbacks: list[CallbackRecord] | None = None


class SippPhone(GroupProcess):
    """A sipp UAS answering every call at once on 127.0.0.1 (`PHONE_SCENARIO`), in its
    own process group; with `trace`, its messages go to `workdir`'s -trace_msg log."""

    def __init__(self, workdir: Path, trace: bool = False) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.port = workdir, free_udp_port()
        super().__init__(
            [require("sipp", "sip-tester"), "-sf", str(PHONE_SCENARIO), "-i", "127.0.0.1",
             "-p", str(self.port), "-mp", str(free_udp_port()), "-nostdin", "-aa",
             *(["-trace_msg"] if trace else [])], workdir / "sipp.log")

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self) -> None:
        with self.log.open("ab") as errors:  # sipp's screen, every second, is not kept
            self.process = subprocess.Popen(
                self.command, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=errors,
                stdin=subprocess.DEVNULL, start_new_session=True)
        wait_udp_bound(self.port)


class Serve(GroupProcess):
    """`hotline serve` of this checkout on `config`, in its own process group."""

    def __init__(self, config: Path) -> None:
        super().__init__([sys.executable, "-m", "ivr", "serve", "--config", str(config)],
                         config.parent / "serve.log")

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)


def run_hotline(load: Load, work: Path) -> Observed:
    """The load through the front door to two `hotline serve` nodes; node-a killed."""
    with contextlib.ExitStack() as stack:
        phone = started(stack, SippPhone(work / "phone", trace=True))
        redis_server = started(stack, RedisServer(work / "redis"))
        port = free_udp_port()
        carrier_a = started(stack, Carrier(work / "carrier-a", host=CARRIER_A_HOST,
                                            hotline=(FRONTDOOR_HOST, port)))
        carrier_b = started(stack, Carrier(work / "carrier-b", host=CARRIER_B_HOST,
                                            staff=phone.address))
        listen = {name: {"carrier-a": free_udp_port(), "carrier-b": free_udp_port()}
                  for name in NODES}
        addresses = [f"127.0.0.1:{listen[name]['carrier-a']}" for name in NODES]
        frontdoor = started(stack, FrontDoor(work / "frontdoor", addresses, [carrier_a.address],
                                              host=FRONTDOOR_HOST, port=port, cfg=FRONTDOOR_CFG))
        people = int(load.rate * (load.hold_s + 2)) + 10
        nodes = {name: started(stack, Serve(_node_config(
            work / name, name, load, redis_server.url, listen[name], people,
            carrier_a.address, carrier_b.address))) for name in NODES}
        client = redis.Redis(unix_socket_path=str(redis_server.socket), decode_responses=True)
        stack.callback(client.close)
        _wait(lambda: _nodes_ready(nodes, listen, client), "the nodes up, their trunks UP")
        _wait(lambda: _frontdoor_ready(frontdoor.log, addresses), "the front door's nodes up")
        print(f"  {len(NODES)} nodes up; calling", flush=True)
        killed_at = _call_and_kill(load, carrier_a.address, nodes[NODES[0]], work / "caller")
        store = CallStore(client)
        callbacks = Callbacks(client, CallbackSettings())
        _wait(lambda: _settled(store, callbacks, load), "the records and call-backs final",
              SETTLE_TIMEOUT_S, required=False)
        observed = Observed("hotline", load, killed_at, addresses, work / "caller",
                            frontdoor.log, work / "phone", store.recent(10 * load.calls),
                            callbacks.recent(10 * load.calls))
    return observed


def run_dispatcher(load: Load, work: Path) -> Observed:
    """The load through the front door to two plain sipp UAS nodes; the first killed."""
    with contextlib.ExitStack() as stack:
        nodes = [started(stack, SippPhone(work / f"uas-{i}")) for i in (1, 2)]
        port = free_udp_port()
        carrier_a = started(stack, Carrier(work / "carrier-a", host=CARRIER_A_HOST,
                                            hotline=(FRONTDOOR_HOST, port)))
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        frontdoor = started(stack, FrontDoor(work / "frontdoor", addresses, [carrier_a.address],
                                              host=FRONTDOOR_HOST, port=port, cfg=FRONTDOOR_CFG))
        _wait(lambda: _frontdoor_ready(frontdoor.log, addresses), "the front door's nodes up")
        print("  2 sipp nodes up; calling", flush=True)
        killed_at = _call_and_kill(load, carrier_a.address, nodes[0], work / "caller")
    return Observed("dispatcher alone", load, killed_at, addresses, work / "caller",
                    frontdoor.log)


def node_events(log: Path) -> list[tuple[str, str, str, float]]:
    """(down|up, $ru, $du, Unix time) for each time the front door marked a node down or
    up, from the lines bench/kamailio/frontdoor_watched.cfg logs."""
    return [(m[1], m[2], m[3], float(m[4])) for m in re.finditer(
        r"bench: node (down|up) \(ru (\S+) du (\S+)\) at ([0-9.]+)",
        log.read_text(errors="replace"))]


def _node_config(work: Path, name: str, load: Load, redis_url: str, listen: dict[str, int],
                 people: int, carrier_a: str, carrier_b: str) -> Path:
    """Write node `name`'s hotline.yaml, ivr.yaml and oncall.yaml under `work`."""
    work.mkdir(parents=True)
    (work / "ivr.yaml").write_text(FLOW)
    (work / "oncall.yaml").write_text(staff_roster(people))
    trunks = [
        {"name": "carrier-a", "mode": "ip", "proxy": carrier_a, "priority": 2,
         "listen": f"127.0.0.1:{listen['carrier-a']}", "addresses": [FRONTDOOR_HOST]},
        {"name": "carrier-b", "mode": "ip", "proxy": carrier_b, "priority": 1,
         "listen": f"127.0.0.1:{listen['carrier-b']}"}]
    callback = {"enabled": True, "delay_s": load.delay_s, "node": "again",
                "numbers": r"139\d{8}", "per_number_s": 0, "per_hour": 100_000,
                "silence_s": 120, "ring_s": 10}
    path = work / "hotline.yaml"
    path.write_text(yaml.safe_dump({
        "node": name, "data_dir": str(work / "var"), "drain_timeout_s": 5,
        "redis": {"url": redis_url}, "media": {"ports": MEDIA_PORTS[name]},
        "failover": {"callback": callback}, "trunks": trunks}))
    return path


def _nodes_ready(nodes: dict[str, Serve], listen: dict[str, dict[str, int]],
                 client: redis.Redis) -> bool:
    for name, node in nodes.items():
        if not node.running:
            raise RuntimeError(f"bench: {name} stopped: "
                               f"{node.log.read_text(errors='replace')[-2000:]}")
    if not all(sip_ping(ports["carrier-a"]) for ports in listen.values()):
        return False
    store = TrunkStore(client)
    health = [store.load_health(trunk, name) for name in nodes
              for trunk in ("carrier-a", "carrier-b")]
    return all(h is not None and h.state is TrunkState.UP for h in health)


def _frontdoor_ready(log: Path, addresses: list[str]) -> bool:
    """Whether the front door holds every node up: none marked down since last up."""
    state: dict[str, str] = {}
    for kind, ru, du, _ in node_events(log):
        state[ru.removeprefix("sip:") if "@" not in ru else du.removeprefix("sip:")] = kind
    return all(state.get(address, "up") == "up" for address in addresses)


def _settled(store: CallStore, callbacks: Callbacks, load: Load) -> bool:
    """Whether every call record is closed and every call-back answered or given up."""
    records = store.recent(10 * load.calls)
    return all(r.ended_at is not None for r in records) and \
        all(c.status in FINAL_CALLBACK for c in callbacks.recent(10 * load.calls))


def _call_and_kill(load: Load, target: str, victim: GroupProcess, workdir: Path) -> float:
    """Run the callers against `target`, SIGKILL `victim`'s process group
    `load.kill_at_s` in; return the (Unix) time of the kill."""
    workdir.mkdir(parents=True, exist_ok=True)
    callers = workdir / "callers.csv"
    callers.write_text("SEQUENTIAL\n" + "".join(
        f"{n};{'Signal=1' if load.presses(n) else ''};{load.hold_s * 1000:.0f};\n"
        for n in map(load.number, range(load.calls))))
    limit_s = load.calls / load.rate + load.hold_s + 60
    caller = subprocess.Popen(
        [require("sipp", "sip-tester"), target, "-sf", str(CALLER_SCENARIO), "-inf",
         str(callers), "-s", "1000", "-r", f"{load.rate:g}", "-m", str(load.calls),
         "-l", str(load.calls), "-i", "127.0.0.1", "-p", str(free_udp_port()),
         "-mp", str(free_udp_port()), "-nostdin", "-trace_msg", "-timeout", f"{limit_s:.0f}s"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(load.kill_at_s)
        killed_at = time.time()
        victim.kill()
        print(f"  node killed {load.kill_at_s:g} s in", flush=True)
        caller.wait(limit_s + 10)
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
    return killed_at


def _wait(predicate: Callable[[], bool], what: str, limit: float = READY_TIMEOUT_S,
          required: bool = True) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            if required:
                raise RuntimeError(f"bench: timed out after {limit:g} s waiting for {what}")
            print(f"  gave up after {limit:g} s waiting for {what}", flush=True)
            return
        time.sleep(0.2)
