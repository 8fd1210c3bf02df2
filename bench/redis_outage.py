"""Redis outage: call set-up time and call records with Redis up, hung and killed.

`hotline serve` runs as its own process on an external redis-server that this script
starts (an fsynced append-only file, so what Redis stored survives its restart). sipp
callers call at 1 call/s. The flow first forwards the call as far as its route plan (the
one trunk's carrier is a closed port, so the trunk is DOWN and nobody is rung), then
plays a prompt; each caller hears it for 3 s and hangs up. Phases of `--calls` calls:

1. `up`: Redis answers;
2. `hung`: Redis stopped by SIGSTOP (its port still accepts connections, nothing answers);
3. `killed`: Redis killed by SIGKILL (its port closed), then started again with the node
   still running; later the node is stopped (SIGTERM);
4. `restart`: the node started again, Redis killed again, `--restart-calls` calls, the
   node stopped while Redis is still away, then Redis and the node started again.

Each INVITE is timed to its 200 OK from sipp's message trace, as in call_setup.py, and
each 200 OK to the first sound of the prompt reaching the caller's RTP port (the route
plan is on that path). The calls' records are looked up in Redis by Call-ID once Redis
is back (the node running) and again after the node has stopped; a record is final once
it has the call's end.

    python bench/redis_outage.py [--calls 60] [--restart-calls 20] [--source DIR]
        [--json FILE] [--before FILE]

`--source` runs the server from another checkout (the code before a change), `--json`
keeps the numbers, and `--before` puts a kept run beside this one in the doc.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.call_setup import traced_calls  # noqa: E402
from bench.sip_callers import callers, serve, write_config  # noqa: E402
from tests.peers import RedisServer  # noqa: E402

RATE = 1.0
"""Calls per second."""
HOLD_MS = 3000
"""How long each caller listens to the prompt before hanging up."""
PROMPT_S = HOLD_MS / 1000 + 10
SETTLE_S = 60.0
"""Longest wait for the records to land once Redis is back."""
QUIET_S = 5.0
"""The records count as landed once their number has not changed for this long."""
STOP_S = 60.0
"""How long the node may take to stop."""
TRUNK_DOWN_S = 5.0
"""Time for a new node's probes to mark the trunk DOWN (its carrier is a closed port)."""
SILENT = b"\xff\x7f"
"""PCMU's two codes for a zero sample: the engine's silence between prompts."""
PHASES = {"up": "Redis up", "hung": "Redis hung (SIGSTOP)", "killed": "Redis killed (SIGKILL)",
          "restart": "Redis killed, node restarted before it is back"}


@dataclass
class Phase:
    """One phase's calls: their set-up times and how many of their records Redis holds."""

    calls: int
    setup_ms: dict[str, float] = field(default_factory=dict)
    """Call-ID -> INVITE to 200 OK, of each answered call."""
    prompt_ms: dict[str, float] = field(default_factory=dict)
    """Call-ID -> 200 OK to the prompt's first sound, of each call that heard it."""
    back: tuple[int, int] = (0, 0)
    """Records in Redis, and final ones, once Redis is back (the node running)."""
    stopped: tuple[int, int] = (0, 0)
    """Records in Redis, and final ones, after the node has stopped."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--restart-calls", type=int, default=20)
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="the checkout whose `hotline serve` is measured")
    parser.add_argument("--json", type=Path, help="keep this run's numbers here")
    parser.add_argument("--before", type=Path, help="a run kept by --json, shown beside this one")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "redis-outage.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hotline-outage-") as directory:
        phases, not_saved = run(Path(directory), args.calls, args.restart_calls,
                                args.source.resolve())
    result = {"source": describe(args.source.resolve()), "date": datetime.date.today().isoformat(),
              "not_saved_lines": not_saved, "phases": {n: asdict(p) for n, p in phases.items()}}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    before = json.loads(args.before.read_text()) if args.before is not None else None
    text = report(result, before, args.calls, args.restart_calls)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"written to {args.out}")


def run(work: Path, calls: int, restart_calls: int, source: Path) -> tuple[dict[str, Phase], int]:
    """Every phase, in order; also how many log lines said a record was not saved."""
    peer = RedisServer(work / "redis", tcp_port=free_tcp_port())
    peer.command += ["--appendonly", "yes", "--appendfsync", "always"]
    peer.start()
    client = redis.Redis(host="127.0.0.1", port=peer.tcp_port, decode_responses=True,
                         socket_timeout=2.0)
    port = write_config(work, "outage", PROMPT_S, peer.url, route_first=True)
    phases = {name: Phase(restart_calls if name == "restart" else calls) for name in PHASES}

    def call(name: str) -> None:
        phase = phases[name]
        phase.setup_ms, phase.prompt_ms = place_calls(port, phase.calls, work / name)

    node = start_node(work, port, source)
    try:
        call("up")
        peer.pause()
        call("hung")
        peer.kill()
        call("killed")
        peer.start()
        first = [phases[n] for n in ("up", "hung", "killed")]
        settle(client, first)
        stop(node)
        count(client, first, after_stop=True)

        node = start_node(work, port, source)
        peer.kill()
        call("restart")
        stop(node)
        peer.start()
        node = start_node(work, port, source)
        settle(client, [phases["restart"]])
        stop(node)
        count(client, [phases["restart"]], after_stop=True)
    finally:
        stop(node)
        client.close()
        peer.stop()
    log = (work / "serve.log").read_text(errors="replace")
    return phases, len(re.findall(r"record[s]? not saved", log))


def start_node(work: Path, port: int, source: Path) -> subprocess.Popen[bytes]:
    """`hotline serve`, once its probes have found the trunk's carrier away (DOWN)."""
    node = serve(work, port, source)
    time.sleep(TRUNK_DOWN_S)
    return node


