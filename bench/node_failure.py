"""Node failure: a hotline node killed under load, against the front door's dispatcher alone.

sipp places calls (300 at 4 per second by default, each held 20 s) through a Kamailio
carrier and the shipped front door, from distinct caller numbers; one caller in three
presses 1 half a second in. Some seconds in (35 by default), one of the two nodes behind
the front door is killed with SIGKILL. The same load runs through two systems, one after
the other, each with fresh peers (bench/cluster.py):

- hotline: two `hotline serve` nodes on one redis-server. Key 1 forwards the caller to
  the on-call staff (a sipp phone behind carrier B) and bridges the call in the node; the
  others stay in the menu. Call-backs are on, to every caller number, `delay_s` after the
  cut-off, through carrier B to the same sipp phone;
- the dispatcher alone (the anchor, with no recovery): the same front door in front of
  two sipp UAS nodes that answer and hold.

Measured (bench/node_failure_measures.py) from the callers' and the phone's sipp traces,
the front door's log and the hotline's records in Redis: failed set-ups after the kill,
the front door's detection time, the callers cut off and how many were called back, how
soon and how many times, the bridged calls that survived, and the records left open or
lost. Writes docs/bench/node-failure.md.

    python bench/node_failure.py [--calls 300] [--rate 4] [--hold 20] [--kill-at 35]
                                 [--press-every 3] [--delay 5] [--keep DIR]
                                 [--out docs/bench/node-failure.md]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import inspect
import math
import re
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster import SETTLE_TIMEOUT_S, Load, run_dispatcher, run_hotline  # noqa: E402
from bench.cluster_report import check_peers, run_context  # noqa: E402
from bench.node_failure_measures import HELD_S, CallerCall, Measures, measure  # noqa: E402
from failover.callbacks import CLAIM_S, Callbacks  # noqa: E402
from ivr.calls.cut_off import POLL_S  # noqa: E402
from ivr.calls.takeover import PROBE_S, SCAN_S  # noqa: E402
from ivr.nodes import LEASE_S  # noqa: E402

CALLBACK_GRACE_S = 15.0
"""Target: every cut-off caller rung within `delay_s` plus this, from the kill."""
WINDOW_EXTRA_S = 2.0
"""Target: a set-up in the front door's detection window takes at most this much longer."""
SURVIVE_SHARE = 0.9
"""Target: this share of the bridged calls up on the killed node survive it."""
CLAIM_BATCH = int(inspect.signature(Callbacks.claim_due).parameters["limit"].default)
"""How many due call-backs a node claims per poll (`POLL_S`)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rate", type=float, default=4.0, help="calls per second")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds each caller holds")
    parser.add_argument("--kill-at", type=float, default=35.0,
                        help="seconds after the callers start that a node is killed")
    parser.add_argument("--press-every", type=int, default=3,
                        help="one caller in this many presses 1 (forwarded on the hotline)")
    parser.add_argument("--delay", type=float, default=5.0,
                        help="the hotline's failover.callback.delay_s")
    parser.add_argument("--keep", type=Path,
                        help="keep the peers' files in this (new) directory")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" /
                        "node-failure.md")
    args = parser.parse_args()
    load = Load(args.calls, args.rate, args.hold, args.kill_at, args.press_every, args.delay)
    check_peers()
    about = run_context()
    with tempfile.TemporaryDirectory(prefix="bench-node-failure-") as directory:
        work = args.keep or Path(directory)
        started = time.monotonic()
        print("hotline ...", flush=True)
        hotline = run_hotline(load, work / "hotline")
        middle = time.monotonic()
        print("the dispatcher alone ...", flush=True)
        anchor = run_dispatcher(load, work / "dispatcher")
        durations = (middle - started, time.monotonic() - middle)
        ours, theirs = measure(hotline), measure(anchor)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(load, ours, theirs, about, durations))
    print(f"\n{table(load, ours, theirs)}\n\nwritten to {args.out}")


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f} s"


def _of(part: int | None, whole: int) -> str:
    if part is None:
        return "-"
    return f"{part} of {whole}" + (f" ({100 * part / whole:.0f}%)" if whole else "")


def _range(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} s / {max(values):.1f} s"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or math.isnan(ours) or ours < 0.001:
        return "-"
    return f"{theirs / ours:.1f}x"


def setup_rows(m: Measures) -> dict[str, str]:
    """The rows about new calls: set-ups and the front door's detection."""
    before, window, after = m.failed
    return {
        "calls placed / answered": f"{m.calls} / {m.answered}",
        "failed set-ups placed before the kill": str(before),
        "front door detection time (kill to node marked down)":
            f"{_s(m.detection_s)} (by {m.detected_by})" if m.detected_by else "-",
        "calls placed in the detection window": str(m.window_calls),
        "failed set-ups placed in the window": str(window),
        "failed set-ups placed after detection": str(after),
        "set-up time before the kill, median": _s(m.setup_before_s, 3),
        "set-up time in the window, max": _s(m.setup_window_max_s),
        "set-up time after detection, p99": _s(m.setup_after_p99_s, 3),
        "calls the front door moved off the killed node (1 s each)": str(m.moved)}


