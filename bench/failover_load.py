"""Failover under load: hotline against Kamailio's dispatcher while the primary carrier dies.

sipp places calls steadily (5 per second, each held 10 s) to an on-call phone (a sipp
UAS that answers at once) behind two Kamailio carriers, a primary and a backup; some
seconds in, the primary dies: killed (SIGKILL: its port closes and answers ICMP port
unreachable) in one run, silenced (SIGSTOP) in another. Two systems put the calls
through, one after the other, each with fresh peers:

- hotline: the callers come in through the backup carrier; the flow's forward node
  rings the phone through the best usable trunk (the primary while it is up) and, when
  a set-up fails on a trunk, at once through the next one;
- Kamailio's dispatcher (bench/kamailio/dispatcher_failover.cfg): priority order, a
  2 s branch timeout, a failure route that marks the carrier inactive and moves the
  call on with ds_next_dst.

A set-up fails when a caller is not put through to the phone. Its latency runs from
the caller's INVITE (sipp's message trace) to the phone's 200 OK reaching the system
that forwards the call (hotline: its log line "Call ... forwarded to ..."; the
dispatcher relays that 200 to the caller at once, so the caller's trace has it). The
added latency of a call is its latency less the median of the calls placed before the
kill; it is reported for the calls placed in the failover window after the kill.

    python bench/failover_load.py [--rate 5] [--calls 150] [--hold 10] [--kill-at 12]
                                  [--window 10] [--outage kill|stop|both]
                                  [--out docs/bench/failover-load.md]

Longer than a module should be (about 500 lines): the two rigs share their load, their
timing and their report, and are meant to be read side by side in one file.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sipp_trace import header, messages  # noqa: E402
from ivr.records import CallRecord, CallStore  # noqa: E402
from ivr.server import Server  # noqa: E402
from ivr.settings import load_settings  # noqa: E402
from tests.peers import (  # noqa: E402
    Carrier,
    RedisServer,
    end_process,
    forward_flow,
    free_udp_port,
    require,
    staff_roster,
    started,
    wait_udp_bound,
)

CALLER_SCENARIO = ROOT / "bench" / "sipp" / "uac_setup_hold.xml"
STAFF_SCENARIO = ROOT / "bench" / "sipp" / "uas_answer_hold.xml"
DISPATCHER_CFG = ROOT / "bench" / "kamailio" / "dispatcher_failover.cfg"
PRIMARY_HOST, BACKUP_HOST, DISPATCHER_HOST = "127.0.0.3", "127.0.0.4", "127.0.0.5"
TARGET_FAILED = 0
TARGET_ADDED_P99_S = 1.5
DELAYED_S = 0.5
"""Added latency above which a call counts as delayed by the failover."""
OUTAGES = {"kill": "killed", "stop": "silenced"}
READY_TIMEOUT_S = 30.0
RECORDS_TIMEOUT_S = 30.0
FLOW = forward_flow(ring_s=10)
FORWARDED = re.compile(r"^Call (\S+) forwarded to .* through (\S+)$")


@dataclass(frozen=True)
class Load:
    rate: float
    calls: int
    hold_s: float
    kill_at_s: float
    window_s: float
    outage: str = "kill"
    """"kill" (SIGKILL: the port closes and answers ICMP unreachable) or "stop" (SIGSTOP:
    the carrier goes silent)."""


@dataclass(frozen=True)
class Setup:
    """One caller's call: when it started and how its set-up went."""

    call_id: str
    sent_at: float
    """The caller's first INVITE, Unix seconds."""
    setup_s: float | None
    """To the phone's answer reaching the forwarding system; None: the set-up failed."""
    carrier: str | None
    """The carrier that carried the call to the phone ("primary" or "backup")."""
    tried_dead: bool
    """The call was first tried on the dead primary."""


