"""Sentinel failover: the Redis master killed under load, with writes that wait for a
replica (`redis.replicas: 1`) and with the master's word alone (`redis.replicas: 0`).

Two `hotline serve` nodes behind the front door (bench/cluster_ops.py) on a Redis master,
two replicas and three sentinels on loopback (tests/redis_sentinel.py's processes,
`down-after-milliseconds` 1000), reached through `redis.sentinels`. sipp places calls
(120 at 4 per second by default, held 3 to 6 s; one caller in three presses 1 and is
forwarded to a sipp staff phone). Some seconds in (12 by default) the master is killed
with SIGKILL; the sentinels promote a replica. Meanwhile a probe writes one key every
50 ms through the same client and settings as the nodes (`connect`, `replicated.execute`).
Both settings run in turn, each on fresh processes.

Measured: set-ups that failed and calls that did not end normally (the callers' sipp
trace); records lost or left open once the nodes' spools are replayed; how long writes
were refused (the probe, and the nodes' "Call records: storing -> spooling" and back);
and acknowledged writes lost: probe writes acknowledged before the kill that the new
master does not have, and final records of calls that ended before it that are missing.
Writes docs/bench/redis-failover.md.

    python bench/redis_failover.py [--calls 120] [--rate 4] [--kill-at 12] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster_ops import Callers, Cluster, callers, spread  # noqa: E402
from bench.cluster_report import check_peers, run_context, side_by_side  # noqa: E402
from bench.node_failure_measures import caller_calls  # noqa: E402
from ivr.redis_server import connect  # noqa: E402
from ivr.settings import load_settings  # noqa: E402
from tests.redis_sentinel import (  # noqa: E402
    DOWN_AFTER_MS,
    FAILOVER_TIMEOUT_MS,
    MASTER_NAME,
    RedisNode,
    SentinelNode,
    free_tcp_port,
)
from trunks.replicated import execute  # noqa: E402

PROBE_EVERY_S = 0.05
REPLICA_WAIT_MS = 100
SETTLE_S = 60.0
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*Call records: (\w+) -> (\w+)",
                      re.M)


class SentinelRedis:
    """A master, two replicas and three sentinels; two replicas, so that once one is
    promoted the new master still has one to confirm writes."""

    def __init__(self, work: Path) -> None:
        self.master = RedisNode(work / "master")
        self.replicas = [RedisNode(work / f"replica-{i}", replica_of=self.master.port)
                         for i in (1, 2)]
        ports = [free_tcp_port() for _ in range(3)]
        ids = [f"{i + 1:040x}" for i in range(3)]
        self.sentinels = [
            SentinelNode(work / f"sentinel-{i}", port, ids[i], self.master, self.replicas[0],
                         [(p, n) for p, n in zip(ports, ids, strict=True) if p != port])
            for i, port in enumerate(ports)]

    def start(self) -> None:
        for server in [self.master, *self.replicas, *self.sentinels]:
            server.start()
        deadline = time.monotonic() + 30
        while not self._agreed():
            if time.monotonic() > deadline:
                raise RuntimeError("bench: the sentinels did not see both replicas")
            time.sleep(0.1)

    def stop(self) -> None:
        for process in [*self.sentinels, *self.replicas, self.master]:
            process.stop()

    def master_port(self) -> int | None:
        states = [s.master_state() for s in self.sentinels]
        ports = {int(str(s["port"])) for s in states if s is not None}
        return ports.pop() if len(ports) == 1 else None

    def _agreed(self) -> bool:
        states = [s.master_state() for s in self.sentinels]
        return all(s is not None and s["num-other-sentinels"] == 2 and s["num-slaves"] == 2
                   for s in states)


@dataclass
class Probe:
    """Writes `bench:probe:N` every `PROBE_EVERY_S` through the nodes' client and
    settings, noting (N, Unix time, acknowledged?) for each."""

    client: redis.Redis
    replicas: int
    writes: list[tuple[int, float, bool]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        n = 0
        while not self.stopping.wait(PROBE_EVERY_S):
            n, at = n + 1, time.time()
            try:
                execute(self.client, lambda p, n=n, at=at: p.set(f"bench:probe:{n}", at),
                        self.replicas, REPLICA_WAIT_MS)
                self.writes.append((n, at, True))
            except redis.RedisError:
                self.writes.append((n, at, False))


@dataclass
class Result:
    replicas: int
    killed_at: float
    promoted_s: float | None
    calls: int = 0
    answered: int = 0
    failed: int = 0
    dropped: int = 0
    lost: int = 0
    open: int = 0
    lost_before: int = 0
    """Of `lost` and `open`, calls whose caller's BYE was answered before the kill."""
    probe_writes: int = 0
    probe_refused: int = 0
    refused_s: float = 0.0
    """From the first refused probe write after the kill to the next acknowledged one."""
    probe_lost: int = 0
    probe_acked_before: int = 0
    spooling: list[tuple[str, float, float | None]] = field(default_factory=list)
    """(node, from, to) seconds after the kill the node's record writer spooled."""
    settle_s: float = 0.0
    duration_s: float = 0.0