def recovery_rows(m: Measures, load: Load) -> dict[str, str]:
    """The rows about the calls up on the killed node, and what became of them."""
    cut, hotline = len(m.cut_off), m.closed is not None
    limit = load.delay_s + CALLBACK_GRACE_S
    none = "-" if hotline else "- (none)"
    return {
        "calls up on the killed node at the kill": str(len(m.up)),
        "... of them callers who had pressed 1": str(m.pressed),
        "... re-INVITEd by the other node (taken up)": str(m.taken_up),
        "... still up when the caller hung up (BYE answered 200)": _of(m.survived, len(m.up)),
        "bridged calls up on the killed node": str(m.bridged) if hotline else "- (no bridging)",
        f"... their callers holding on {HELD_S:g} s past the kill, and of those survived":
            _of(m.bridged_survived, m.bridged_held or 0) if hotline else "-",
        "calls re-INVITEd after their callers had hung up": str(m.reinvited_late)
        if hotline else "-",
        "staff legs up at the kill that never got a BYE":
            _of(m.staff_stranded, m.bridged or 0) if hotline else "- (no bridging)",
        "calls cut off (up on the killed node, not surviving it)": str(cut),
        "kill to the cut-off calls' records closed, median / max":
            _range(m.closed_s) if hotline else none,
        "cut-off callers called back": _of(m.called_back or 0, cut),
        "... exactly once": _of(m.called_back_once or 0, cut),
        f"... within delay_s + {CALLBACK_GRACE_S:g} s ({limit:g} s) of the kill":
            _of(sum(r <= limit for r in m.ring_s), cut),
        "kill to call-back ringing, median / max": _range(m.ring_s) if hotline else none,
        "duplicate call-backs": str(m.duplicates) if hotline else none,
        "call-backs to callers not cut off": str(m.spurious) if hotline else none,
        "records closed \"cut off: node failure\"": _closed(m) if hotline else none,
        "records left open / lost": f"{m.open_records} / {m.lost_records}" if hotline else none}


def _closed(m: Measures) -> str:
    if not m.closed_elsewhere:
        return f"{m.closed} (all of calls cut off)"
    return f"{m.closed} ({m.closed_elsewhere} of calls not up on the killed node)"


def table(load: Load, ours: Measures, theirs: Measures) -> str:
    columns = [setup_rows(m) | recovery_rows(m, load) for m in (ours, theirs)]
    ratios = {"front door detection time (kill to node marked down)":
              _ratio(ours.detection_s, theirs.detection_s),
              "set-up time in the window, max":
              _ratio(ours.setup_window_max_s, theirs.setup_window_max_s)}
    lines = ["| measure | hotline | dispatcher alone | dispatcher / hotline |",
             "|---|---|---|---|"]
    lines += [f"| {name} | {columns[0][name]} | {columns[1][name]} | {ratios.get(name, '-')} |"
              for name in columns[0]]
    return "\n".join(lines)