def place_calls(port: int, calls: int, work: Path) -> tuple[dict[str, float],
                                                           dict[str, float]]:
    """sipp places `calls` calls at RATE to the hotline; by Call-ID, each answered call's
    set-up time (INVITE to 200 OK) and, for those that heard it before hanging up, the
    time from the 200 OK to the first sound of the prompt (ms)."""
    with Ears(calls) as ears:
        sipp = callers(port, ears.ports, RATE, HOLD_MS, work, ["-trace_msg"])
        code = sipp.wait(calls / RATE + 180)
        heard = ears.heard()
    traced = traced_calls(work)
    setup = {i: (c.answered - c.invited) * 1000 for i, c in traced.items()
             if c.answered is not None}
    prompt = {i: (heard[c.media_port] - c.answered) * 1000 for i, c in traced.items()
              if c.answered is not None and c.media_port in heard}
    print(f"{work.name}: {len(setup)} of {calls} calls answered, {len(prompt)} heard the "
          f"prompt (sipp exit {code})", flush=True)
    return setup, prompt


class Ears:
    """One socket per caller for its audio, and a thread noting when each first hears
    something other than silence (the prompt's tone)."""

    def __init__(self, calls: int) -> None:
        self.sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(calls)]
        for sock in self.sockets:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        self.ports = [int(s.getsockname()[1]) for s in self.sockets]
        self._heard: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def __enter__(self) -> Ears:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.sockets:
            sock.close()

    def heard(self) -> dict[int, float]:
        """Media port -> when (wall clock) its first packet of sound arrived."""
        return dict(self._heard)

    def _listen(self) -> None:
        with selectors.DefaultSelector() as selector:
            for sock, port in zip(self.sockets, self.ports, strict=True):
                selector.register(sock, selectors.EVENT_READ, port)
            while not self._stop.is_set():
                for key, _ in selector.select(0.1):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    with contextlib.suppress(BlockingIOError):
                        while True:
                            packet = sock.recv(2048)
                            if key.data not in self._heard and packet[12:].strip(SILENT):
                                self._heard[key.data] = time.time()


def settle(client: redis.Redis, phases: list[Phase]) -> None:
    """Wait until the phases' records stop changing in Redis (at most SETTLE_S), then
    count them as `back`."""
    started = changed = time.monotonic()
    seen = count(client, phases)
    while time.monotonic() - changed < QUIET_S and time.monotonic() - started < SETTLE_S:
        time.sleep(0.5)
        now = count(client, phases)
        if now != seen:
            seen, changed = now, time.monotonic()


def count(client: redis.Redis, phases: list[Phase], after_stop: bool = False) -> list[Any]:
    """Look up each phase's records by Call-ID; kept in `back` or `stopped`."""
    found = []
    for phase in phases:
        ids = list(phase.setup_ms)
        texts = client.mget([f"hotline:call:{i}" for i in ids]) if ids else []
        records = [json.loads(t) for t in texts if t is not None]
        counts = (len(records), sum(1 for r in records if r.get("ended_at") is not None))
        if after_stop:
            phase.stopped = counts
        else:
            phase.back = counts
        found.append(counts)
    return found