def run(replicas: int, args: argparse.Namespace, work: Path) -> Result:
    started = time.monotonic()
    rig = SentinelRedis(work / "redis")
    with contextlib.ExitStack() as stack:
        stack.callback(rig.stop)
        rig.start()
        config = {"sentinels": [s.address for s in rig.sentinels], "master_name": MASTER_NAME,
                  "replicas": replicas, "replica_wait_ms": REPLICA_WAIT_MS}
        cluster = stack.enter_context(Cluster(work / "cluster", config, args.calls, args.rate))
        client = connect(load_settings(cluster.configs["node-a"]), fail_fast=True)
        stack.callback(client.close)
        probe = Probe(client, replicas)
        thread = threading.Thread(target=probe.run, daemon=True)
        thread.start()
        stack.callback(thread.join)
        stack.callback(probe.stopping.set)
        print(f"  replicas {replicas}: nodes up; calling", flush=True)
        old = rig.master.port
        with Callers(cluster.target, work / "caller",
                     callers(args.calls, spread(3, 6), 3), args.rate) as calling:
            calling.at(args.kill_at)
            killed_at = time.time()
            rig.master.kill()
            print(f"  master killed {args.kill_at:g} s in", flush=True)
            while rig.master_port() in (old, None) and time.time() - killed_at < 30:
                time.sleep(0.05)
            promoted = time.time() - killed_at if rig.master_port() not in (old, None) else None
        result = Result(replicas, killed_at, promoted)
        result.settle_s = cluster.settle(10 * args.calls, SETTLE_S)
        probe.stopping.set()
        thread.join()
        _measure(result, cluster, probe, work / "caller")
    result.duration_s = time.monotonic() - started
    return result


def _measure(result: Result, cluster: Cluster, probe: Probe, caller: Path) -> None:
    killed = result.killed_at
    calls = list(caller_calls(caller).values())
    records = {r.id: r for r in cluster.records(10 * len(calls) + 10)}
    result.calls, result.answered = len(calls), sum(c.answered_at is not None for c in calls)
    result.failed = result.calls - result.answered
    result.dropped = sum(c.answered_at is not None and c.bye_status != 200 for c in calls)
    answered = [c for c in calls if c.answered_at is not None]
    missing = [c for c in answered if c.call_id not in records]
    unended = [c for c in answered if c.call_id in records and records[c.call_id].ended_at is None]
    result.lost, result.open = len(missing), len(unended)
    result.lost_before = sum(c.bye_status == 200 and (c.hung_up_at or killed) < killed - 0.5
                             for c in missing + unended)
    result.probe_writes = len(probe.writes)
    result.probe_refused = sum(not ok for _, _, ok in probe.writes)
    refused = [at for _, at, ok in probe.writes if not ok and at >= killed]
    if refused:
        back = [at for _, at, ok in probe.writes if ok and at > refused[0]]
        result.refused_s = (back[0] if back else refused[-1]) - refused[0]
    acked = [n for n, at, ok in probe.writes if ok and at < killed]
    result.probe_acked_before = len(acked)
    found = cluster.client.mget([f"bench:probe:{n}" for n in acked]) if acked else []
    result.probe_lost = sum(value is None for value in found)
    for name in cluster.nodes:
        result.spooling += [(name, a, b) for a, b in _spooling(cluster.work / name / "serve.log",
                                                                killed)]