def targets(load: Load, m: Measures) -> list[tuple[str, str, bool]]:
    """(target, what the hotline measured, met) for each target of the benchmark."""
    cut, limit = len(m.cut_off), load.delay_s + CALLBACK_GRACE_S
    in_time = sum(r <= limit for r in m.ring_s)
    added = None if m.setup_window_max_s is None else m.setup_window_max_s - m.setup_before_s
    survived = (m.bridged_survived or 0) / m.bridged_held if m.bridged_held else 0.0
    return [
        ("0 failed set-ups once the front door has noticed", str(m.failed[2]), m.failed[2] == 0),
        (f"none fails in the detection window, none more than {WINDOW_EXTRA_S:g} s slower",
         f"{m.failed[1]} failed; the slowest {_s(added)} over the median",
         m.failed[1] == 0 and (added is None or added <= WINDOW_EXTRA_S)),
        (f"every cut-off caller called back exactly once within delay_s + "
         f"{CALLBACK_GRACE_S:g} s of the kill", f"{m.called_back_once} of {cut} exactly once, "
         f"{in_time} of {cut} in time, {m.duplicates} duplicates",
         m.called_back_once == cut and in_time == cut and m.duplicates == 0),
        ("0 records lost or left open", f"{m.lost_records} lost, {m.open_records} open",
         m.lost_records == 0 and m.open_records == 0),
        (f"at least {SURVIVE_SHARE:.0%} of the bridged calls survive the kill (those whose "
         f"callers hold on {HELD_S:g} s past it)",
         f"{m.bridged_survived} of {m.bridged_held} ({survived:.0%})", survived >= SURVIVE_SHARE)]


def findings(load: Load, ours: Measures, theirs: Measures) -> list[str]:
    """What the numbers show, sentence by sentence from the numbers themselves."""
    failed = [sum(m.failed[1:]) for m in (ours, theirs)]
    cut = len(ours.cut_off)
    spread = max(ours.ring_s) - min(ours.ring_s) if ours.ring_s else 0.0
    room = load.delay_s + CALLBACK_GRACE_S - max(ours.ring_s, default=math.nan)
    most = CLAIM_BATCH / POLL_S * max(room, 0) + cut
    return [
        f"Detection is the dispatcher's: the front door marked the killed node down "
        f"{_s(ours.detection_s)} after the kill with hotline nodes behind it and "
        f"{_s(theirs.detection_s)} with plain ones ({_noticers(ours, theirs)}). The hotline "
        "neither adds to it nor takes from it. A call "
        "sent to the dead node waits the 1 s `fr_timer` and moves on; with no call to notice "
        "it, an OPTIONS probe (every 2 s, 1 s to answer) takes 1 to 3 s.",
        f"Set-ups: {failed[0]} failed after the kill on the hotline, {failed[1]} with the "
        f"dispatcher alone; the {ours.moved} and {theirs.moved} calls that met the dead node "
        f"were answered by the other one after the 1 s wait "
        f"({_s(ours.setup_window_max_s)} and {_s(theirs.setup_window_max_s)} at most).",
        _survival_finding(ours, theirs),
        f"What the hotline adds is the recovery, which the anchor does not have: the other "
        f"node closed the {cut} cut-off calls' records {_range(ours.closed_s)} (median / max) "
        f"after the kill (its lease lapsing {LEASE_S:g} s after the dead node last renewed it, the "
        f"next {SCAN_S:g} s scan, the fence's OPTIONS answered at once by ICMP port "
        f"unreachable) and rang {ours.called_back} of {cut} "
        f"cut-off callers, {ours.called_back_once} exactly once, {_range(ours.ring_s)} after "
        f"the kill: `delay_s` ({load.delay_s:g} s) later, {CLAIM_BATCH} at a time every "
        f"{POLL_S:g} s, so the last rang {spread:.1f} s after the first. That leaves "
        f"{room:.1f} s of the target's room at {cut} cut-off callers; at {CLAIM_BATCH} a "
        f"second, a node with about {most:.0f} calls up when it dies would use it all (an "
        "estimate from these numbers, not measured).",
    ]


