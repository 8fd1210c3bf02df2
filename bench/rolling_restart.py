"""Rolling restart: both nodes restarted one after the other under load, drained first
(`hotline nodes drain NAME --wait`) beside killed (SIGKILL) and started again.

Two `hotline serve` nodes behind the front door on one redis-server (bench/cluster_ops.py).
sipp places calls (320 at 4 per second by default, held 5 to 10 s; one caller in three
presses 1 and is forwarded to a sipp staff phone). Some seconds in (10 by default) node-a
is restarted: drained with the CLI, which returns once the node has stopped (or killed
with SIGKILL), started again, and waited for until `hotline nodes status` lists its new
process and it answers OPTIONS; then node-b the same way. Both ways run in turn, each on
fresh processes.

Measured from the callers' sipp trace, the front door's log and the records in Redis:
set-ups that failed, calls dropped (answered, and the caller's BYE not answered 200),
records with a cut-off end reason, records lost or left open, and how long each restart
took. Writes docs/bench/rolling-restart.md.

    python bench/rolling_restart.py [--calls 320] [--rate 4] [--start-at 10] [--keep DIR]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster import NODES, node_events  # noqa: E402
from bench.cluster_ops import DRAIN_TIMEOUT_S, Callers, Cluster, callers, spread  # noqa: E402
from bench.cluster_report import check_peers, run_context, side_by_side  # noqa: E402
from bench.node_failure_measures import caller_calls, routes  # noqa: E402
from tests.peers import RedisServer  # noqa: E402

SETTLE_S = 60.0
MODES = ("drain", "kill")


@dataclass
class Step:
    """One node's restart, in Unix seconds."""

    node: str
    began: float
    stopped: float
    listed: float
    up_calls: int = 0
    """Calls up on the node when its restart began."""


@dataclass
class Result:
    mode: str
    steps: list[Step]
    calls: int = 0
    answered: int = 0
    failed: int = 0
    failed_during: int = 0
    """Set-ups that failed, placed between the first restart's start and the last's end."""
    dropped: int = 0
    dropped_up: int = 0
    """Of those, calls up on the node being restarted when its restart began."""
    end_reasons: dict[str, int] = field(default_factory=dict)
    cut_off: int = 0
    lost: int = 0
    open: int = 0
    frontdoor: list[str] = field(default_factory=list)
    duration_s: float = 0.0


def run(mode: str, args: argparse.Namespace, work: Path) -> Result:
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        server = RedisServer(work / "redis")
        stack.callback(server.stop)
        server.start()
        cluster = stack.enter_context(Cluster(work / "cluster", {"url": server.url},
                                              args.calls, args.rate))
        print(f"  {mode}: nodes up; calling", flush=True)
        steps = []
        with Callers(cluster.target, work / "caller",
                     callers(args.calls, spread(5, 10), 3), args.rate) as calling:
            calling.at(args.start_at)
            for name in NODES:
                steps.append(_restart(cluster, name, mode))
                print(f"  {name} restarted ({mode}) in {steps[-1].listed - steps[-1].began:.1f} s",
                      flush=True)
        cluster.settle(10 * args.calls, SETTLE_S)
        result = Result(mode, steps)
        _measure(result, cluster, work / "caller")
    result.duration_s = time.monotonic() - started
    return result


def _restart(cluster: Cluster, name: str, mode: str) -> Step:
    began = time.time()
    if mode == "drain":
        cluster.drain(name)
    else:
        cluster.nodes[name].kill()
    stopped = time.time()
    cluster.start(name)
    return Step(name, began, stopped, cluster.wait_listed(name))


def _measure(result: Result, cluster: Cluster, caller: Path) -> None:
    calls = list(caller_calls(caller).values())
    addresses = [f"127.0.0.1:{cluster.listen[n]['carrier-a']}" for n in NODES]
    node_of, _ = routes(cluster.frontdoor_log, addresses)
    first, last = result.steps[0].began, result.steps[-1].listed
    result.calls, result.answered = len(calls), sum(c.answered_at is not None for c in calls)
    result.failed = result.calls - result.answered
    result.failed_during = sum(c.answered_at is None and first <= c.invited_at <= last
                               for c in calls)
    dropped = [c for c in calls if c.answered_at is not None and c.bye_status != 200]
    result.dropped = len(dropped)
    for step, address in zip(result.steps, addresses, strict=True):
        up = [c for c in calls if node_of.get(c.call_id) == address and c.answered_at
              is not None and c.answered_at < step.began < (c.hung_up_at or math.inf)]
        step.up_calls = len(up)
        result.dropped_up += sum(c in dropped for c in up)
    records = {r.id: r for r in cluster.records(10 * len(calls) + 10)}
    reasons = collections.Counter(r.end_reason or "-" for r in records.values())
    result.end_reasons = dict(reasons.most_common())
    result.cut_off = sum(n for reason, n in reasons.items() if "cut off" in reason
                         or "node was down" in reason)
    answered = [c for c in calls if c.answered_at is not None]
    result.lost = sum(c.call_id not in records for c in answered)
    result.open = sum(r.ended_at is None for r in records.values())
    for kind, ru, du, at in node_events(cluster.frontdoor_log):
        if at >= first - 1:
            result.frontdoor.append(f"{kind} {du if '@' in ru else ru} at {at - first:+.1f} s")


