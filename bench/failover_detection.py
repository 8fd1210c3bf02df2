"""Failover detection: hotline's trunk monitor against Kamailio's dispatcher, in one run.

Both watch the same Kamailio carrier with OPTIONS every 15 s. Each trial waits a
random part of the interval, then kills the carrier (SIGKILL: its port closes and
answers ICMP unreachable) or silences it (SIGSTOP), and measures the time until
each monitor declares it down. A third scenario has the call layer report a
failed set-up at the moment of death (hotline only; the dispatcher's nearest
equivalent, ds_mark_dst() in a failure route, needs a call through it). Finally
it counts the OPTIONS each sends to a healthy carrier over two minutes.

    python bench/failover_detection.py [--trials N] [--out docs/bench/failover-detection.md]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.peers import Carrier, RedisServer, free_udp_port, require  # noqa: E402
from trunks.config import TrunkConfig  # noqa: E402
from trunks.health import TrunkState  # noqa: E402
from trunks.monitor import TrunkMonitor  # noqa: E402
from trunks.store import TrunkStore  # noqa: E402

INTERVAL_S = 15.0
DISPATCHER_CFG = ROOT / "bench" / "kamailio" / "dispatcher.cfg"
GIVE_UP_S = 75.0
POLL_S = 0.02
RATE_WINDOW_S = 120.0
"""Window over which OPTIONS to a healthy carrier are counted (several intervals)."""


class Dispatcher(Carrier):
    """Kamailio with the dispatcher module probing one destination."""

    def __init__(self, workdir: Path, destination: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "dispatcher.list").write_text(f"1 sip:{destination} 0 0\n")
        self.ctl = f"unix:{workdir / 'ctl.sock'}"
        super().__init__(workdir, cfg=DISPATCHER_CFG, extra_args=[
            "-A", f'DS_LIST="{workdir / "dispatcher.list"}"', "-A", f'CTL_SOCKET="{self.ctl}"'])
        self.kamcmd = require("kamcmd", "kamailio")

    def start(self) -> None:
        super(Carrier, self).start()  # it answers requests 404, so poll the ctl socket
        deadline = time.monotonic() + 15
        while self.flags() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"dispatcher did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def flags(self) -> str | None:
        done = subprocess.run([self.kamcmd, "-s", self.ctl, "dispatcher.list"],
                              capture_output=True, text=True, timeout=5)
        match = re.search(r"FLAGS:\s*(\w+)", done.stdout)
        return match[1] if match else None

    def is_down(self) -> bool:
        flags = self.flags() or ""
        return "I" in flags or "D" in flags

    def is_up(self) -> bool:
        return (self.flags() or "").startswith("A")


def wait(predicate: Callable[[], bool], limit: float) -> float | None:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > limit:
            return None
        time.sleep(POLL_S)
    return time.monotonic() - start


def race(ours: Callable[[], bool], theirs: Callable[[], bool] | None) -> tuple[float | None, ...]:
    """Seconds until each predicate holds, polled together from now."""
    start = time.monotonic()
    found: dict[str, float | None] = {"ours": None, "theirs": None}
    while time.monotonic() - start < GIVE_UP_S:
        now = time.monotonic() - start
        if found["ours"] is None and ours():
            found["ours"] = now
        if theirs is not None and found["theirs"] is None and theirs():
            found["theirs"] = now
        if found["ours"] is not None and (theirs is None or found["theirs"] is not None):
            break
        time.sleep(POLL_S)
    return found["ours"], found["theirs"]


def per_minute(arrivals: list[float]) -> float:
    """Rate from the mean gap between consecutive requests, free of the window's phase."""
    if len(arrivals) < 2:
        return float("nan")
    return 60.0 * (len(arrivals) - 1) / (max(arrivals) - min(arrivals))


def summary(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    missed = len(values) - len(got)
    if not got:
        return f"not detected within {GIVE_UP_S:.0f} s"
    text = (f"{statistics.mean(got):5.1f} s (min {min(got):.1f}, max {max(got):.1f}, "
            f"n={len(got)})")
    return text + (f", {missed} not detected within {GIVE_UP_S:.0f} s" if missed else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="outages of each kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" /
                        "failover-detection.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-failover-"))

    with contextlib.ExitStack() as stack:  # stops whatever started, whatever fails
        carrier = Carrier(work / "carrier", port=free_udp_port())
        redis_server = RedisServer(work / "redis")
        dispatcher = Dispatcher(work / "dispatcher", carrier.address)
        for peer in (carrier, redis_server, dispatcher):
            stack.callback(peer.stop)
            peer.start()
        client = redis.Redis(unix_socket_path=str(redis_server.socket), decode_responses=True)
        stack.callback(client.close)
        trunk = TrunkConfig(name="carrier", mode="ip", proxy=carrier.address)
        monitor = TrunkMonitor([trunk], TrunkStore(client), "bench")
        stack.callback(monitor.stop)
        monitor.start()
        bench = Bench(carrier, dispatcher, monitor)
        bench.wait_both_up(60)
        ours_rate, theirs_rate = bench.options_rates()
        rng = random.Random(args.seed)
        results = {kind: bench.outages(kind, args.trials, rng)
                   for kind in ("SIGKILL", "SIGSTOP", "SIGKILL + reported set-up failure",
                                "SIGSTOP + reported set-up failure")}
    report(args.out, args.trials, results, ours_rate, theirs_rate)