def _survival_finding(ours: Measures, theirs: Measures) -> str:
    """What became of the calls up on the killed node, on both sides."""
    up = (f"{ours.survived} of {len(ours.up)} on the hotline, {theirs.survived} of "
          f"{len(theirs.up)} with the dispatcher alone")
    if ours.survived or theirs.survived:
        text = (f"Calls up on the killed node still up when their callers hung up: {up}; the "
                f"hotline's other node re-INVITEd {ours.taken_up} callers to take their calls "
                "up.")
    else:
        text = (f"No call up on the killed node outlived it ({up}): its SIP dialog and media "
                "were in the process that died, and the callers' BYEs came back "
                f"{_statuses(ours.cut_off)} from the front door.")
    met = (ours.bridged_survived or 0) >= SURVIVE_SHARE * (ours.bridged_held or 0) > 0
    text += (f" Of the {ours.bridged} bridged calls, {ours.bridged_held} had callers who held "
             f"on {HELD_S:g} s past the kill, and {ours.bridged_survived} of those survived: the "
             f"{SURVIVE_SHARE:.0%} target is {'met' if met else 'missed'}.")
    if ours.reinvited_late:
        text += (f" {ours.reinvited_late} callers who hung up while their node was dead (their "
                 "BYE lost) were re-INVITEd afterwards and answered 481; "
                 f"{ours.late_called_back} of them were then called back, like the cut-off "
                 "callers, although they had hung up themselves.")
    if ours.staff_stranded:
        text += (f" {ours.staff_stranded} staff legs up at the kill never got a BYE: nothing "
                 "told those on-call staff that their caller was gone, and a cut-off caller's "
                 "call-back starts at `callback.node` (here a goodbye), not back with the "
                 "person they were talking to.")
    return text


def _statuses(calls: list[CallerCall]) -> str:
    """The final responses to the callers' BYEs, counted: "408 (41)"."""
    counts = collections.Counter(c.bye_status for c in calls)
    return ", ".join(f"{status or 'nothing'} ({n})" for status, n in counts.most_common())


def _noticers(ours: Measures, theirs: Measures) -> str:
    if ours.detected_by == theirs.detected_by:
        return f"both noticed by {ours.detected_by}"
    return f"noticed by {ours.detected_by} and by {theirs.detected_by}"


def reflow(markdown: str, width: int = 92) -> str:
    """Rewrap the paragraphs and list items of `markdown` to `width` (tables and headings
    as they are), so that the numbers put into the text do not leave ragged lines."""
    blocks = []
    for block in markdown.strip().split("\n\n"):
        if block.startswith(("|", "#")):
            blocks.append(block)
            continue
        items = re.split(r"\n(?=- )", block)
        blocks.append("\n".join(textwrap.fill(
            " ".join(item.split()), width, subsequent_indent="  " if item.startswith("- ")
            else "", break_long_words=False, break_on_hyphens=False) for item in items))
    return "\n\n".join(blocks) + "\n"


