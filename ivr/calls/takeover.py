"""Taking over from a dead node: closing the calls it left up, and calling their callers back.

Every node's record writer keeps, with each call's record, the index of the calls up on
it (``{p}:live:{node}``: call id -> the node's run). A node that dies leaves its entries
there. Every `scan_s` each node's `Takeover` looks for them:

- on nodes whose lease has lapsed, once *fenced*: none of the node's SIP addresses (nor
  its HTTP address, for a node without SIP trunks) answers. A node that has only lost
  Redis still answers, and keeps its calls; it is probed again `hold_s` later. One node
  probes a lapsed node at a time (``{p}:fence:{node}``);
- on this node's own earlier runs: a node restarted after a crash finds the calls its
  last run left open, once its record spool has been replayed (a call that ended before
  the crash may have its last record in the spool).

Each call is adopted atomically (its entry moved into this node's hash, so one node
takes it). A call that was bridged to staff is handed to `recover`, which takes it up on
this node (`ivr.calls.recovery`): caller and staff go on talking. Any other call, and a
bridged one that cannot be taken up, has its record closed with the end reason
``cut off: node failure`` and its caller handed to `on_cut_off` (the call-back service:
a call-back, or a ticket when call-backs are off or refused). A drill's test call is
only closed. A node that dies
while closing adopted calls leaves them in its own hash, to be taken over in turn; the
call-back is made once all the same (`failover.callbacks.callback_id`).

A Twilio call is left (`later`) to its webhooks: Twilio carries its audio, so the caller
may still be talking to staff through a <Dial> when the node dies. Twilio's next request
for it (the verb's action, the number's fallback URL, its status callback) reaches
another node, which takes that one call over there and then (`take_call`,
`ivr.http.twilio`). One still unheard of 5 hours after it started (longer than a forward
is waited for) is closed here.

Known limits: a node cut off from Redis *and* from the node probing it (a network
partition) looks dead, and its callers are called back while it may still carry them;
and the last records a dead node had spooled to its own disk (Redis being down too)
reach Redis only when it restarts.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import redis

from ivr import metrics
from ivr.nodes import UNSPECIFIED, NodeInfo, http_base, lapsed_nodes, last_info
from ivr.records import CallRecord, CallStore, live_key
from trunks.config import ProbeSettings, TrunkConfig, split_hostport
from trunks.errors import ProbeRejected
from trunks.probe import OptionsProbe, probe_once

logger = logging.getLogger(__name__)

NODE_FAILURE = "cut off: node failure"
CALLER_GONE = "caller hung up while its node was down"
SCAN_S = 2.0
"""How often a node looks for calls left by dead nodes."""
PROBE_S = 1.5
"""How long each of a lapsed node's addresses has to answer before it counts as dead."""
HOLD_S = 10.0
"""A lapsed node found alive (it answers, but does not renew its lease) is probed again
after this long."""

_ADOPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"""
"""Move call ARGV[1], up on run ARGV[2] of a dead node (KEYS[1]), to this node's run ARGV[3]
(KEYS[2]); 0 if another node took it first."""

Recover = Callable[[CallRecord, dict[str, Any], Callable[[bool], None]], None]
"""Takes up a bridged call (its record and dialogs) or runs the closing given, telling it
whether the caller had hung up already."""


class Takeover:
    """Finds and closes the calls that dead nodes (and this node's earlier runs) left up."""

    def __init__(self, client: redis.Redis, prefix: str, node: str, run: str, store: CallStore,
                 on_cut_off: Callable[[CallRecord], None],
                 ready: Callable[[], bool] = lambda: True,
                 answers: Callable[[NodeInfo], bool] | None = None,
                 wallclock: Callable[[], float] = time.time, scan_s: float = SCAN_S,
                 hold_s: float = HOLD_S, recover: Recover | None = None,
                 later: Callable[[CallRecord], bool] | None = None) -> None:
        """`on_cut_off` gets each closed record (but a drill's) before it is saved, and
        fills its `callback`. `ready`: whether this node's own earlier runs may be taken
        over yet (its record spool is replayed). `answers`: whether a lapsed node still
        answers (default: `node_answers`). `recover`: given each call that was bridged
        (its record, its dialogs, and the closing to run if it cannot take the call up).
        `later`: whether a call is left for now to whoever will hear of it first (a
        Twilio call's webhooks, which call `take_call`)."""
        self.client, self.prefix, self.node, self.run = client, prefix, node, run
        self.store = store
        self.on_cut_off = on_cut_off
        self.ready = ready
        self.answers = answers or node_answers
        self.recover = recover
        self.later = later
        self.scan_s, self.hold_s = scan_s, hold_s
        self._wallclock = wallclock
        self._adopt = client.register_script(_ADOPT)
        self._adopted: dict[str, str] = {}
        """Calls adopted and not yet closed (a Redis error): call id -> the dead node."""
        self._alive: set[str] = set()
        """Lapsed nodes last found answering (logged once per spell)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="takeover", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.scan_s + 2 * PROBE_S + 1)

    def _loop(self) -> None:
        while not self._stop.wait(self.scan_s):
            try:
                self.scan()
            except redis.RedisError as exc:
                logger.debug("Takeover scan skipped, Redis unreachable: %s", exc)
            except Exception:  # a bug must not end the takeovers for good
                logger.exception("Takeover scan failed; trying again")

    def scan(self) -> int:
        """Take over what dead nodes left, once; returns how many calls were taken over
        (closed, or handed to `recover`)."""
        closed = sum(self._close(call_id, dead) for call_id, dead in list(self._adopted.items()))
        if self.ready():
            earlier = {c: r for c, r in self.store.live(self.node).items() if r != self.run}
            closed += self._take(self.node, earlier, "an earlier run of this node")
        for name in lapsed_nodes(self.client, self.prefix):
            if name == self.node or not self.client.hlen(live_key(self.prefix, name)):
                continue
            if self._fenced(name):
                closed += self._take(name, self.store.live(name), f"node {name}")
        return closed

    def _fenced(self, name: str) -> bool:
        """Whether lapsed node `name` is dead: this node probes it (no other node is
        probing it) and it does not answer."""
        fence = f"{self.prefix}:fence:{name}"
        if not self.client.set(fence, self.node, nx=True, px=int(self.hold_s * 1000)):
            return self.client.get(fence) == f"dead by {self.node}"
        info = last_info(self.client, self.prefix, name)
        if info is not None and self.answers(info):
            if name not in self._alive:
                self._alive.add(name)
                logger.warning("Node %s does not renew its lease but answers: it keeps its "
                               "calls (has it lost Redis?); probing it again in %g s", name,
                               self.hold_s)
            return False
        self._alive.discard(name)
        self.client.set(fence, f"dead by {self.node}", px=int(self.hold_s * 1000))
        return True

    def take_call(self, call_id: str, dead: str, run: str) -> bool:
        """Take over call `call_id`, up on run `run` of node `dead`, which a request for it
        found gone, at once. Whether the call is closed as cut off by its node's failure
        (just now, or before)."""
        if self._take_one(call_id, dead, run) is not None:
            logger.warning("Took over call %s, left up by node %s", call_id, dead)
        record = self.store.get(call_id)
        return record is not None and record.end_reason == NODE_FAILURE

    def _take(self, dead: str, calls: dict[str, str], whose: str) -> int:
        """Adopt and close the calls `calls` (call id -> run) that `dead` left up, but
        those left for `later`."""
        if self.later is not None:
            later = self.later
            calls = {call_id: run for call_id, run in calls.items()
                     if (record := self.store.get(call_id)) is None or not later(record)}
        if not calls:
            return 0
        logger.warning("Taking over %d calls left up by %s", len(calls), whose)
        return sum(self._take_one(call_id, dead, run) or 0 for call_id, run in calls.items())

    def _take_one(self, call_id: str, dead: str, run: str) -> int | None:
        """Adopt call `call_id`, up on run `run` of `dead`, and close it (`_close`'s
        answer); None if another node adopted it first."""
        if not self._adopt(keys=[live_key(self.prefix, dead), live_key(self.prefix, self.node)],
                           args=[call_id, run, self.run]):
            return None
        self._adopted[call_id] = dead
        return self._close(call_id, dead)

    def _close(self, call_id: str, dead: str) -> int:
        """Take over call `call_id`, adopted from node `dead`: 1 if it was closed or
        handed to `recover`, 0 if it needed neither (ended, or the call goes on on another
        node)."""
        record = self.store.get(call_id)
        if record is None or record.ended_at is not None or self._carried(record):
            self._release(call_id)
            return 0
        if self.recover is not None and (dialog := self.store.dialog(call_id)):
            self._adopted.pop(call_id, None)  # the recovery closes it if it must
            self.recover(record, dialog,
                         lambda caller_gone: self._finish(record, dead, caller_gone))
        else:
            self._finish(record, dead)
        return 1

    def _finish(self, record: CallRecord, dead: str, caller_gone: bool = False) -> None:
        """Close the record of a call its node's death cut off, and hand the caller on;
        `caller_gone`: the caller had hung up meanwhile (nobody to call back)."""
        record.ended_at = self._wallclock()
        record.end_reason = CALLER_GONE if caller_gone else NODE_FAILURE
        record.outcome = record.outcome or ("caller hung up" if caller_gone else "cut off")
        if record.path != ["drill"] and not caller_gone:
            self.on_cut_off(record)
        self.store.save(record)
        metrics.call_taken_over("closed")
        logger.warning("Call %s from %s closed: node %s failed with it up at %s", record.id,
                       record.caller, record.node or dead,
                       record.path[-1] if record.path else "the start")
        self._release(record.id)

    def _release(self, call_id: str) -> None:
        self.client.hdel(live_key(self.prefix, self.node), call_id)
        self._adopted.pop(call_id, None)

    def _carried(self, record: CallRecord) -> bool:
        """Whether a live node carries `record`'s call: its node lists it as up, under the
        run that wrote the record (the front door moved the call to another node, and
        that node's record replaced the dead node's)."""
        if record.node is None or record.run is None:
            return False
        return bool(self.client.hget(live_key(self.prefix, record.node), record.id) == record.run)


def node_answers(info: NodeInfo, timeout_s: float = PROBE_S) -> bool:
    """Whether the node `info` describes answers on any of its SIP addresses (OPTIONS:
    any response, 503 too) or, if it has none, on its HTTP address (``/healthz``)."""
    for listen in info.sip.values():
        host, port = split_hostport(listen)
        host = info.host if host in UNSPECIFIED else host
        probe = OptionsProbe(TrunkConfig(
            name="node", mode="ip", proxy=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            probe=ProbeSettings(timeout_s=timeout_s)), user_agent="hotline-takeover")
        try:
            outcome = probe_once(probe)
        finally:
            probe.close()
        if outcome.rtt_s is not None or isinstance(outcome.error, ProbeRejected):
            return True  # 503 from a draining node is an answer too
    base = http_base(info)
    if info.sip or base is None:
        return False
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=timeout_s):
            return True
    except OSError:
        return False


__all__ = ["CALLER_GONE", "NODE_FAILURE", "Takeover", "node_answers"]