class Bench:
    """The measurements, on peers that are already running."""

    def __init__(self, carrier: Carrier, dispatcher: Dispatcher, monitor: TrunkMonitor) -> None:
        self.carrier, self.dispatcher, self.monitor = carrier, dispatcher, monitor

    def ours(self, state: TrunkState) -> Callable[[], bool]:
        return lambda: self.monitor.snapshots()["carrier"].state is state

    def wait_both_up(self, limit: float) -> None:
        if wait(lambda: self.ours(TrunkState.UP)() and self.dispatcher.is_up(), limit) is None:
            raise RuntimeError(f"the monitors did not both see the carrier up within {limit} s")

    def options_rates(self) -> tuple[float, float]:
        """OPTIONS per minute to the healthy carrier: (hotline, dispatcher)."""
        print(f"Counting OPTIONS to a healthy carrier for {RATE_WINDOW_S:.0f} s ...", flush=True)
        start = time.time()
        time.sleep(RATE_WINDOW_S)
        arrivals = [t for t in self.carrier.request_times("OPTIONS") if t >= start]
        theirs = [t for t in self.carrier.request_times("OPTIONS", self.dispatcher.port)
                  if t >= start]
        return per_minute(sorted(set(arrivals) - set(theirs))), per_minute(theirs)

    def outages(self, kind: str, trials: int, rng: random.Random) -> dict[str, list[float | None]]:
        """Seconds to detect `trials` outages of `kind`, for each monitor."""
        reported, killed = "reported" in kind, kind.startswith("SIGKILL")
        found: dict[str, list[float | None]] = {"ours": [], "theirs": []}
        for trial in range(trials):
            time.sleep(rng.uniform(0, INTERVAL_S))
            if killed:
                self.carrier.kill()
            else:
                self.carrier.pause()
            if reported:
                self.monitor.report_failure("carrier", "INVITE: no provisional reply")
            ours, theirs = race(self.ours(TrunkState.DOWN),
                                None if reported else self.dispatcher.is_down)
            found["ours"].append(ours)
            found["theirs"].append(theirs)
            print(f"{kind} #{trial + 1}: hotline {ours} s, dispatcher {theirs} s", flush=True)
            if killed:
                self.carrier.start()
            else:
                self.carrier.resume()
            self.wait_both_up(90)
        return found


def report(out: Path, trials: int, results: dict[str, dict[str, list[float | None]]],
           ours_rate: float, theirs_rate: float) -> None:
    rows = ["| outage | hotline monitor | Kamailio dispatcher | ratio (dispatcher / hotline) |",
            "|---|---|---|---|"]
    for kind, found in results.items():
        theirs = "not measured (needs a call through it)" if "reported" in kind else summary(
            found["theirs"])
        ours_ok = [v for v in found["ours"] if v is not None]
        theirs_ok = [v for v in found["theirs"] if v is not None]
        ratio = (f"{statistics.mean(theirs_ok) / statistics.mean(ours_ok):.1f}x"
                 if ours_ok and theirs_ok and "reported" not in kind else "-")
        rows.append(f"| {kind} | {summary(found['ours'])} | {theirs} | {ratio} |")
    rows.append(f"| OPTIONS per minute to a healthy carrier (mean gap over "
                f"{RATE_WINDOW_S:.0f} s) | {ours_rate:.2f} | {theirs_rate:.2f} | - |")
    table = "\n".join(rows)
    print("\n" + table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"""# Failover detection: hotline vs Kamailio dispatcher

Measured by `make bench` (`bench/failover_detection.py`) on
{datetime.date.today().isoformat()}, {trials} outages of each kind at a random phase of the
probe interval. Both monitors probe the same Kamailio carrier with OPTIONS every 15 s;
hotline with its defaults (confirmation probes every 0.5 s, 1 s timeout, DOWN after 3
failures), the dispatcher with `ds_ping_interval=15`, `ds_probing_mode=1` and tm's
default 30 s `fr_timer`. Times run from the outage to the monitor marking the trunk
down (hotline: DOWN; dispatcher: flags I or D in `dispatcher.list`, polled every 20 ms).

Targets: a reported failure leads to DOWN within 3 s; an idle trunk goes DOWN within
one interval plus 3 s (18 s); at most one OPTIONS per 10 s (6 per minute) to a healthy trunk.

{table}
""")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
