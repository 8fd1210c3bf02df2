"""How a call sounded, end to end: a caller whose media loses a known share of packets
each way (`RtpPeer`) calls a trunk's real SIP endpoint; the live and final call records,
the trunk's quality list, `hotline calls show` and /metrics say what was lost, both ways."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from ivr.calls.handler import CallHandler
from ivr.cli import cli
from ivr.flow.model import Flow
from ivr.flow.runner import FlowRunner
from ivr.metrics import build_registry
from ivr.quality import MOS_BAD, MOS_POOR
from ivr.records import SPOOL_PATH, CallRecord, CallStore, RecordSpool, RecordWriter
from speech.prompts import PromptCache
from tests.conftest import wait_for
from tests.ivr.conftest import WriteConfig
from tests.ivr.http.test_metrics import Samples, count, scrape
from tests.peers import RedisServer
from tests.rtp_peer import RtpPeer
from tests.sip_caller import SipCaller
from trunks.voip.endpoint import SipEndpoint
from trunks.voip.media import RtpEngine

pytestmark = pytest.mark.slow

FLOW = {"start": "menu", "voice": {"engine": "espeak"}, "nodes": {
    "menu": {"type": "menu", "text": "Press one.", "options": {"1": "bye"}, "timeout_s": 30,
             "retries": 1, "failure": "bye"},
    "bye": {"type": "hangup"}}}
"""A caller who never presses a key waits in one step: only the writer's refreshes can
bring the live record's quality up to date."""
RTCP_INTERVAL_S = 0.2
REFRESH_S = 0.2


@dataclass
class Hotline:
    endpoint: SipEndpoint
    store: CallStore
    config: str
    """A hotline.yaml on the same Redis, for the CLI."""


@pytest.fixture
def hotline(espeak_prompts: PromptCache, redis_client: redis.Redis, redis_server: RedisServer,
            write_config: WriteConfig, tmp_path: Path) -> Iterator[Hotline]:
    """A trunk's endpoint answering with the flow, on an engine that reports every ~0.2 s
    and a record writer that refreshes live records every 0.2 s."""
    flow = Flow.model_validate(FLOW)
    espeak_prompts.warm(*flow.prompts())
    engine = RtpEngine(rtcp_interval_s=RTCP_INTERVAL_S)
    engine.start()
    store = CallStore(redis_client)
    writer = RecordWriter(store, RecordSpool(tmp_path / SPOOL_PATH), refresh_s=REFRESH_S)
    writer.start()
    endpoint = SipEndpoint("carrier-a", ("127.0.0.1", 0), engine,
                           CallHandler(FlowRunner(flow, espeak_prompts), writer, "carrier-a"),
                           allowed={"127.0.0.1"})
    endpoint.start()
    config = write_config({"carrier-a": "127.0.0.1:5999"}, redis_url=redis_server.url)
    try:
        yield Hotline(endpoint, store, str(config))
    finally:
        endpoint.stop()
        writer.stop()
        engine.stop()


def call_through(hotline: Hotline, peer: RtpPeer, call_id: str, seconds: float) -> CallRecord:
    """Call with `peer` as the caller's media, talk `seconds`, hang up; the final record."""
    caller = SipCaller(hotline.endpoint.address, peer.port, call_id)
    try:
        caller.call()
        wait_for(lambda: peer.sent >= seconds / 0.02, timeout=seconds + 5,
                 what=f"{seconds:g} s of the caller's audio")
        caller.hang_up()
    finally:
        caller.close()
    return finished(hotline.store, call_id)


def finished(store: CallStore, call_id: str) -> CallRecord:
    wait_for(lambda: (r := store.get(call_id)) is not None and r.ended_at is not None,
             what="the finished record")
    record = store.get(call_id)
    assert record is not None
    return record


def shown(hotline: Hotline, call_id: str) -> list[str]:
    result = CliRunner().invoke(cli, ["calls", "show", call_id, "--config", hotline.config])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    return lines[lines.index("quality:"):]


