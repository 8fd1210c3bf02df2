"""Prometheus metrics against real peers: a real Redis, a Kamailio carrier and a sipp phone,
the FAQ index and a Whisper model. Module-level instruments are shared by every test in
the process, so the tests compare values before and after."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from failover.drill.report import DrillReport, Result
from failover.drill.store import DrillStore
from ivr.metrics import (
    CLUSTER_FAMILIES,
    OUTCOMES,
    build_registry,
    call_ended,
    call_started,
    metrics_response,
    outcome_label,
)
from ivr.nodes import NodeInfo, NodeLease
from ivr.tickets import TicketDesk, TicketStore
from ivr.tickets.model import Candidate, Priority, Turn
from kb.search import Decision, Searcher
from speech.engines import create_recognizer
from speech.recognizer import SpeechSettings
from tests.conftest import FAST_PROBES, wait_for
from tests.ivr.tickets.peers import fast_client
from tests.peers import Carrier, Phone, RedisServer
from tests.speech_audio import FRAME, speak, turn
from tests.trunks.test_bad_requests import SDP, STRANGER, exchange, invite, statuses
from trunks.config import TrunkConfig
from trunks.health import TrunkState
from trunks.monitor import TrunkMonitor
from trunks.overrides import Override, OverrideAction
from trunks.store import TrunkStore
from trunks.voip.endpoint import SipEndpoint
from trunks.voip.inbound import InboundCall
from trunks.voip.media import RtpEngine
from trunks.voip.outbound import Outcome

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
NODE = "node-1"


def scraped(registry: CollectorRegistry) -> Iterator[tuple[str, Sample]]:
    """What Prometheus would read from /metrics: each sample, with its family's name."""
    response = metrics_response(registry)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            yield family.name, sample


