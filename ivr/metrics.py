"""Prometheus metrics: the process's instruments, and one registry per server for /metrics.

Instruments that count and time events are module-level objects made with
``registry=None``, each beside the code it watches, since lower packages cannot
import `ivr`: `trunks.voip.outbound.SETUP_SECONDS`, `trunks.voip.refusals.REFUSED`,
`speech.recognizer.RECOGNIZER_SECONDS`, `kb.search.SEARCH_SECONDS` and `ANSWERS`,
`ivr.tickets.desk.TICKETS_OPENED`, `failover.notify.notifier.ALERTS`, and the call
counters and call-quality histograms here. `build_registry` registers them,
the process collectors and a `StateCollector` in a fresh `CollectorRegistry`, so nothing
goes to prometheus_client's global registry and tests can build many servers in one process.

`StateCollector` reads state when Prometheus scrapes: trunk health from the in-process
monitor, and overrides, unresolved tickets and the last drill from Redis. With Redis
unreachable a scrape still succeeds, with the in-process metrics and
``hotline_redis_up 0``. Labels are few and bounded: trunk names, fixed outcome words,
priorities, node names; never a caller's number, a call id or free text.

Prometheus scrapes every node, and dashboards add them up, so `sum()` must be right:

- what a node counts or sees itself (its calls, call quality, set-ups, searches,
  tickets it opened, alerts it sent, its view of the trunks, its process) carries the
  label ``node``, this node's name (`NodeLabelled`), and differs from node to node;
- what is read from Redis describes the whole cluster (`CLUSTER_FAMILIES`: overrides,
  unresolved tickets, the last drill) and is exported by one node only, the *cluster
  exporter*: the first by name of the nodes whose lease holds and that serve HTTP
  (`ivr.nodes`), or the node scraped when no lease holds at all (it has not renewed
  yet). ``hotline_cluster_exporter`` says which (1 on it, 0 elsewhere). When nodes join
  or leave, two can export for up to a scrape interval (the other's last scrape), or
  none for up to a lease (6 s) after the exporter dies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import redis
from flask import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from failover.drill.report import DrillReport, Result
from failover.drill.store import DrillStore
from failover.notify.notifier import ALERTS
from ivr.nodes import live_nodes
from ivr.records import CallRecord
from ivr.tickets.desk import TICKETS_OPENED
from ivr.tickets.model import Priority, TicketStatus
from ivr.tickets.store import TicketStore
from kb.search import ANSWERS, SEARCH_SECONDS
from speech.recognizer import RECOGNIZER_SECONDS
from trunks.health import HealthSnapshot, TrunkState
from trunks.monitor import TrunkMonitor
from trunks.overrides import Override, OverrideAction
from trunks.store import TrunkStore
from trunks.voip.inbound import CUT_OFF
from trunks.voip.outbound import SETUP_SECONDS
from trunks.voip.refusals import REFUSED as SIP_REFUSED

logger = logging.getLogger(__name__)

REDIS_WARNING_EVERY_S = 300.0
"""While Redis stays unreachable, scrapes repeat their warning at most this often."""
OUTCOMES = ("forwarded", "completed", "bot_answered", "bot_ticket", "bot_other", "hung_up",
            "cut_off", "drill", "error", "other")
"""Every value of the `outcome` label of hotline_calls_total."""
_BOT_OUTCOMES = {"bot: answered": "bot_answered", "bot: ticket": "bot_ticket"}
_HUNG_UP = frozenset({"caller hung up", "cancelled by caller", "callee hung up", "canceled"})
"""A caller hanging up: "callee hung up" is the caller on a call-back, "canceled" a Twilio
caller who hung up before the flow began."""
_ERRORS = frozenset({"", "error", "failed", "flow loop"})
"""A flow that failed or looped; "failed" is Twilio's status for a call that did."""

CALLS_ACTIVE = Gauge("hotline_calls_active", "Calls in progress on this node, by channel",
                     ["channel"], registry=None)
CALLS = Counter("hotline_calls", "Calls ended on this node, by channel and outcome",
                ["channel", "outcome"], registry=None)
TAKEN_OVER = Counter("hotline_calls_taken_over", "Calls a dead node left up that this node "
                     "took over: taken_up (a bridged call that goes on here) or closed "
                     "(cut off; the caller called back or a ticket opened)", ["result"],
                     registry=None)
