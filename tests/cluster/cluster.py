"""The cluster the tests here run: `hotline serve` nodes behind the shipped front door
(config/kamailio/frontdoor.cfg), fed by a Kamailio carrier, sharing one redis-server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import FAST_PROBES
from tests.peers import Carrier, FrontDoor, GroupProcess, sip_ping

NODE_START_S = 60.0
FLOW = """\
start: welcome
voice: {engine: espeak}
nodes:
  welcome: {type: hangup, text: Welcome.}
"""


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
