"""What happened to the calls of bench/node_failure.py, from what each side saw: the
callers' sipp trace (set-ups, hang-ups), the front door's log (which node took each
call, when it marked the killed node down), the phone behind carrier B (forwards and
call-backs that reached it) and, for the hotline, the call and call-back records in Redis.
"""

from __future__ import annotations

import collections
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster import Observed, node_events  # noqa: E402
from bench.sipp_trace import header, messages  # noqa: E402
from ivr.calls.takeover import NODE_FAILURE  # noqa: E402

HELD_S = 10.0
"""A bridged call counts toward the survival target if its caller held on this long after
the kill: time for another node to notice (a lapsed lease, a scan, the fence) and take the
call up. A caller who hangs up sooner hangs up on the dead node (the BYE is lost), which no
take-up can save, and would count against any node however quick."""
CALLER_PREFIX = "139"
"""The callers' numbers start so (`Load.number`); the staff's (1001, ...) do not."""


@dataclass
class CallerCall:
    """One caller's call, from the callers' sipp trace."""

    call_id: str
    number: str
    invited_at: float
    answered_at: float | None = None
    hung_up_at: float | None = None
    """When the caller sent its BYE."""
    bye_status: int | None = None
    """The final response to the BYE; None: none came."""
    reinvited_at: float | None = None
    """When a node first re-INVITEd the caller (taking the call up after its node died)."""

    @property
    def survived(self) -> bool:
        """Whether the call was still up, end to end, when the caller hung up."""
        return self.bye_status == 200

    @property
    def setup_s(self) -> float | None:
        return None if self.answered_at is None else self.answered_at - self.invited_at


@dataclass
class PhoneCall:
    """A call that reached the phone behind carrier B: a forward to staff (numbers
    1001, ...) or a call-back (the caller's number)."""

    number: str
    rung_at: float
    bye_at: float | None = None
    """When the BYE that ended it came; None: it never came."""


@dataclass
class Measures:
    """One system's numbers; None where the system has nothing to measure."""

    calls: int
    answered: int
    failed: tuple[int, int, int]
    """Set-ups that failed: placed before the kill, in the detection window, after it."""
    window_calls: int
    detection_s: float | None
    detected_by: str | None
    setup_before_s: float
    setup_window_max_s: float | None
    setup_after_p99_s: float | None
    moved: int
    """Calls the front door sent to the dead node and moved to the other (after 1 s)."""
    up: list[CallerCall]
    """Calls up on the killed node when it died."""
    pressed: int
    """Of those, the callers who had pressed 1 (forwarded to staff on the hotline)."""
    survived: int
    """Of those, calls whose caller's hang-up was answered 200 (the call still held)."""
    taken_up: int
    """Of those, calls whose caller a node re-INVITEd after the kill."""
    cut_off: list[CallerCall]
    """The calls up on the killed node that did not survive it."""
    bridged: int | None = None
    """Of the calls up on the killed node, those bridged to staff (their records say so)."""
    bridged_held: int | None = None
    """Of those, the calls whose callers held on `HELD_S` past the kill."""
    bridged_survived: int | None = None
    """Of those, the calls that survived."""
    reinvited_late: int | None = None
    """Calls up on the killed node re-INVITEd only after their callers had hung up."""
    late_called_back: int | None = None
    """Of those, the callers called back."""
    staff_stranded: int | None = None
    """Staff legs up at the kill that never got a BYE: staff left on a dead call."""
    closed_s: list[float] = field(default_factory=list)
    """From the kill to each cut-off call's record being closed by the survivor."""
    called_back: int | None = None
    called_back_once: int | None = None
    duplicates: int | None = None
    spurious: int | None = None
    ring_s: list[float] = field(default_factory=list)
    """From the kill to the call-back reaching each cut-off caller's phone (first time)."""
    closed: int | None = None
    """Records closed "cut off: node failure"."""
    closed_elsewhere: int | None = None
    """Of those, records of calls the callers did not have up on the killed node."""
    open_records: int | None = None
    lost_records: int | None = None
    callback_status: dict[str, int] | None = None


def caller_calls(workdir: Path) -> dict[str, CallerCall]:
    """Per Call-ID, the callers' calls as their sipp trace tells them (the first of each
    message: retransmissions aside)."""
    found: dict[str, CallerCall] = {}
    for when, received, message in messages(workdir):
        call_id, first = header(message, "Call-ID"), message.split("\n", 1)[0]
        cseq, call = header(message, "CSeq"), found.get(call_id)
        if call is None and not received and first.startswith("INVITE "):
            number = re.search(r"sip:(\d+)@", header(message, "From"))
            found[call_id] = CallerCall(call_id, number[1] if number else "", when)
        elif call is None:
            continue
        elif received and first.startswith("SIP/2.0 200") and cseq.endswith("INVITE"):
            call.answered_at = call.answered_at or when
        elif not received and first.startswith("BYE "):
            call.hung_up_at = call.hung_up_at or when
        elif received and first.startswith("SIP/2.0 ") and cseq.endswith("BYE") and \
                int(first.split()[1]) >= 200:
            call.bye_status = call.bye_status or int(first.split()[1])
        elif received and first.startswith("INVITE "):
            call.reinvited_at = call.reinvited_at or when
    return found


def phone_calls(workdir: Path) -> list[PhoneCall]:
    """The calls that reached the phone, in order, from its sipp trace."""
    found: dict[str, PhoneCall] = {}
    for when, received, message in messages(workdir):
        call_id = header(message, "Call-ID")
        user = re.match(r"INVITE sip:([^@;>]+)@", message) if received else None
        if user and call_id not in found:
            found[call_id] = PhoneCall(user[1], when)
        elif received and message.startswith("BYE ") and call_id in found:
            found[call_id].bye_at = found[call_id].bye_at or when
    return list(found.values())