@dataclass
class Run:
    """One system's calls, and when its primary carrier was killed (Unix seconds)."""

    system: str
    killed_at: float
    setups: list[Setup]
    answered_by_staff: int

    @property
    def failed(self) -> list[Setup]:
        return [s for s in self.setups if s.setup_s is None]

    def baseline_s(self) -> float:
        """The median set-up latency of the calls placed before the kill."""
        before = [s.setup_s for s in self.setups
                  if s.sent_at < self.killed_at and s.setup_s is not None]
        return statistics.median(before)

    def added_s(self, window_s: float) -> list[float]:
        """Added set-up latency of the calls placed in the window after the kill."""
        base = self.baseline_s()
        return [s.setup_s - base for s in self.setups if s.setup_s is not None
                and self.killed_at <= s.sent_at < self.killed_at + window_s]


def caller_trace(workdir: Path) -> dict[str, tuple[float, float | None]]:
    """Per Call-ID, from sipp's -trace_msg log: first INVITE sent, 200 to it received."""
    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    for when, received, message in messages(workdir):
        call_id = header(message, "Call-ID")
        first = message.split("\n", 1)[0]
        if not received and first.startswith("INVITE "):
            sent.setdefault(call_id, when)
        elif received and first.startswith("SIP/2.0 200") and \
                header(message, "CSeq").endswith("INVITE"):
            answered.setdefault(call_id, when)
    return {call_id: (at, answered.get(call_id)) for call_id, at in sent.items()}


def staff_invites(workdir: Path) -> dict[str, str]:
    """Per Call-ID of an INVITE the phone received, the host of the carrier it came by
    (its topmost Record-Route)."""
    found: dict[str, str] = {}
    for _, received, message in messages(workdir):
        if received and message.startswith("INVITE "):
            route = re.search(r"^Record-Route:\s*<sip:([0-9.]+):", message, re.M | re.I)
            found[header(message, "Call-ID")] = route[1] if route else ""
    return found


