"""The cluster the tests here run: `hotline serve` nodes behind the shipped front door
(config/kamailio/frontdoor.cfg), fed by a Kamailio carrier, sharing one redis-server."""

from __future__ import annotations

import contextlib
import csv
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import FAST_PROBES
from tests.peers import (
    SIPP_SCENARIOS,
    Carrier,
    FrontDoor,
    GroupProcess,
    free_udp_port,
    require,
    sip_ping,
)

NODE_START_S = 60.0
FLOW = """\
start: welcome
voice: {engine: espeak}
nodes:
  welcome: {type: hangup, text: Welcome.}
"""
HOLD_FLOW = """\
start: hold
voice: {engine: espeak}
nodes:
  hold: {type: say, text: Thank you for calling. Please hold the line a moment., next: bye}
  bye: {type: hangup, text: Goodbye.}
"""
"""Each call held about four seconds (a prompt, then goodbye), then hung up by the hotline."""


class Cluster:
    """The carrier, the front door(s) and the nodes (each its process and SIP port)."""

    def __init__(self, carrier: Carrier, frontdoors: list[FrontDoor],
                 nodes: dict[str, tuple[GroupProcess, int]], workdir: Path) -> None:
        self.carrier, self.frontdoors, self.nodes = carrier, frontdoors, nodes
        self.workdir = workdir

    @property
    def frontdoor(self) -> FrontDoor:
        return self.frontdoors[0]

    def config(self, node: str) -> Path:
        return self.workdir / node / "hotline.yaml"

    def log(self, node: str) -> str:
        return (self.workdir / node / "serve.log").read_text(errors="replace")

    def hotline(self, *args: str, node: str = "node-b") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ivr", *args, "--config",
                               str(self.config(node))], capture_output=True, text=True,
                              timeout=60)

    def live_nodes(self) -> dict[str, dict[str, object]]:
        done = self.hotline("nodes", "status", "--json")
        assert done.returncode == 0, done.stderr
        return {row["name"]: row for row in json.loads(done.stdout)}

    def rotation_changes(self, name: str, state: str) -> int:
        """How often the front doors have logged node `name` going `state` (up, down)."""
        line = f"node sip:127.0.0.1:{self.nodes[name][1]} {state}:"
        return sum(frontdoor.log.read_text(errors="replace").count(line)
                   for frontdoor in self.frontdoors)

    def wait_serving(self, *names: str) -> None:
        """Wait until the nodes answer OPTIONS on their SIP ports."""
        deadline = time.monotonic() + NODE_START_S
        while not all(sip_ping(self.nodes[name][1]) for name in names):
            assert time.monotonic() < deadline, f"{', '.join(names)} did not come up"
            for name in names:
                assert self.nodes[name][0].running, self.log(name)[-2000:]


class Callers:
    """sipp callers dialling the hotline through `carrier`, `rate` calls a second, each
    waiting for the hotline to hang up (uac_via_carrier.xml): `calls` of them, or until
    `stop()`. Their Call-IDs are NAME-N@127.0.0.1, N from 1, NAME the workdir's name."""

    def __init__(self, carrier: Carrier, workdir: Path, rate: float,
                 calls: int | None = None, bye_timeout_s: float = 20.0) -> None:
        """`bye_timeout_s`: a call whose BYE does not come within this long fails."""
        workdir.mkdir()
        self.workdir = workdir
        self.process = subprocess.Popen(
            [require("sipp", "sip-tester"), carrier.address, "-sf",
             str(SIPP_SCENARIOS / "uac_via_carrier.xml"), "-r", f"{rate:g}",
             "-m", str(calls or 100000), "-s", "400", "-cid_str", f"{workdir.name}-%u@%s",
             "-i", "127.0.0.1", "-p", str(free_udp_port()), "-mp", str(free_udp_port()),
             "-recv_timeout", str(round(bye_timeout_s * 1000)), "-nostdin", "-trace_err",
             "-trace_stat", "-fd", "1"],
            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def call_id(self, n: int) -> str:
        return f"{self.workdir.name}-{n}@127.0.0.1"

    def stop(self) -> None:
        """Place no more calls; sipp exits once the calls up have ended."""
        self.process.send_signal(signal.SIGUSR1)

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for sipp to end; its exit code (0: every call completed)."""
        return self.process.wait(timeout)

    def errors(self) -> str:
        return "".join(p.read_text() for p in self.workdir.glob("*_errors.log"))

    def counts(self) -> dict[str, int]:
        """sipp's final counters: OutgoingCall, SuccessfulCall, FailedCall."""
        (stats,) = self.workdir.glob("*_.csv")
        rows = list(csv.reader(stats.read_text().splitlines(), delimiter=";"))
        last = dict(zip(rows[0], rows[-1], strict=False))
        return {name: int(last[f"{name}(C)"])
                for name in ("OutgoingCall", "SuccessfulCall", "FailedCall")}

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def node(tmp_path: Path, name: str, redis_url: str, carrier: str, frontdoor_hosts: list[str],
         listen: int, flow: str) -> GroupProcess:
    """A `hotline serve` of `flow` taking calls from the front doors on 127.0.0.1:`listen`
    (not started)."""
    work = tmp_path / name
    work.mkdir()
    (work / "ivr.yaml").write_text(flow)
    probe = FAST_PROBES.model_dump()
    (work / "hotline.yaml").write_text(f"""\
node: {name}
data_dir: {work / "var"}
redis: {{url: "{redis_url}"}}
trunks:
  - {{name: carrier-a, mode: ip, proxy: "{carrier}", listen: "127.0.0.1:{listen}",
      addresses: {json.dumps(frontdoor_hosts)}, probe: {probe}}}
""")
    return GroupProcess([sys.executable, "-m", "ivr", "serve", "--config",
                         str(work / "hotline.yaml")], work / "serve.log")


@contextlib.contextmanager
def running_cluster(tmp_path: Path, redis_url: str, flow: str,
                    door_hosts: tuple[str, ...] = ("127.0.0.4",)) -> Iterator[Cluster]:
    """node-a and node-b on `flow`, behind a front door on each of `door_hosts`, fed by a
    carrier (127.0.0.3) that sends each call to the first front door, and to the second
    when the first does not answer it; all stopped on exit."""
    doors = [(host, free_udp_port()) for host in door_hosts]
    carrier = Carrier(tmp_path / "carrier", host="127.0.0.3", hotline=doors[0],
                      hotline2=doors[1] if len(doors) > 1 else None)
    listens = {"node-a": free_udp_port(), "node-b": free_udp_port()}
    frontdoors = [FrontDoor(tmp_path / f"frontdoor-{letter}",
                            [f"127.0.0.1:{port}" for port in listens.values()],
                            [carrier.address], host=host, port=port)
                  for letter, (host, port) in zip("ab", doors, strict=False)]
    nodes = {name: (node(tmp_path, name, redis_url, carrier.address, list(door_hosts), port,
                         flow), port) for name, port in listens.items()}
    try:
        carrier.start()
        for frontdoor in frontdoors:
            frontdoor.start()
        for process, _ in nodes.values():
            process.start()
        cluster = Cluster(carrier, frontdoors, nodes, tmp_path)
        cluster.wait_serving(*nodes)
        yield cluster
    finally:
        for process, _ in nodes.values():
            process.stop()
        for peer in [*frontdoors, carrier]:
            peer.stop()