def observed(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return count(after, name, **labels) - count(before, name, **labels)


def test_a_lossy_call_is_recorded_with_its_loss_both_ways(
        hotline: Hotline, redis_client: redis.Redis) -> None:
    registry = build_registry(None, redis_client, node="node-1")
    before = scrape(registry)
    # 1 in 10 of the caller's packets never reach us; 1 in 4 of ours never reach it
    with RtpPeer(drop_sent=10, drop_received=4, report_s=0.5) as peer:
        caller = SipCaller(hotline.endpoint.address, peer.port, "quality-lossy")
        try:
            caller.call()
            # the caller sits in the menu: its record shows the quality as it goes
            wait_for(lambda: (r := hotline.store.get("quality-lossy")) is not None
                     and r.quality is not None and r.quality["rtt_ms"] is not None
                     and r.quality["reports_received"] >= 2, what="the live call's quality")
            live = hotline.store.get("quality-lossy")
            assert live is not None and live.ended_at is None and live.path == ["menu"]
            assert live.quality is not None and live.quality["received_lost"] > 0
            caller.hang_up()
        finally:
            caller.close()
        record = finished(hotline.store, "quality-lossy")
        reports = peer.reports_sent

    quality = record.quality
    assert quality is not None
    assert 8 < quality["received_loss_percent"] < 12, quality
    assert abs(quality["received_lost"] - quality["received_packets"] / 10) <= 1
    assert 15 < quality["sent_loss_percent"] < 35, quality  # of the peer's latest report
    assert 0 <= quality["rtt_ms"] < 50, "loopback"
    assert 2 <= quality["reports_received"] <= reports
    assert quality["mos"] < MOS_BAD, "10 % lost one way, 25 % the other: bad"

    [leg] = hotline.store.trunk_legs(["carrier-a"], 20)["carrier-a"]
    assert leg["call"] == "quality-lossy" and leg["leg"] == "caller"
    assert leg["mos"] == quality["mos"] and leg["at"] == record.ended_at

    section = shown(hotline, "quality-lossy")
    assert section[1] == f"  caller via carrier-a: MOS {quality['mos']:.2f} (bad)"
    assert section[2].startswith(f"    received: {quality['received_loss_percent']:.2f} % "
                                 f"lost ({quality['received_lost']} of "
                                 f"{quality['received_packets']} packets), jitter ")
    assert section[3].startswith(f"    sent:     {quality['sent_loss_percent']:.2f} % lost,")
    assert section[3].endswith(f"(the peer's latest of {quality['reports_received']} RTCP "
                               "reports)")
    assert section[4] == f"    RTT:      {quality['rtt_ms']:.1f} ms"

    after = scrape(registry)
    trunk = {"trunk": "carrier-a"}
    assert observed(before, after, "hotline_call_mos_count", **trunk) == 1
    assert observed(before, after, "hotline_call_mos_bucket", le="3.1", **trunk) == 1
    for direction, loss in (("received", quality["received_loss_percent"]),
                            ("sent", quality["sent_loss_percent"])):
        labels = {**trunk, "direction": direction}
        assert observed(before, after, "hotline_call_loss_ratio_count", **labels) == 1
        assert observed(before, after, "hotline_call_loss_ratio_sum", **labels) == \
            pytest.approx(loss / 100)
        assert observed(before, after, "hotline_call_jitter_seconds_count", **labels) == 1
    assert observed(before, after, "hotline_call_rtt_seconds_count", **trunk) == 1


def test_a_peer_without_rtcp_is_measured_one_way(hotline: Hotline,
                                                 redis_client: redis.Redis) -> None:
    registry = build_registry(None, redis_client, node="node-1")
    before = scrape(registry)
    with RtpPeer(report_s=None) as peer:
        record = call_through(hotline, peer, "quality-no-rtcp", 1.5)

    quality = record.quality
    assert quality is not None and quality["reports_received"] == 0
    assert quality["received_loss_percent"] == 0 and quality["received_packets"] > 50
    assert quality["sent_loss_percent"] is None and quality["rtt_ms"] is None
    assert quality["mos"] >= MOS_POOR, "nothing lost, on loopback"

    section = shown(hotline, "quality-no-rtcp")
    assert section[1] == f"  caller via carrier-a: MOS {quality['mos']:.2f} (good)"
    assert section[2].startswith("    received: 0.00 % lost (0 of ")
    assert section[3:5] == ["    sent:     no RTCP from the peer",
                            "    RTT:      no RTCP from the peer"]

    after = scrape(registry)
    labels = {"trunk": "carrier-a"}
    assert observed(before, after, "hotline_call_mos_count", **labels) == 1
    assert observed(before, after, "hotline_call_loss_ratio_count", direction="received",
                    **labels) == 1
    assert observed(before, after, "hotline_call_loss_ratio_count", direction="sent",
                    **labels) == 0, "no report, nothing observed"
    assert observed(before, after, "hotline_call_rtt_seconds_count", **labels) == 0