MOS_BUCKETS = (1.5, 2.0, 2.5, 3.1, 3.6, 4.0, 4.2, 4.3, 4.4, 4.5)
"""Estimated MOS runs from 1 to 4.5, and a lossless G.711 call here scores about 4.4;
3.1 and 3.6 are where `ivr.quality` rates a call bad and poor."""
LOSS_BUCKETS = (0.0, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25)
"""Without loss concealment 1.3 % makes a G.711 call poor and 2.2 % bad: fine steps
up to a few percent; 0 counts the loss-free legs."""
JITTER_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.06, 0.1, 0.2)
"""Our jitter buffer holds 60 ms."""
RTT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 1.0)
"""G.114 wants under 150 ms one way (300 ms round trip) for most conversations."""
CALL_MOS = Histogram("hotline_call_mos", "Estimated MOS (ITU-T G.107) of each call leg "
                     "this node carried, the worse of its two directions, by trunk",
                     ["trunk"], buckets=MOS_BUCKETS, registry=None)
CALL_LOSS = Histogram("hotline_call_loss_ratio", "Share of a call leg's packets lost: "
                      "received (what we heard) or sent (what the peer reported by RTCP)",
                      ["trunk", "direction"], buckets=LOSS_BUCKETS, registry=None)
CALL_JITTER = Histogram("hotline_call_jitter_seconds", "Interarrival jitter of a call leg "
                        "(RFC 3550), received or sent (the peer's RTCP)",
                        ["trunk", "direction"], buckets=JITTER_BUCKETS, registry=None)
CALL_RTT = Histogram("hotline_call_rtt_seconds", "Round-trip time of a call leg's media, "
                     "from RTCP", ["trunk"], buckets=RTT_BUCKETS, registry=None)
INSTRUMENTS = (CALLS_ACTIVE, CALLS, TAKEN_OVER, SETUP_SECONDS, SIP_REFUSED, RECOGNIZER_SECONDS,
               SEARCH_SECONDS, ANSWERS, TICKETS_OPENED, ALERTS, CALL_MOS, CALL_LOSS,
               CALL_JITTER, CALL_RTT)
"""The process-wide instruments every server's registry exposes."""
CLUSTER_FAMILIES = ("hotline_trunk_override", "hotline_tickets_open", "hotline_tickets_acked",
                    "hotline_drill_last_passed",
                    "hotline_drill_last_finished_timestamp_seconds")
"""Metrics of the whole cluster, read from Redis: only the cluster exporter has them,
without a ``node`` label. Every other metric is the node's own, with one."""


@dataclass(frozen=True)
class RedisState:
    """What a scrape read from Redis."""

    overrides: dict[str, Override] = field(default_factory=dict)
    tickets: dict[tuple[TicketStatus, Priority], int] = field(default_factory=dict)
    drill: DrillReport | None = None
    exporter: str | None = None
    """The node that exports the cluster's metrics."""


def outcome_label(outcome: str | None) -> str:
    """The `outcome` label for a call record's outcome: one of OUTCOMES.

    None counts as an error: only a flow that failed leaves a call without one."""
    if outcome is None:
        return "error"
    text = outcome.strip().lower()
    if text in ("forwarded", "completed"):
        return text
    if text.startswith("bot:"):
        return _BOT_OUTCOMES.get(text, "bot_other")
    if text.startswith("drill"):
        return "drill"
    if text.startswith(CUT_OFF):
        return "cut_off"
    if text in _HUNG_UP:
        return "hung_up"
    return "error" if text in _ERRORS else "other"


def call_started(channel: str) -> None:
    """Count a call in progress on `channel` ("sip", "twilio", ...; a fixed word)."""
    CALLS_ACTIVE.labels(channel).inc()


def call_ended(channel: str, outcome: str | None) -> None:
    """Count a call that `call_started` counted as ended, with its record's outcome."""
    CALLS_ACTIVE.labels(channel).dec()
    CALLS.labels(channel, outcome_label(outcome)).inc()


def call_taken_over(result: str) -> None:
    """Count a call a dead node left up: "taken_up" or "closed"."""
    TAKEN_OVER.labels(result).inc()


def call_quality(record: CallRecord) -> None:
    """Observe how each leg of an ended call sounded: the caller's, on the call's trunk,
    and each answered forward's, on the trunk it went out by. A figure not measured
    (no RTCP from the peer, no packets) is left out."""
    legs = [(record.trunk, record.quality)]
    legs += [(a["trunk"], a.get("quality")) for a in record.forward_attempts]
    for trunk, quality in legs:
        if quality:
            _observe_leg(trunk, quality)