def stop(node: subprocess.Popen[bytes]) -> None:
    if node.poll() is None:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(STOP_S)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def describe(source: Path) -> str:
    """The checkout's commit, marked when it has changes not committed."""
    def git(*command: str) -> str:
        return subprocess.run(["git", *command], cwd=source, capture_output=True,
                              text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return str(source)
    return commit + (" (with changes)" if git("status", "--porcelain", "--", "ivr", "trunks",
                                                "failover") else "")


def report(result: dict[str, Any], before: dict[str, Any] | None, calls: int,
           restart_calls: int) -> str:
    runs = [("before", before), ("after", result)] if before is not None else [("", result)]
    sources = "; ".join(f"{label or 'measured'}: `{data['source']}` on {data['date']}"
                        for label, data in runs)
    return f"""# {__doc__.splitlines()[0]}

Measured by `make bench` (`bench/redis_outage.py`), {sources}.

`hotline serve` runs as its own process on an external redis-server started by the
bench, with an fsynced append-only file. sipp calls at {RATE:g} call/s. The flow first
forwards the call as far as the route plan (its one trunk is DOWN, so nobody is rung),
then plays a prompt, which each caller hears for {HOLD_MS / 1000:g} s before hanging up:
{calls} calls with Redis up, {calls} with Redis hung by SIGSTOP, {calls} with Redis killed by
SIGKILL; then Redis is started again with the node still running, and later the node is
stopped. Last, {restart_calls} calls with Redis killed again, the node stopped while Redis
is still away, and both started again.

INVITE to 200 OK, from sipp's message trace, and 200 OK to the first sound of the prompt
at the caller's RTP port (the route plan comes before it), in ms:

{latency_table(runs)}

The calls answered, those that heard the prompt before hanging up, and their records in
Redis (found, and final: with the call's end) once Redis is back with the node running,
and after the node has stopped:

{records_table(runs)}

Log lines saying a record was not saved: {", ".join(
        f"{label} {data['not_saved_lines']}".strip() for label, data in runs)}.

Reading it: the time to the first sound includes the wait for the RTP engine's next 20
ms tick, and sipp's calls come exactly 1 s apart (a multiple of 20 ms), so each run has
a near-constant phase of its own: differences under 20 ms between runs are that phase,
not the code. The first call of an outage waits the route plan's bound (0.2 s) for the
read that hangs; later calls take the overrides read last at once.
"""


def percentiles(times_ms: dict[str, float]) -> tuple[float, float, float]:
    """p50, p99 and max of a phase's times (NaN when there are none)."""
    times = list(times_ms.values()) or [float("nan")]
    p50, p99 = np.percentile(times, [50, 99])
    return float(p50), float(p99), max(times)


def latency_table(runs: list[tuple[str, dict[str, Any]]]) -> str:
    """p50, p99 and max of both measures per phase and run, and the ratios of two runs."""
    head = [f"{label} {w}".strip() for label, _ in runs for w in ("p50", "p99", "max")]
    if len(runs) == 2:
        head += ["p50 before / after", "p99 before / after"]
    rows = []
    for name, title in PHASES.items():
        for measure, what in (("setup_ms", "INVITE to 200 OK"),
                              ("prompt_ms", "200 OK to the prompt")):
            figures = [percentiles(data["phases"][name][measure]) for _, data in runs]
            cells = [f"{value:.1f}" for three in figures for value in three]
            if len(runs) == 2:
                cells += [ratio(figures[0][0], figures[1][0]),
                          ratio(figures[0][1], figures[1][1])]
            rows.append(f"| {title} | {what} | {' | '.join(cells)} |")
    return table(["phase", "measure", *head], rows)


def ratio(before: float, after: float) -> str:
    value = before / after if after > 0 else float("nan")
    if not np.isfinite(value):
        return "-"
    return f"{value:.1f}x" if value < 10 else f"{value:.0f}x"


def records_table(runs: list[tuple[str, dict[str, Any]]]) -> str:
    head = [f"{label} {what}".strip() for label, _ in runs
            for what in ("answered", "heard", "in Redis once back", "after the stop")]
    rows = []
    for name, title in PHASES.items():
        cells = []
        for _, data in runs:
            phase = data["phases"][name]
            back, stopped = phase["back"], phase["stopped"]
            cells += [str(len(phase["setup_ms"])), str(len(phase["prompt_ms"])),
                      f"{back[0]} ({back[1]} final)", f"{stopped[0]} ({stopped[1]} final)"]
        rows.append(f"| {title} | {' | '.join(cells)} |")
    return table(["phase", *head], rows)


def table(head: list[str], rows: list[str]) -> str:
    return f"| {' | '.join(head)} |\n|{'---|' * len(head)}\n" + "\n".join(rows)


if __name__ == "__main__":
    main()