class Staff:
    """The on-call phone: a sipp UAS answering every call at once, until stopped."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_udp_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [require("sipp", "sip-tester"), "-sf", str(STAFF_SCENARIO), "-i", "127.0.0.1",
             "-p", str(self.port), "-mp", str(free_udp_port()), "-nostdin", "-trace_msg",
             "-trace_err"], cwd=self.workdir, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        wait_udp_bound(self.port)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def stop(self) -> None:
        """End the phone; calls still waiting for a BYE (whose path died) end with it."""
        end_process(self.process)


class Dispatcher(Carrier):
    """Kamailio's dispatcher in front of the carriers, the first one preferred."""

    def __init__(self, workdir: Path, carriers: list[Carrier]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        # algorithm 8 tries the highest priority first
        (workdir / "dispatcher.list").write_text("".join(
            f"1 sip:{c.address} 0 {len(carriers) - i}\n" for i, c in enumerate(carriers)))
        self.ctl = f"unix:{workdir / 'ctl.sock'}"
        super().__init__(workdir, host=DISPATCHER_HOST, cfg=DISPATCHER_CFG, extra_args=[
            "-A", f'DS_LIST="{workdir / "dispatcher.list"}"', "-A", f'CTL_SOCKET="{self.ctl}"'])

    def all_active(self) -> bool:
        done = subprocess.run([require("kamcmd", "kamailio"), "-s", self.ctl, "dispatcher.list"],
                              capture_output=True, text=True, timeout=5)
        flags = re.findall(r"FLAGS:\s*(\w+)", done.stdout)
        return bool(flags) and all(f.startswith("A") for f in flags)

    def failovers(self) -> set[str]:
        """Call-IDs the failure route moved to the next carrier."""
        return set(re.findall(r"failover from \S+ at \S+ call-id (\S+)",
                              self.log.read_text(errors="replace")))


class ForwardLog(logging.Handler):
    """When the flow put each call through, from its INFO line "Call <id> forwarded to
    <person> through <trunk>", logged as the phone's 200 OK arrives."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.times: dict[str, tuple[float, str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        match = FORWARDED.match(record.getMessage())
        if match:
            self.times[match[1]] = (record.created, match[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5.0, help="calls per second")
    parser.add_argument("--calls", type=int, default=150)
    parser.add_argument("--hold", type=float, default=10.0, help="seconds each call lasts")
    parser.add_argument("--kill-at", type=float, default=12.0,
                        help="seconds after the first call that the primary is killed")
    parser.add_argument("--window", type=float, default=10.0,
                        help="seconds after the kill whose calls make the failover window")
    parser.add_argument("--outage", choices=["kill", "stop", "both"], default="both",
                        help="how the primary dies: SIGKILL, SIGSTOP, or one run of each")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" /
                        "failover-load.md")
    args = parser.parse_args()
    outages = ["kill", "stop"] if args.outage == "both" else [args.outage]
    logging.basicConfig(level=logging.WARNING)
    for handler in logging.getLogger().handlers:  # the INFO lines the bench reads stay quiet
        handler.setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-failover-load-") as directory:
        work = Path(directory)
        results = []
        for outage in outages:
            load = Load(args.rate, args.calls, args.hold, args.kill_at, args.window, outage)
            results.append((load, [run_hotline(load, work / outage / "hotline"),
                                   run_dispatcher(load, work / outage / "dispatcher")]))
    report(args.out, results)


def run_hotline(load: Load, work: Path) -> Run:
    """Callers through the backup carrier to the hotline, which forwards each call
    through its trunks: the primary first, the backup when a set-up fails there."""
    print("hotline ...", flush=True)
    forwards = ForwardLog()
    session_log = logging.getLogger("ivr.flow.runner")
    with contextlib.ExitStack() as stack:
        session_log.addHandler(forwards)
        stack.callback(session_log.setLevel, session_log.level)
        stack.callback(session_log.removeHandler, forwards)
        session_log.setLevel(logging.INFO)
        staff = started(stack, Staff(work / "staff"))
        listen = {"primary": free_udp_port(), "backup": free_udp_port()}
        primary = started(stack, Carrier(work / "primary", host=PRIMARY_HOST,
                                          staff=staff.address))
        backup = started(stack, Carrier(work / "backup", host=BACKUP_HOST,
                                         hotline=("127.0.0.1", listen["backup"]),
                                         staff=staff.address))
        redis_server = started(stack, RedisServer(work / "redis"))
        server = Server(load_settings(_hotline_config(work, redis_server, {
            "primary": (primary, listen["primary"]), "backup": (backup, listen["backup"])},
            people=int(load.rate * (load.hold_s + 2)) + 10)))
        stack.callback(server.stop)
        server.start()
        monitor = server.monitor
        assert monitor is not None
        _wait(lambda: all(s.state.value == "up" for s in monitor.snapshots().values()),
              "the hotline's trunks up")
        killed_at = _call_and_kill(load, backup.address, primary, work / "caller")
        client = redis.Redis(unix_socket_path=str(redis_server.socket), decode_responses=True)
        stack.callback(client.close)
        store = CallStore(client)
        _wait(lambda: len([r for r in store.recent(load.calls + 10) if r.ended_at]) >= load.calls,
              "every call's record", RECORDS_TIMEOUT_S)
        records = {r.id: r for r in store.recent(load.calls + 10)}
        staff.stop()
    setups = [_hotline_setup(call_id, sent_at, answered_at, records.get(call_id),
                             forwards.times.get(call_id))
              for call_id, (sent_at, answered_at) in caller_trace(work / "caller").items()]
    return Run("hotline", killed_at, setups, len(staff_invites(work / "staff")))


def _hotline_setup(call_id: str, sent_at: float, answered_at: float | None,
                   record: CallRecord | None, forwarded: tuple[float, str] | None) -> Setup:
    """A call put through if the hotline answered the caller and forwarded the call (its
    record says so; the log line says when, and through which trunk)."""
    attempts = record.forward_attempts if record is not None else []
    tried_dead = any(a["trunk"] == "primary" and a["outcome"] == "trunk failed"
                     for a in attempts)
    if answered_at is None or forwarded is None or record is None or \
            record.outcome != "forwarded":
        return Setup(call_id, sent_at, None, None, tried_dead)
    return Setup(call_id, sent_at, forwarded[0] - sent_at, forwarded[1], tried_dead)


def run_dispatcher(load: Load, work: Path) -> Run:
    """Callers to Kamailio's dispatcher, which relays each call to the primary carrier,
    or the backup when its failure route moves the call on."""
    print("Kamailio dispatcher ...", flush=True)
    with contextlib.ExitStack() as stack:
        staff = started(stack, Staff(work / "staff"))
        primary = started(stack, Carrier(work / "primary", host=PRIMARY_HOST,
                                          staff=staff.address))
        backup = started(stack, Carrier(work / "backup", host=BACKUP_HOST,
                                         staff=staff.address))
        dispatcher = started(stack, Dispatcher(work / "dispatcher", [primary, backup]))
        _wait(dispatcher.all_active, "the dispatcher's carriers active")
        killed_at = _call_and_kill(load, dispatcher.address, primary, work / "caller")
        time.sleep(1.0)  # the last BYEs reach the phone
        staff.stop()
        moved = dispatcher.failovers()
    carriers = {PRIMARY_HOST: "primary", BACKUP_HOST: "backup"}
    reached = staff_invites(work / "staff")
    setups = [Setup(call_id, sent_at, None if answered_at is None else answered_at - sent_at,
                    carriers.get(reached.get(call_id, "")), call_id in moved)
              for call_id, (sent_at, answered_at) in caller_trace(work / "caller").items()]
    return Run("Kamailio dispatcher", killed_at, setups, len(reached))


def _call_and_kill(load: Load, target: str, primary: Carrier, workdir: Path) -> float:
    """Run the callers against `target`, kill `primary` `load.kill_at_s` in; return the
    (Unix) time of the kill."""
    workdir.mkdir(parents=True, exist_ok=True)
    limit_s = load.calls / load.rate + load.hold_s + 60
    caller = subprocess.Popen(
        [require("sipp", "sip-tester"), target, "-sf", str(CALLER_SCENARIO), "-s",
         "1000", "-r", f"{load.rate:g}", "-m", str(load.calls), "-l", str(load.calls),
         "-d", str(int(load.hold_s * 1000)), "-i", "127.0.0.1", "-p", str(free_udp_port()),
         "-mp", str(free_udp_port()), "-nostdin", "-trace_msg", "-trace_err",
         "-timeout", f"{limit_s:.0f}s"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(load.kill_at_s)
        killed_at = time.time()
        if load.outage == "kill":
            primary.kill()
        else:
            primary.pause()
        print(f"  primary carrier {OUTAGES[load.outage]} {load.kill_at_s:g} s in", flush=True)
        caller.wait(limit_s + 10)
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
    return killed_at


def _hotline_config(work: Path, redis_server: RedisServer,
                    trunks: dict[str, tuple[Carrier, int]], people: int) -> Path:
    (work / "ivr.yaml").write_text(FLOW)
    (work / "oncall.yaml").write_text(staff_roster(people))
    lines = [f'  - {{name: {name}, mode: ip, proxy: "{carrier.address}", '
             f'listen: "127.0.0.1:{listen}", priority: {i + 1}}}'
             for i, (name, (carrier, listen)) in enumerate(trunks.items())]
    path = work / "hotline.yaml"
    path.write_text(f"node: bench\ndata_dir: {work / 'var'}\nlog_level: WARNING\n"
                    f'redis: {{url: "{redis_server.url}"}}\ntrunks:\n' + "\n".join(lines) + "\n")
    return path


def _wait(predicate: Callable[[], bool], what: str, limit: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: timed out after {limit:g} s waiting for {what}")
        time.sleep(0.05)


PERCENTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}


def summary(run: Run, load: Load) -> dict[str, str]:
    """The report's column for one system."""
    added = run.added_s(load.window_s)
    after = [s for s in run.setups if s.sent_at >= run.killed_at and s.setup_s is not None]
    column = {"calls placed": str(len(run.setups)),
              "answered by the phone": str(run.answered_by_staff),
              "failed set-ups": str(len(run.failed)),
              "set-up latency before the outage, median": f"{run.baseline_s() * 1000:.1f} ms"}
    for name, q in PERCENTILES.items():
        column[f"added latency in the window, {name}"] = (
            f"{round(float(np.percentile(added, q)), 2) + 0.0:.2f} s" if added else "-")
    column |= {
        f"calls delayed more than {DELAYED_S:g} s": str(sum(a > DELAYED_S for a in added)),
        "calls first tried on the dead primary": str(sum(s.tried_dead for s in run.setups)),
        "calls after the outage put through by the backup":
            f"{sum(s.carrier == 'backup' for s in after)} of {len(after)}",
        "target met": "yes" if met(run, load) else "no"}
    return column


def met(run: Run, load: Load) -> bool:
    added = run.added_s(load.window_s)
    return len(run.failed) <= TARGET_FAILED and bool(added) and \
        float(np.percentile(added, PERCENTILES["p99"])) <= TARGET_ADDED_P99_S


def ratio(ours: Run, theirs: Run, load: Load, q: float) -> str:
    """The dispatcher's added latency over hotline's at percentile `q`."""
    a, b = ours.added_s(load.window_s), theirs.added_s(load.window_s)
    if not a or not b or np.percentile(a, q) < 0.01:
        return "-"
    return f"{np.percentile(b, q) / np.percentile(a, q):.1f}x"


def table(load: Load, runs: list[Run]) -> str:
    ours, theirs = runs
    columns = summary(ours, load), summary(theirs, load)
    targets = {"failed set-ups": str(TARGET_FAILED),
               "added latency in the window, p99": f"<= {TARGET_ADDED_P99_S:g} s"}
    lines = ["| measure | hotline | Kamailio dispatcher | ratio (dispatcher / hotline) "
             "| target |", "|---|---|---|---|---|"]
    for name in columns[0]:
        q = PERCENTILES.get(name.rsplit(" ", 1)[-1]) if name.startswith("added") else None
        lines.append(f"| {name} | {columns[0][name]} | {columns[1][name]} | "
                     f"{'-' if q is None else ratio(ours, theirs, load, q)} | "
                     f"{targets.get(name, '-')} |")
    return "\n".join(lines)


def report(out: Path, results: list[tuple[Load, list[Run]]]) -> None:
    load = results[0][0]
    sections = []
    for each, runs in results:
        how = ("SIGKILL: its port closes and answers ICMP port unreachable" if each.outage ==
               "kill" else "SIGSTOP: it goes silent, answering nothing")
        sections.append(f"## The primary {OUTAGES[each.outage]} ({how})\n\n"
                        f"{table(each, runs)}\n")
        print("\n" + sections[-1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"""# Failover under load: hotline vs Kamailio dispatcher

Measured by `bench/failover_load.py` on {datetime.date.today().isoformat()}: sipp places
{load.calls} calls at {load.rate:g} per second, each held {load.hold_s:g} s, to an on-call
phone (a sipp UAS answering at once) behind two Kamailio carriers; {load.kill_at_s:g} s after
the first call the primary carrier dies: killed in one run, silenced in the other. The same
load runs through each system with fresh peers, one after the other:

- hotline: callers come in through the backup carrier; the forward node rings the phone
  through the primary trunk (priority 1) while it is usable and through the backup
  (priority 2) when a set-up fails; default probing (OPTIONS every 15 s) and the 1 s
  wait for a provisional reply;
- Kamailio's dispatcher (`bench/kamailio/dispatcher_failover.cfg`): algorithm 8 (priority
  order), 2 s branch timeout (`fr_timer`), a failure route on 408, 5xx or timeout that
  marks the carrier inactive (`ds_mark_dst("ip")`) and moves on with `ds_next_dst()`;
  OPTIONS probing every 15 s.

Set-up latency runs from the caller's INVITE to the phone's 200 OK reaching the system
that forwards the call. A set-up fails when the caller is not put through to the phone.
Added latency is a call's set-up latency less the median before the outage, over the calls
placed in the {load.window_s:g} s after it. Targets: {TARGET_FAILED} failed set-ups,
added latency p99 <= {TARGET_ADDED_P99_S:g} s.

A killed carrier's port answers the INVITE with ICMP port unreachable, which the hotline's
endpoint reads from its socket's error queue and fails the set-up at once; the dispatcher
waits out its 2 s branch timeout. A silenced carrier answers nothing, so the hotline waits
its 1 s for a provisional reply (the dispatcher its 2 s). Either way the first failure makes
the primary suspect in the hotline's monitor (inactive in the dispatcher), so the calls
after it go straight to the backup.

{chr(10).join(sections)}""")
    print(f"\nwritten to {out}")

if __name__ == "__main__":
    main()