def routes(log: Path, nodes: list[str]) -> tuple[dict[str, str], set[str]]:
    """From the front door's log: the node that took each call (Call-ID -> host:port),
    and the calls it moved there from the other node."""
    text = log.read_text(errors="replace")
    first = dict(re.findall(r"call (\S+) from \S+ to node sip:(\S+)", text))
    moved = set(re.findall(r"node sip:\S+ failed for call-id (\S+): next node", text))
    other = {nodes[0]: nodes[1], nodes[1]: nodes[0]}
    return {c: other[n] if c in moved else n for c, n in first.items()}, moved


def detected_at(observed: Observed) -> tuple[float, str] | None:
    """When the front door first marked the killed node down after the kill, and what
    noticed it: "a probe" (the event names the node as $ru) or "a call" (its failure
    route: $ru is the call's)."""
    dead = f"sip:{observed.nodes[0]}"
    found = [(at, "a probe" if ru == dead else "a call")
             for kind, ru, du, at in node_events(observed.frontdoor_log)
             if kind == "down" and dead in (ru, du) and at >= observed.killed_at]
    return min(found, default=None)


def measure(observed: Observed) -> Measures:
    """One system's numbers from what its run `observed`."""
    load, killed = observed.load, observed.killed_at
    calls = sorted(caller_calls(observed.caller).values(), key=lambda c: c.invited_at)
    node_of, moved = routes(observed.frontdoor_log, observed.nodes)
    detected = detected_at(observed)
    noticed = math.inf if detected is None else detected[0]
    before = [c for c in calls if c.invited_at < killed]
    window = [c for c in calls if killed <= c.invited_at < noticed]
    after = [c for c in calls if c.invited_at >= noticed]
    up = [c for c in calls if node_of.get(c.call_id) == observed.nodes[0]
          and c.answered_at is not None and c.answered_at < killed
          and (c.hung_up_at or math.inf) > killed]
    setups = [c.setup_s for c in before if c.setup_s is not None]
    measures = Measures(
        len(calls), sum(c.answered_at is not None for c in calls),
        (_failed(before), _failed(window), _failed(after)),
        len(window), None if detected is None else detected[0] - killed,
        None if detected is None else detected[1],
        statistics.median(setups) if setups else math.nan,
        max((c.setup_s for c in window if c.setup_s is not None), default=None),
        _percentile([c.setup_s for c in after if c.setup_s is not None], 99),
        len(moved), up, sum(load.presses(c.number) for c in up), sum(c.survived for c in up),
        sum(c.reinvited_at is not None for c in up), [c for c in up if not c.survived])
    if observed.records is not None:
        _hotline_measures(measures, observed, calls)
    return measures


def _hotline_measures(m: Measures, observed: Observed, calls: list[CallerCall]) -> None:
    """What only the hotline has: bridged calls, call-backs and records."""
    assert observed.records is not None and observed.phone is not None
    records = {r.id: r for r in observed.records}
    bridged = [c for c in m.up if c.call_id in records and
               records[c.call_id].forwarded_to is not None]
    held = [c for c in bridged if (c.hung_up_at or math.inf) - observed.killed_at >= HELD_S]
    m.bridged, m.bridged_held = len(bridged), len(held)
    m.bridged_survived = sum(c.survived for c in held)
    late = {c.number for c in m.up if c.reinvited_at is not None and c.hung_up_at is not None
            and c.reinvited_at > c.hung_up_at}
    phone = phone_calls(observed.phone)
    _callback_measures(m, phone, observed.killed_at)
    m.reinvited_late = len(late)
    m.late_called_back = len(late & {c.number for c in phone})
    closed = [r for r in records.values() if r.end_reason == NODE_FAILURE]
    m.closed = len(closed)
    m.closed_elsewhere = len({r.id for r in closed} - {c.call_id for c in m.cut_off})
    m.closed_s = sorted(r.ended_at - observed.killed_at for r in closed if r.ended_at)
    m.open_records = sum(r.ended_at is None for r in records.values())
    m.lost_records = sum(c.answered_at is not None and c.call_id not in records for c in calls)
    m.callback_status = dict(collections.Counter(c.status for c in observed.callbacks or []))


def _callback_measures(m: Measures, phone: list[PhoneCall], killed_at: float) -> None:
    """The call-backs (calls to a caller's number) and staff legs the phone saw."""
    m.staff_stranded = sum(not c.number.startswith(CALLER_PREFIX) and c.rung_at < killed_at
                           and c.bye_at is None for c in phone)
    callbacks: dict[str, list[float]] = collections.defaultdict(list)
    for call in phone:
        if call.number.startswith(CALLER_PREFIX):
            callbacks[call.number].append(call.rung_at)
    cut_numbers = {c.number for c in m.cut_off}
    m.called_back = sum(bool(callbacks.get(n)) for n in cut_numbers)
    m.called_back_once = sum(len(callbacks.get(n, [])) == 1 for n in cut_numbers)
    m.duplicates = sum(max(len(t) - 1, 0) for t in callbacks.values())
    m.spurious = sum(len(t) for n, t in callbacks.items() if n not in cut_numbers)
    m.ring_s = sorted(min(callbacks[n]) - killed_at for n in cut_numbers if callbacks.get(n))


def _failed(calls: list[CallerCall]) -> int:
    return sum(c.answered_at is None for c in calls)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]