def scrape(registry: CollectorRegistry, node: str = NODE) -> Samples:
    """Node `node`'s metrics by sample name and labels, its `node` label checked and left
    out (every metric has it but the cluster's)."""
    samples: Samples = {}
    for family, sample in scraped(registry):
        labels = dict(sample.labels)
        if family in CLUSTER_FAMILIES:
            assert "node" not in labels, sample
        else:
            assert labels.pop("node", None) == node, sample
        samples[sample.name, frozenset(labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample that must be there."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def count(samples: Samples, name: str, **labels: str) -> float:
    """A counter or histogram sample; 0 until its labels are first used."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def make_trunk(name: str, carrier: Carrier | None = None) -> TrunkConfig:
    return TrunkConfig(name=name, mode="ip", proxy=carrier.address if carrier else
                       "127.0.0.1:9", priority=1, probe=FAST_PROBES)


@pytest.fixture
def monitor_factory(redis_client: redis.Redis) -> Iterator[Callable[..., TrunkMonitor]]:
    """Trunk monitors, started unless told not to (an idle one still has snapshots)."""
    monitors: list[TrunkMonitor] = []

    def make(*trunks: TrunkConfig, start: bool = True) -> TrunkMonitor:
        monitor = TrunkMonitor(list(trunks), TrunkStore(redis_client), NODE,
                               heartbeat_s=0.2)
        monitors.append(monitor)
        if start:
            monitor.start()
        return monitor

    yield make
    for monitor in monitors:
        monitor.stop()


@pytest.fixture
def registry(redis_client: redis.Redis) -> CollectorRegistry:
    """A registry without a monitor, for the process-wide instruments."""
    return build_registry(None, redis_client, "hotline", node=NODE)


@pytest.mark.parametrize(("outcome", "label"), [
    ("forwarded", "forwarded"),
    ("completed", "completed"),
    ("bot: answered", "bot_answered"),
    ("bot: ticket", "bot_ticket"),
    ("bot: ticket not saved", "bot_other"),
    ("bot: no question", "bot_other"),
    ("caller hung up", "hung_up"),
    ("cancelled by caller", "hung_up"),
    ("callee hung up", "hung_up"),
    ("cut off: no audio from the caller for 10 s", "cut_off"),
    ("cut off: no ACK from the caller", "cut_off"),
    ("drill responder: heard the tone, echoed 6 digits", "drill"),
    ("drill responder: the caller's tone never came", "drill"),
    ("flow loop", "error"),
    ("error", "error"),
    (None, "error"),
    ("canceled", "hung_up"),
    ("failed", "error"),
    ("Twilio stopped asking", "other"),
    ("hung up by hotline", "other"),
    ("rejected 486 Busy Here", "other"),
    ("caller +8613800000000 said something new", "other"),
])
def test_outcomes_map_to_a_fixed_set_of_labels(outcome: str | None, label: str) -> None:
    assert outcome_label(outcome) == label
    assert label in OUTCOMES


def test_calls_are_counted_while_active_and_by_outcome(registry: CollectorRegistry) -> None:
    before = scrape(registry)
    call_started("sip")
    call_started("sip")
    during = scrape(registry)
    assert count(during, "hotline_calls_active", channel="sip") == \
        count(before, "hotline_calls_active", channel="sip") + 2
    call_ended("sip", "bot: answered")
    call_ended("sip", "caller hung up")
    after = scrape(registry)
    assert count(after, "hotline_calls_active", channel="sip") == \
        count(before, "hotline_calls_active", channel="sip")
    for label in ("bot_answered", "hung_up"):
        assert count(after, "hotline_calls_total", channel="sip", outcome=label) == \
            count(before, "hotline_calls_total", channel="sip", outcome=label) + 1


def test_each_server_has_its_own_registry_with_process_metrics(
        redis_client: redis.Redis) -> None:
    first, second = (build_registry(None, redis_client, "hotline", node=NODE)
                     for _ in range(2))
    call_started("twilio")
    call_ended("twilio", "completed")
    for each in (scrape(first), scrape(second)):
        assert value(each, "hotline_calls_total", channel="twilio", outcome="completed") >= 1
        assert value(each, "process_cpu_seconds_total") > 0
        assert value(each, "python_gc_objects_collected_total", generation="0") >= 0
        assert value(each, "hotline_redis_up") == 1
        assert not any(name == "hotline_trunk_state" for name, _ in each)


@pytest.mark.slow
def test_trunk_state_and_rtt_follow_the_monitor(
        carrier: Carrier, monitor_factory: Callable[..., TrunkMonitor],
        redis_client: redis.Redis) -> None:
    monitor = monitor_factory(make_trunk("carrier-a", carrier))
    registry = build_registry(monitor, redis_client, "hotline", node=NODE)
    wait_for(lambda: monitor.snapshots()["carrier-a"].state is TrunkState.UP, what="UP")
    samples = scrape(registry)
    assert {s.value: value(samples, "hotline_trunk_state", trunk="carrier-a", state=s.value)
            for s in TrunkState} == {"unknown": 0, "up": 1, "suspect": 0, "down": 0,
                                     "recovering": 0}
    assert value(samples, "hotline_trunk_up", trunk="carrier-a") == 1
    assert 0 < value(samples, "hotline_trunk_probe_rtt_seconds", trunk="carrier-a") < 0.3
    assert 0 < value(samples, "hotline_trunk_probe_rtt_smoothed_seconds",
                     trunk="carrier-a") < 0.3

    carrier.kill()
    monitor.report_failure("carrier-a", "INVITE: ICMP port unreachable")
    wait_for(lambda: monitor.snapshots()["carrier-a"].state is TrunkState.DOWN, what="DOWN")
    samples = scrape(registry)
    assert value(samples, "hotline_trunk_state", trunk="carrier-a", state="down") == 1
    assert value(samples, "hotline_trunk_state", trunk="carrier-a", state="up") == 0
    assert value(samples, "hotline_trunk_up", trunk="carrier-a") == 0


def test_overrides_are_read_from_redis(monitor_factory: Callable[..., TrunkMonitor],
                                       redis_client: redis.Redis) -> None:
    monitor = monitor_factory(make_trunk("carrier-a"), make_trunk("carrier-b"), start=False)
    registry = build_registry(monitor, redis_client, "hotline", node=NODE)
    TrunkStore(redis_client).set_override(Override("carrier-b", OverrideAction.DRAIN,
                                                   "maintenance", "pytest", time.time()))
    samples = scrape(registry)
    assert {(trunk, action.value): value(samples, "hotline_trunk_override", trunk=trunk,
                                         action=action.value)
            for trunk in ("carrier-a", "carrier-b") for action in OverrideAction} == {
        ("carrier-a", "drain"): 0, ("carrier-a", "force"): 0,
        ("carrier-b", "drain"): 1, ("carrier-b", "force"): 0}
    assert value(samples, "hotline_trunk_state", trunk="carrier-a", state="unknown") == 1
    assert ("hotline_trunk_probe_rtt_seconds", frozenset({("trunk", "carrier-a")})) \
        not in samples, "no RTT before a probe was answered"


def test_tickets_by_priority_and_status(registry: CollectorRegistry, ticket_desk: TicketDesk,
                                        redis_client: redis.Redis) -> None:
    before = scrape(registry)

    def open_ticket(said: str, priority: Priority | None = None) -> str:
        candidates = [] if priority is None else [
            Candidate("printer-e42", "What does E42 mean?", 0.6, "printers", priority)]
        return ticket_desk.open(caller="+8613800000000", call_id="call-1", trunk="carrier-a",
                                reason="no confident answer",
                                transcript=[Turn("caller", said)], candidates=candidates).id

    urgent = [open_ticket("there is smoke coming out of the printer") for _ in range(2)]
    plain = open_ticket("my printer shows E42", Priority.P2)
    default = open_ticket("a question about invoices")
    store = TicketStore(redis_client, "hotline")
    store.ack(urgent[0])
    store.resolve(plain)
    store.ack(default)
    store.resolve(default)
    samples = scrape(registry)
    tickets = {(status, p.value): value(samples, f"hotline_tickets_{status}", priority=p.value)
               for status in ("open", "acked") for p in Priority}
    assert tickets == {("open", "P1"): 1, ("open", "P2"): 0, ("open", "P3"): 0,
                       ("open", "P4"): 0, ("acked", "P1"): 1, ("acked", "P2"): 0,
                       ("acked", "P3"): 0, ("acked", "P4"): 0}
    created = {p: count(samples, "hotline_tickets_opened_total", priority=p) -
               count(before, "hotline_tickets_opened_total", priority=p)
               for p in ("P1", "P2", "P3", "P4")}
    assert created == {"P1": 2, "P2": 1, "P3": 1, "P4": 0}


def test_the_last_drill_result(registry: CollectorRegistry, redis_client: redis.Redis) -> None:
    drills = DrillStore(redis_client, "hotline")
    assert not any(name.startswith("hotline_drill_") for name, _ in scrape(registry))
    drills.save_report(DrillReport("d1", "carrier-b", "+861001", "node-1", "pytest", "cli",
                                   started_at=1000.0, ended_at=1060.5, result=Result.PASSED),
                       keep=5)
    samples = scrape(registry)
    assert value(samples, "hotline_drill_last_passed", trunk="carrier-b") == 1
    assert value(samples, "hotline_drill_last_finished_timestamp_seconds",
                 trunk="carrier-b") == 1060.5
    drills.save_report(DrillReport("d2", "carrier-a", "+861001", "node-1", "schedule",
                                   "schedule", started_at=2000.0, ended_at=2030.0,
                                   result=Result.FAILED), keep=5)
    samples = scrape(registry)
    assert value(samples, "hotline_drill_last_passed", trunk="carrier-a") == 0
    assert value(samples, "hotline_drill_last_finished_timestamp_seconds",
                 trunk="carrier-a") == 2030.0
    assert not any(name.startswith("hotline_drill_") and ("trunk", "carrier-b") in labels
                   for name, labels in samples)


@pytest.mark.slow
def test_a_scrape_without_redis_still_succeeds(tmp_path: Path,
                                               monitor_factory: Callable[..., TrunkMonitor],
                                               caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer(tmp_path / "own-redis")
    server.start()
    client = fast_client(server)
    try:
        registry = build_registry(monitor_factory(make_trunk("carrier-a"), start=False),
                                  client, "hotline", node=NODE)
        assert value(scrape(registry), "hotline_redis_up") == 1
        server.stop()
        caplog.set_level(logging.DEBUG, logger="ivr.metrics")
        for _ in range(3):
            samples = scrape(registry)
            assert value(samples, "hotline_redis_up") == 0
            assert value(samples, "hotline_trunk_state", trunk="carrier-a", state="unknown") == 1
            assert value(samples, "process_cpu_seconds_total") > 0
            assert not any(name in ("hotline_tickets_open", "hotline_tickets_acked",
                                    "hotline_trunk_override") for name, _ in samples)
        records = [r for r in caplog.records if r.name == "ivr.metrics"]
        assert [r.levelname for r in records] == ["WARNING", "DEBUG", "DEBUG"]
        assert "Redis unreachable" in records[0].getMessage()
        assert all(r.exc_info is None for r in records), "no traceback per scrape"
        server.start()
        assert value(scrape(registry), "hotline_redis_up") == 1
        assert "Metrics: Redis reachable again" in caplog.messages
    finally:
        client.close()
        server.stop()


@pytest.mark.slow
def test_a_faq_search_is_timed_and_counted(registry: CollectorRegistry,
                                           searcher: Searcher) -> None:
    before = scrape(registry)
    result = searcher.ask("um the screen says f zero one and it stopped")
    assert result.decision is Decision.ANSWER
    after = scrape(registry)
    assert value(after, "hotline_kb_search_seconds_count") == \
        count(before, "hotline_kb_search_seconds_count") + 1
    took = value(after, "hotline_kb_search_seconds_sum") - \
        count(before, "hotline_kb_search_seconds_sum")
    assert took == pytest.approx(result.elapsed_ms / 1000)
    assert value(after, "hotline_kb_answers_total", decision="answer") == \
        count(before, "hotline_kb_answers_total", decision="answer") + 1


@pytest.mark.slow
def test_a_recognizer_final_is_timed(registry: CollectorRegistry, tmp_path: Path) -> None:
    """Whisper: the cheapest real engine to load (tiny.en, a quarter of a second)."""
    recognizer = create_recognizer(SpeechSettings(engine="whisper"), tmp_path / "models")
    before = scrape(registry)
    try:
        audio = turn(speak("Where is my order?"), tail_s=1.5)
        found = [e for start in range(0, len(audio), FRAME)
                 for e in recognizer.accept(audio[start:start + FRAME])]
    finally:
        recognizer.close()
    assert [e.kind for e in found] == ["start", "final"] and "order" in found[-1].text.lower()
    after = scrape(registry)
    assert value(after, "hotline_recognizer_seconds_count", engine="whisper") == \
        count(before, "hotline_recognizer_seconds_count", engine="whisper") + 1
    assert value(after, "hotline_recognizer_seconds_sum", engine="whisper") > \
        count(before, "hotline_recognizer_seconds_sum", engine="whisper")


def _no_calls(call: InboundCall) -> None:
    raise AssertionError("no inbound call expected")


@pytest.mark.slow
def test_outbound_setup_is_timed(registry: CollectorRegistry, carrier: Carrier,
                                 engine: RtpEngine, tmp_path: Path) -> None:
    """To the carrier, which answers 404 (no staff behind it); then to a phone that rings
    and answers: the delay is taken at the 180, once."""
    host, port = carrier.address.split(":")
    phone = Phone("uas_answer.xml", tmp_path / "phone")
    to_carrier = SipEndpoint("carrier-a", ("127.0.0.1", 0), engine, _no_calls, allowed=set(),
                             proxy=(host, int(port)))
    to_phone = SipEndpoint("phone-trunk", ("127.0.0.1", 0), engine, _no_calls, allowed=set(),
                           proxy=phone.address)
    for endpoint in (to_carrier, to_phone):
        endpoint.start()
    try:
        before = scrape(registry)
        call = to_carrier.place_call("1001")
        assert call.wait(5) is Outcome.REFUSED and call.status == 404
        answered = to_phone.place_call("1002")
        assert answered.wait(5) is Outcome.ANSWERED and answered.provisional == 180
        answered.hangup()
        phone.finish()
        after = scrape(registry)
    finally:
        to_carrier.stop()
        to_phone.stop()
    for trunk, result in (("carrier-a", "refused"), ("phone-trunk", "ringing")):
        labels = {"trunk": trunk, "result": result}
        assert value(after, "hotline_setup_seconds_count", **labels) == \
            count(before, "hotline_setup_seconds_count", **labels) + 1
        took = value(after, "hotline_setup_seconds_sum", **labels) - \
            count(before, "hotline_setup_seconds_sum", **labels)
        assert 0 < took < 1
        assert value(after, "hotline_setup_seconds_bucket", le="10.0", **labels) >= 1
    assert count(after, "hotline_setup_seconds_count", trunk="phone-trunk", result="answered") \
        == count(before, "hotline_setup_seconds_count", trunk="phone-trunk", result="answered")


def test_refused_sip_requests_are_counted(registry: CollectorRegistry,
                                          engine: RtpEngine) -> None:
    endpoint = SipEndpoint("carrier-z", ("127.0.0.1", 0), engine, _no_calls,
                           allowed={"127.0.0.1"})
    endpoint.start()
    try:
        labels = {"trunk": "carrier-z", "reason": "not_trunk_address"}
        before = scrape(registry)
        stranger = invite(SDP.format(m="m=audio 6000 RTP/AVP 0"))
        assert statuses(exchange(endpoint, stranger, STRANGER)) == [403]
        assert count(scrape(registry), "hotline_sip_refused_total", **labels) == \
            count(before, "hotline_sip_refused_total", **labels) + 1
    finally:
        endpoint.stop()


def by_node(registry: CollectorRegistry, name: str) -> dict[str | None, float]:
    """Metric `name`'s value on the node that exported it, summed over its other labels
    (None: a sample without a node label)."""
    values: dict[str | None, float] = {}
    for _, sample in scraped(registry):
        if sample.name == name:
            node = sample.labels.get("node")
            values[node] = values.get(node, 0.0) + sample.value
    return values


def test_summing_every_nodes_metrics_counts_the_cluster_once(
        redis_client: redis.Redis, monitor_factory: Callable[..., TrunkMonitor],
        ticket_desk: TicketDesk) -> None:
    """Two nodes' registries over one Redis, scraped as Prometheus scrapes every node."""
    leases = {name: NodeLease(redis_client, "hotline", NodeInfo(name, http=http))
              for name, http in (("node-1", "127.0.0.1:8081"), ("node-2", "127.0.0.1:8082"),
                                 ("node-0", None))}  # node-0 serves no /metrics
    for lease in leases.values():
        lease.claim()
    monitor = monitor_factory(make_trunk("carrier-a"), start=False)
    registries = {name: build_registry(monitor, redis_client, "hotline", node=name)
                  for name in ("node-1", "node-2")}
    TrunkStore(redis_client).set_override(Override("carrier-a", OverrideAction.DRAIN,
                                                   "maintenance", "pytest", time.time()))
    for said in ("the printer is on fire", "smoke from the printer"):
        ticket_desk.open(caller="+8613800000000", call_id="call-1", trunk="carrier-a",
                         reason="no confident answer", transcript=[Turn("caller", said)],
                         candidates=[])
    call_started("sip")
    try:
        def total(name: str, **labels: str) -> float:
            return sum(sample.value for registry in registries.values()
                       for _, sample in scraped(registry) if sample.name == name
                       and labels.items() <= sample.labels.items())

        assert total("hotline_tickets_open") == 2
        assert total("hotline_trunk_override", trunk="carrier-a", action="drain") == 1
        assert total("hotline_cluster_exporter") == 1
        assert by_node(registries["node-1"], "hotline_tickets_open") == {None: 2}
        assert "hotline_tickets_open" not in {n for n, _ in scraped(registries["node-2"])}
        for name, registry in registries.items():  # the node's own metrics: its name
            for metric in ("hotline_calls_active", "hotline_trunk_state", "hotline_redis_up",
                           "process_cpu_seconds_total"):
                assert list(by_node(registry, metric)) == [name], metric

        # node-1's lease lapses (a pause, say) while it is still scraped: node-2 takes over
        leases["node-1"].stop()
        assert by_node(registries["node-1"], "hotline_cluster_exporter") == {"node-1": 0}
        assert by_node(registries["node-2"], "hotline_cluster_exporter") == {"node-2": 1}
        assert by_node(registries["node-2"], "hotline_tickets_open") == {None: 2}
        assert total("hotline_tickets_open") == 2
    finally:
        call_ended("sip", "completed")
        for lease in leases.values():
            lease.stop()