def _spooling(log: Path, killed: float) -> list[tuple[float, float | None]]:
    """(from, to) seconds after the kill each time the node's record writer spooled."""
    spans: list[tuple[float, float | None]] = []
    for stamp, old, new in LOG_TIME.findall(log.read_text(errors="replace")):
        at = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() - killed
        if new == "spooling":
            spans.append((at, None))
        elif old == "spooling" and spans and spans[-1][1] is None:
            spans[-1] = (spans[-1][0], at)
    return spans


def _spans(r: Result) -> str:
    parts = [f"{node} {a:.1f} s to {'-' if b is None else f'{b:.1f} s'}"
             for node, a, b in r.spooling]
    return "; ".join(parts) or "never"


def table(results: list[Result]) -> str:
    rows = {
        "calls placed / answered": lambda r: f"{r.calls} / {r.answered}",
        "failed set-ups": lambda r: str(r.failed),
        "calls not ended normally (caller's BYE not answered 200)": lambda r: str(r.dropped),
        "kill to the sentinels naming the new master": lambda r:
            "-" if r.promoted_s is None else f"{r.promoted_s:.1f} s",
        "probe writes refused (every 50 ms) / made": lambda r:
            f"{r.probe_refused} / {r.probe_writes}",
        "writes refused: first refused probe write to the next acknowledged": lambda r:
            f"{r.refused_s:.2f} s",
        "nodes' record writers spooling (from / to, s after the kill)": _spans,
        "probe writes acknowledged before the kill / lost": lambda r:
            f"{r.probe_acked_before} / {r.probe_lost}",
        "records lost / left open, once settled": lambda r: f"{r.lost} / {r.open}",
        "... of calls that ended before the kill (acknowledged writes lost)": lambda r:
            str(r.lost_before),
        "time for the spools to drain and the records to close": lambda r:
            f"{r.settle_s:.1f} s",
    }
    return side_by_side([f"`redis.replicas: {r.replicas}`" for r in results], rows, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=120)
    parser.add_argument("--rate", type=float, default=4.0, help="calls per second")
    parser.add_argument("--kill-at", type=float, default=12.0,
                        help="seconds after the callers start that the master is killed")
    parser.add_argument("--keep", type=Path, help="keep the peers' files in this new directory")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "docs" / "bench" / "redis-failover.md")
    args = parser.parse_args()
    check_peers()
    about = run_context()
    with tempfile.TemporaryDirectory(prefix="bench-redis-failover-") as directory:
        work = args.keep or Path(directory)
        results = []
        for replicas in (1, 0):
            print(f"redis.replicas {replicas} ...", flush=True)
            results.append(run(replicas, args, work / f"replicas-{replicas}"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(args, results, about))
    print(f"\n{table(results)}\n\nwritten to {args.out}")


def report(args: argparse.Namespace, results: list[Result], about: list[str]) -> str:
    commit, machine, load = about
    durations = ", ".join(f"replicas {r.replicas} {r.duration_s:.0f} s" for r in results)
    return f"""# Sentinel failover: the Redis master killed under load

Measured by `make bench` (`bench/redis_failover.py`) at `{commit}` on
{datetime.date.today()}, on {machine}; load average {load} at the start (the machine is
shared). One run, both settings one after the other on fresh processes: {durations}.

## What runs

Two `hotline serve` nodes (`node-a`, `node-b`) behind the shipped front door, as in
`docs/bench/node-failure.md` (the same carriers, flow and staff phone: `bench/cluster.py`,
`bench/cluster_ops.py`), on a Redis master with two replicas and three sentinels on
loopback (`sentinel monitor {MASTER_NAME} ... 2`, `down-after-milliseconds` {DOWN_AFTER_MS},
`failover-timeout` {FAILOVER_TIMEOUT_MS}; no persistence). Each node's `redis` section:

```yaml
redis:
  sentinels: [127.0.0.1:PORT1, 127.0.0.1:PORT2, 127.0.0.1:PORT3]
  master_name: {MASTER_NAME}
  replicas: 1            # 0 in the other column
  replica_wait_ms: {REPLICA_WAIT_MS}
```

Two replicas, so that once Sentinel promotes one the new master still has one to confirm
writes: with a single replica and `replicas: 1` every confirmed write would be refused
(spooled) until the old master came back as a replica.

sipp places {args.calls} calls at {args.rate:g} per second, each from its own number, held 3 to 6 s
(3, 3.6, 4.2, 4.8, 5.4, 6 s in turn); one caller in three presses 1 half a second in and is
forwarded to the staff phone, the others stay in the menu until they hang up.
{args.kill_at:g} s after the callers start, the master's process is killed with SIGKILL. A
probe writes one key every {PROBE_EVERY_S * 1000:.0f} ms through the nodes' own client
(`ivr.redis_server.connect` on node-a's settings, fail-fast) and `trunks.replicated.execute`
with the same `replicas` and `replica_wait_ms`, noting which writes were acknowledged.

A set-up fails when the caller gets no 200 OK; a call is not ended normally when the
caller's BYE is not answered 200. Once the callers are done, the bench waits (up to
{SETTLE_S:g} s) for both nodes' record spools to be empty and every record to have an end,
then reads the new master: a record is lost if a call the caller saw answered has none,
left open if it has no end. A lost or open record of a call whose caller hung up (answered
200) more than 0.5 s before the kill counts as an acknowledged write lost: what a node could
not store it spools and replays, so only a write the master acknowledged and then lost stays
missing. Writes were refused from the first probe write refused after the kill to the next
one acknowledged; the nodes' record writers log when they turn to spooling and back.

## Results

{table(results)}

## Targets

The issue's targets: 0 failed or dropped calls, 0 acknowledged writes lost.

{_targets(results)}

## What it shows, and what it does not

- Calls are not carried by Redis: a node answers, bridges and ends calls while Redis is
  away, spools the records and replays them once the sentinels name the new master. The
  failed and dropped counts above are what a master's death did to the callers.
- The refused window is Sentinel's: `down-after-milliseconds` ({DOWN_AFTER_MS} ms here; 30 s by
  Sentinel's default, which would stretch the window by as much), the election, the
  promotion. With `replicas: 1` it lasts until the promoted master has a replica in sync
  again (Sentinel reconfigures the other replica, which then resyncs), so confirmed writes
  are refused, and spooled, a little longer than with `replicas: 0`.
- Acknowledged writes lost: on loopback, a SIGKILLed master has already handed what it
  acknowledged to its replicas' sockets, so `replicas: 0` loses nothing here either. The
  loss `WAIT` guards against needs a replica that lags (a slow or partitioned link, a
  busy replica) when the master dies; this bench does not make one, so it shows that
  `replicas: 1` costs no calls and no records, not how many `replicas: 0` would lose.
- One machine, loopback, one run per setting; times below a few hundred ms are indicative.
"""


def _targets(results: list[Result]) -> str:
    lines = ["| setting | failed / dropped calls | acknowledged writes lost | |",
             "|---|---|---|---|"]
    for r in results:
        lost = r.probe_lost + r.lost_before
        ok = r.failed == 0 and r.dropped == 0 and lost == 0 and r.lost + r.open == 0
        lines.append(f"| `replicas: {r.replicas}` | {r.failed} / {r.dropped} | {lost} (probe "
                     f"{r.probe_lost}, records {r.lost_before}); records lost or open "
                     f"{r.lost + r.open} | {'met' if ok else 'not met'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