def table(results: list[Result]) -> str:
    def steps(r: Result) -> str:
        return "; ".join(f"{s.node} {s.stopped - s.began:.1f} s + {s.listed - s.stopped:.1f} s"
                         for s in r.steps)

    rows = {
        "calls placed / answered": lambda r: f"{r.calls} / {r.answered}",
        "failed set-ups (all / placed during the restarts)":
            lambda r: f"{r.failed} / {r.failed_during}",
        "calls up on the node when its restart began (node-a; node-b)":
            lambda r: "; ".join(str(s.up_calls) for s in r.steps),
        "calls dropped (answered, the caller's BYE not answered 200)":
            lambda r: str(r.dropped),
        "... of them up on the node being restarted": lambda r: str(r.dropped_up),
        "records with a cut-off end reason": lambda r: str(r.cut_off),
        "records lost / left open, once settled": lambda r: f"{r.lost} / {r.open}",
        "per node: stop (drain --wait, or kill) + start until listed and answering OPTIONS":
            steps,
        "whole restart, first stop to last node listed":
            lambda r: f"{r.steps[-1].listed - r.steps[0].began:.1f} s",
    }
    return side_by_side([f"{r.mode}" for r in results], rows, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=320)
    parser.add_argument("--rate", type=float, default=4.0, help="calls per second")
    parser.add_argument("--start-at", type=float, default=10.0,
                        help="seconds after the callers start that node-a's restart begins")
    parser.add_argument("--keep", type=Path, help="keep the peers' files in this new directory")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "docs" / "bench" / "rolling-restart.md")
    args = parser.parse_args()
    check_peers()
    about = run_context()
    with tempfile.TemporaryDirectory(prefix="bench-rolling-restart-") as directory:
        work = args.keep or Path(directory)
        results = []
        for mode in MODES:
            print(f"{mode} ...", flush=True)
            results.append(run(mode, args, work / mode))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(args, results, about))
    print(f"\n{table(results)}\n\nwritten to {args.out}")


def report(args: argparse.Namespace, results: list[Result], about: list[str]) -> str:
    commit, machine, load = about
    durations = ", ".join(f"{r.mode} {r.duration_s:.0f} s" for r in results)
    reasons = "\n".join(f"- {r.mode}: " + ", ".join(f"{n} \"{reason}\"" for reason, n in
                                                    r.end_reasons.items()) for r in results)
    events = "\n".join(f"- {r.mode}: " + ("; ".join(r.frontdoor) or "none") for r in results)
    return f"""# Rolling restart: both nodes restarted under load, drained or killed

Measured by `make bench` (`bench/rolling_restart.py`) at `{commit}` on
{datetime.date.today()}, on {machine}; load average {load} at the start (the machine is
shared). One run, both ways one after the other on fresh processes: {durations}.

## What runs

Two `hotline serve` nodes (`node-a`, `node-b`) behind the shipped front door on one
redis-server (`redis.url`), as in `docs/bench/node-failure.md` (the same carriers, flow,
staff phone and call-back settings: `bench/cluster.py`, `bench/cluster_ops.py`), with
`drain_timeout_s` {DRAIN_TIMEOUT_S:g}, longer than any caller holds. sipp places {args.calls} calls
at {args.rate:g} per second, each from its own number, held 5 to 10 s (5, 6, 7, 8, 9, 10 s in
turn); one caller in three presses 1 half a second in and is forwarded to the staff phone,
the others stay in the menu until they hang up.

{args.start_at:g} s after the callers start, node-a is restarted, then node-b, each:

- **drain**: `hotline nodes drain NAME --wait` (the node answers new calls and the front
  door's probes 503, lets its calls end, then exits; the command returns once it has left
  the list);
- **kill** (the reference): SIGKILL to the node's process group;

then `hotline serve` again on the same configuration, and the bench waits until the
node's lease lists the new process (as `hotline nodes status` shows it) and it answers
OPTIONS, then goes on to the next node at once, as the documented procedure says.

A set-up fails when the caller gets no 200 OK. A call is dropped when it was answered and
the caller's BYE, at the end of its hold, was not answered 200 (the call was gone by
then). A call was up on a node when the front door had sent it there (its log), it was
answered before the node's restart began and its caller had not yet hung up. Records are
read once every record has an end (at most {SETTLE_S:g} s after the last caller).

## Results

{table(results)}

The per-node line reads: the stop (for a drain, until `--wait` returns), then the start
until the node is listed and answers OPTIONS.

End reasons of the records:
{reasons}

The front door's dispatcher marking nodes down and up (from the first restart's start):
{events}

## Targets

The issue's target: 0 failed or dropped calls in a rolling restart.

{_targets(results)}

## What it shows, and what it does not

{_shows(results)}
- A dropped call is judged by its signalling (the caller's BYE answered); no RTP is checked.
- One machine, loopback, one run per way. Kamailio, sipp, redis-server and both nodes
  share its cores, so restart times include start-up work (prompts synthesized) slowed by
  the load.
"""


def _targets(results: list[Result]) -> str:
    lines = ["| way | failed set-ups | dropped calls | |", "|---|---|---|---|"]
    for r in results:
        met = r.failed == 0 and r.dropped == 0
        lines.append(f"| {r.mode} | {r.failed} | {r.dropped} | {'met' if met else 'not met'} |")
    return "\n".join(lines)


def _shows(results: list[Result]) -> str:
    by = {r.mode: r for r in results}
    drain, kill = by["drain"], by["kill"]
    up = sum(s.up_calls for s in kill.steps)
    return (f"- Draining: {drain.failed} failed set-ups and {drain.dropped} dropped calls, "
            f"{drain.cut_off} records cut off. Killing instead: {kill.failed} failed set-ups "
            f"and {kill.dropped} dropped calls of the {up} calls up on the killed nodes, "
            f"{kill.cut_off} records cut off: what draining buys.\n"
            f"- A killed node's bridged calls are taken up by the other node and its other "
            f"calls cut off and called back (`docs/bench/node-failure.md`); a drained "
            f"node's calls simply go on to their end.")


if __name__ == "__main__":
    main()