def _observe_leg(trunk: str, quality: Mapping[str, float | int | None]) -> None:
    if (mos := quality.get("mos")) is not None:
        CALL_MOS.labels(trunk).observe(mos)
    for direction in ("received", "sent"):
        if (loss := quality.get(f"{direction}_loss_percent")) is not None:
            CALL_LOSS.labels(trunk, direction).observe(loss / 100)
        if (jitter := quality.get(f"{direction}_jitter_ms")) is not None:
            CALL_JITTER.labels(trunk, direction).observe(jitter / 1000)
    if (rtt := quality.get("rtt_ms")) is not None:
        CALL_RTT.labels(trunk).observe(rtt / 1000)


def trunk_families(snapshots: Mapping[str, HealthSnapshot]) -> list[Metric]:
    """Each trunk's health as this node's monitor sees it."""
    state = GaugeMetricFamily("hotline_trunk_state", "1 for the trunk's health state on this "
                              "node, 0 for the other states", labels=["trunk", "state"])
    up = GaugeMetricFamily("hotline_trunk_up", "1 while the trunk is up (answering probes) "
                           "on this node", labels=["trunk"])
    rtt = GaugeMetricFamily("hotline_trunk_probe_rtt_seconds", "Round-trip time of the "
                            "trunk's latest answered probe", labels=["trunk"])
    smoothed = GaugeMetricFamily("hotline_trunk_probe_rtt_smoothed_seconds", "Smoothed "
                                 "round-trip time of the trunk's probes", labels=["trunk"])
    for name, snapshot in sorted(snapshots.items()):
        for each in TrunkState:
            state.add_metric([name, each.value], float(snapshot.state is each))
        up.add_metric([name], float(snapshot.state is TrunkState.UP))
        if snapshot.rtt_last_ms is not None:
            rtt.add_metric([name], snapshot.rtt_last_ms / 1000)
        if snapshot.rtt_smoothed_ms is not None:
            smoothed.add_metric([name], snapshot.rtt_smoothed_ms / 1000)
    return [state, up, rtt, smoothed]


def node_families(node: str, read: RedisState | None) -> list[Metric]:
    """Whether this node could read Redis, and whether it exports the cluster's metrics."""
    redis_up = GaugeMetricFamily("hotline_redis_up", "1 if this scrape could read Redis",
                                 value=float(read is not None))
    exporter = GaugeMetricFamily("hotline_cluster_exporter", "1 on the one node that exports "
                                 "the cluster's metrics (overrides, tickets, drills)",
                                 value=float(read is not None and read.exporter == node))
    return [redis_up, exporter]


def cluster_families(trunks: Sequence[str], read: RedisState | None) -> list[Metric]:
    """Overrides, tickets and the last drill, as read from Redis (none if `read` is None)."""
    override = GaugeMetricFamily("hotline_trunk_override", "1 for the operator override "
                                 "(drain or force) the trunk has, 0 otherwise",
                                 labels=["trunk", "action"])
    tickets = {
        TicketStatus.OPEN: GaugeMetricFamily("hotline_tickets_open", "Tickets nobody has "
                                             "acknowledged yet, by priority", labels=["priority"]),
        TicketStatus.ACKED: GaugeMetricFamily("hotline_tickets_acked", "Tickets acknowledged "
                                              "but not resolved, by priority", labels=["priority"])}
    passed = GaugeMetricFamily("hotline_drill_last_passed", "1 if the latest drill passed, "
                               "0 if it failed or was interrupted", labels=["trunk"])
    finished = GaugeMetricFamily("hotline_drill_last_finished_timestamp_seconds",
                                 "When the latest drill ended (Unix time)", labels=["trunk"])
    if read is not None:
        for name in trunks:
            current = read.overrides.get(name)
            for action in OverrideAction:
                override.add_metric([name, action.value],
                                    float(current is not None and current.action is action))
        for (status, priority), count in sorted(read.tickets.items()):
            tickets[status].add_metric([priority.value], count)
        if read.drill is not None:
            passed.add_metric([read.drill.trunk], float(read.drill.result is Result.PASSED))
            if read.drill.ended_at is not None:
                finished.add_metric([read.drill.trunk], read.drill.ended_at)
    return [override, *tickets.values(), passed, finished]