def report(load: Load, ours: Measures, theirs: Measures, about: list[str],
           durations: tuple[float, float]) -> str:
    commit, machine, loadavg = about
    checks = "\n".join(f"| {goal} | {got} | {'met' if ok else '**missed**'} |"
                       for goal, got, ok in targets(load, ours))
    statuses = ", ".join(f"{n} {s}" for s, n in sorted((ours.callback_status or {}).items()))
    shows = "\n".join(f"- {text}" for text in findings(load, ours, theirs))
    return reflow(f"""# Node failure: a hotline node killed under load, against the dispatcher alone

Measured by `make bench` (`bench/node_failure.py`) at `{commit}` on
{datetime.date.today().isoformat()}, on {machine}; load average {loadavg} at the start (the
machine is shared). One run, both systems one after the other: the hotline's side took
{durations[0]:.0f} s, the dispatcher's {durations[1]:.0f} s.

## What runs

sipp places {load.calls} calls at {load.rate:g} per second through a Kamailio carrier (carrier
A) to the front door, which sends each to one of two nodes; each from its own number
(13900000001, 13900000002, ...). Half a second after the answer each caller sends one SIP INFO:
key 1 (`Signal=1`, application/dtmf-relay) for one caller in {load.press_every}, an empty
keep-alive for the others; then it holds {load.hold_s:g} s and hangs up. A node that re-INVITEs
it meanwhile (taking the call up after its node died) is answered with the same media, and the
caller's BYE then goes to that node. {load.kill_at_s:g} s after sipp starts, the first node's
process group is killed with SIGKILL: its ports close, so the kernel answers what is sent to
them with ICMP port unreachable, which Kamailio does not act on (a call it sends there waits out
its `fr_timer`). Both systems get the same callers (`bench/sipp/uac_front_door.xml`, one
injection file).

The front door is the shipped `config/kamailio/frontdoor.cfg`, as it is: round robin, OPTIONS
probes every 2 s (one lost probe takes a node out), a call moved to the other node when its node
sends nothing within 1 s (`fr_timer`) or answers 408/5xx. The bench runs it through
`bench/kamailio/frontdoor_watched.cfg`, which includes it and adds two event routes that only
log, with Kamailio's clock, when the dispatcher marks a node down or up: the shipped file logs a
node's failure when a call meets it, not when a probe does. The detection time runs from the
kill to the killed node's first "down", whether a probe or a call's failure route noticed it.

- **hotline**: two `hotline serve` nodes (`node-a`, killed, and `node-b`) on one redis-server.
  The flow is a menu ("Press 1 to talk to the engineer on call", 60 s to answer); key 1 forwards
  to the on-call roster ({int(load.rate * (load.hold_s + 2)) + 10} people, all on one sipp phone
  behind carrier B that answers at once, takes re-INVITEs and holds until the BYE), bridged in
  the node's RTP engine; a forward nobody takes goes to another 60 s menu, so the hotline never
  hangs up before the caller. `failover.callback`: enabled, `delay_s` {load.delay_s:g},
  `numbers` `139\\d{{8}}`, `per_number_s` 0, `per_hour` 100000, `silence_s` 120, `ring_s` 10,
  `node` "again" (it says "This is the hotline calling you back" and hangs up). Two trunks,
  default probing: carrier A (priority 2, the calls in, from the front door) and carrier B
  (priority 1, every call out: forwards and call-backs, which reach the same sipp phone,
  standing for the callers' phones too). A node's lease lasts {LEASE_S:g} s; the others scan
  every {SCAN_S:g} s and give a lapsed node's SIP addresses {PROBE_S:g} s to answer before
  taking its calls over; a call-back claim lapses after {CLAIM_S:g} s.
- **dispatcher alone** (the anchor, with no recovery): the same carrier and front door in front
  of two plain sipp UAS "nodes" (`bench/sipp/uas_answer_wait.xml` with `-aa`, which answers the
  probes and the INFO) that answer at once and hold until the BYE; no application, no Redis:
  what the dispatcher does by itself about a dead node.

A set-up fails when the caller gets no 200 OK. The detection window holds the calls placed
between the kill and the front door marking the node down. A call was up on the killed node when
the front door had sent it there (its log), it was answered before the kill and its caller had
not yet hung up (the callers' trace). It survived if the caller's BYE, at the end of the hold,
was answered 200; otherwise it was cut off. A cut-off caller is called back when an INVITE to
their number reaches the phone (its trace), timed from the kill. A record is left open if it has
no end once everything has settled (at most {SETTLE_TIMEOUT_S:g} s after the last caller), and
lost if a call the caller saw answered has none.

## Results

{table(load, ours, theirs)}

Call-back records in Redis (hotline): {statuses or "none"}.

## Targets (hotline)

| target | measured | |
|---|---|---|
{checks}

## What it shows, and what it does not

{shows}
- A call's survival is judged by its signalling: the other node's re-INVITEs accepted and
  the caller's hang-up answered 200. No RTP is checked on any leg, so whether caller and
  staff hear each other after the take-up is not measured here
  (`tests/cluster/test_node_failure.py` checks the audio of one taken-up call).
- The call-back rings the caller's number, not the caller's held dialog: here the cut-off
  callers hold their dead calls until their own hold ends, and the call-backs go to the sipp
  phone behind carrier B. Whether a real caller would still be on the line is not measured.
- One machine, loopback, one run. Kamailio, sipp, redis-server and both nodes share its
  cores with each other and with other work, so times below a few hundred ms are
  indicative; set-up times are from the callers' sipp traces.
""")


if __name__ == "__main__":
    main()