def with_node(family: Metric, node: str) -> Metric:
    """A copy of `family` whose samples carry the label ``node``."""
    copy = Metric(family.name, family.documentation, family.type, family.unit)
    copy.samples = [s._replace(labels={"node": node, **s.labels}) for s in family.samples]
    return copy


def build_registry(monitor: TrunkMonitor | None, client: redis.Redis,
                   prefix: str = "hotline", *, node: str) -> CollectorRegistry:
    """A registry for node `node`'s /metrics: the process-wide instruments, the process's
    own (CPU, memory, file descriptors, GC) and the state read at each scrape. Give it a
    client that fails fast, so a scrape does not wait long for an absent Redis."""
    registry = CollectorRegistry()
    gc = GCCollector(registry=CollectorRegistry())  # it registers itself; here, wrapped
    for collector in (*INSTRUMENTS, ProcessCollector(registry=None),
                      PlatformCollector(registry=None), gc):
        registry.register(NodeLabelled(collector, node))
    registry.register(StateCollector(monitor, client, prefix, node=node))
    return registry


def metrics_response(registry: CollectorRegistry) -> Response:
    """The registry's metrics in Prometheus's text format, for the /metrics route."""
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class NodeLabelled(Collector):
    """Another collector's metrics, each sample labelled with this node's name."""

    def __init__(self, collector: Collector, node: str) -> None:
        self.collector, self.node = collector, node

    def describe(self) -> Iterator[Metric]:
        """The families the collector describes; none if it does not (process collectors)."""
        describe: Callable[[], Iterable[Metric]] | None = getattr(self.collector, "describe",
                                                                  None)
        for family in describe() if describe is not None else ():
            yield with_node(family, self.node)

    def collect(self) -> Iterator[Metric]:
        for family in self.collector.collect():
            yield with_node(family, self.node)


class StateCollector(Collector):
    """Reads trunk health, overrides, tickets and the last drill whenever it is scraped:
    trunk health and Redis's state as this node's, and the cluster's metrics when this
    node is the cluster exporter."""

    def __init__(self, monitor: TrunkMonitor | None, client: redis.Redis,
                 prefix: str = "hotline", *, node: str,
                 warn_every_s: float = REDIS_WARNING_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.monitor = monitor
        self.node = node
        self.client, self.prefix = client, prefix
        self.trunks = TrunkStore(client, prefix)
        self.tickets = TicketStore(client, prefix)
        self.drills = DrillStore(client, prefix)
        self.warn_every_s = warn_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._redis_down = False
        self._warned_at = float("-inf")

    def describe(self) -> Iterator[Metric]:
        """The families, without reading anything (the registry checks names with it)."""
        for family in (*trunk_families({}), *node_families(self.node, None)):
            yield with_node(family, self.node)
        yield from cluster_families([], None)

    def collect(self) -> Iterator[Metric]:
        snapshots = {} if self.monitor is None else self.monitor.snapshots()
        read = self._read_redis(sorted(snapshots))
        for family in (*trunk_families(snapshots), *node_families(self.node, read)):
            yield with_node(family, self.node)
        if read is not None and read.exporter == self.node:
            yield from cluster_families(sorted(snapshots), read)

    def _read_redis(self, trunks: list[str]) -> RedisState | None:
        try:
            reports = self.drills.reports(1)
            serving = sorted(n.name for n in live_nodes(self.client, self.prefix) if n.http)
            read = RedisState(self.trunks.overrides(trunks), self.tickets.count_unresolved(),
                              reports[0] if reports else None,
                              exporter=serving[0] if serving else self.node)
        except redis.RedisError as exc:
            self._redis_failed(exc)
            return None
        with self._lock:
            was_down, self._redis_down = self._redis_down, False
        if was_down:
            logger.info("Metrics: Redis reachable again")
        return read

    def _redis_failed(self, exc: redis.RedisError) -> None:
        """Warn on the first failure and then every `warn_every_s`; the rest go to debug."""
        now = self._clock()
        with self._lock:
            warn = not self._redis_down or now - self._warned_at >= self.warn_every_s
            self._redis_down = True
            if warn:
                self._warned_at = now
        logger.log(logging.WARNING if warn else logging.DEBUG,
                   "Metrics: Redis unreachable; serving this node's metrics only: %s", exc)
