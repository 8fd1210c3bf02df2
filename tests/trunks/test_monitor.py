"""The monitor against real Kamailio carriers and a real Redis."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import FAST_PROBES, wait_for
from tests.peers import Carrier, RedisServer
from trunks.config import TrunkConfig
from trunks.errors import UnknownTrunk
from trunks.health import TrunkState
from trunks.monitor import TrunkMonitor
from trunks.overrides import Override, OverrideAction
from trunks.store import TrunkStore

pytestmark = pytest.mark.slow


def make_trunk(name: str, carrier: Carrier, priority: int = 1) -> TrunkConfig:
    return TrunkConfig(name=name, mode="ip", proxy=carrier.address, priority=priority,
                       probe=FAST_PROBES)


@pytest.fixture
def monitor_factory(redis_client: redis.Redis) -> Iterator[Callable[..., TrunkMonitor]]:
    monitors: list[TrunkMonitor] = []

    def make(*trunks: TrunkConfig, client: redis.Redis = redis_client) -> TrunkMonitor:
        monitor = TrunkMonitor(list(trunks), TrunkStore(client), "node-1", heartbeat_s=0.2)
        monitor.start()
        monitors.append(monitor)
        return monitor

    yield make
    for monitor in monitors:
        monitor.stop()


def state(monitor: TrunkMonitor, trunk: str = "carrier-a") -> TrunkState:
    return monitor.snapshots()[trunk].state


def test_silent_carrier_goes_down_and_comes_back(
        carrier: Carrier, monitor_factory: Callable[..., TrunkMonitor]) -> None:
    monitor = monitor_factory(make_trunk("carrier-a", carrier))
    wait_for(lambda: state(monitor) is TrunkState.UP, what="UP")
    carrier.pause()
    # interval 1 s + timeout 0.3 s + two confirmations (0.1 s apart, 0.3 s timeout)
    wait_for(lambda: state(monitor) is TrunkState.DOWN, timeout=2.5, what="DOWN")
    assert "no response to OPTIONS" in (monitor.snapshots()["carrier-a"].last_error or "")
    carrier.resume()
    wait_for(lambda: state(monitor) is TrunkState.UP, timeout=2.0, what="UP again")
    wait_for(lambda: len(monitor.store.transitions(10)) == 5, timeout=2.0)
    events = [(e.old.value, e.new.value) for e in reversed(monitor.store.transitions(10))]
    assert events == [("unknown", "up"), ("up", "suspect"), ("suspect", "down"),
                      ("down", "recovering"), ("recovering", "up")]


def test_killed_carrier_is_down_within_a_probe_round(
        carrier: Carrier, monitor_factory: Callable[..., TrunkMonitor]) -> None:
    monitor = monitor_factory(make_trunk("carrier-a", carrier))
    wait_for(lambda: state(monitor) is TrunkState.UP, what="UP")
    carrier.kill()
    monitor.report_failure("carrier-a", "INVITE: ICMP port unreachable")
    # ICMP answers at once: three failures take two fast intervals (0.2 s)
    wait_for(lambda: state(monitor) is TrunkState.DOWN, timeout=2.0, what="DOWN")
    assert "ICMP port unreachable" in (monitor.snapshots()["carrier-a"].last_error or "")
    carrier.start()
    wait_for(lambda: state(monitor) is TrunkState.UP, timeout=3.0, what="UP after restart")


def test_a_reported_failure_on_a_healthy_trunk_clears(
        carrier: Carrier, monitor_factory: Callable[..., TrunkMonitor]) -> None:
    monitor = monitor_factory(make_trunk("carrier-a", carrier))
    wait_for(lambda: state(monitor) is TrunkState.UP, what="UP")
    before = carrier.requests("OPTIONS")
    monitor.report_failure("carrier-a", "INVITE answered 503")
    wait_for(lambda: carrier.requests("OPTIONS") > before, timeout=0.5, what="a fast probe")
    wait_for(lambda: state(monitor) is TrunkState.UP and
             monitor.snapshots()["carrier-a"].last_error == "INVITE answered 503",
             timeout=1.0, what="cleared")
    kinds = [e.new for e in monitor.store.transitions(10)]
    assert TrunkState.SUSPECT in kinds and TrunkState.DOWN not in kinds
    with pytest.raises(UnknownTrunk, match="unknown trunk 'nope'"):
        monitor.report_failure("nope", "x")


def test_garbage_during_an_outage_never_makes_the_trunk_look_alive(
        carrier: Carrier, monitor_factory: Callable[..., TrunkMonitor]) -> None:
    monitor = monitor_factory(make_trunk("carrier-a", carrier))
    wait_for(lambda: state(monitor) is TrunkState.UP, what="UP")
    carrier.kill()  # free the port, then flood the monitor's socket with junk from it
    wait_for(lambda: state(monitor) is TrunkState.DOWN, timeout=2.0, what="DOWN")
    stop = threading.Event()

    def flood() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", carrier.port))
            sock.settimeout(0.05)
            while not stop.is_set():
                try:
                    data, source = sock.recvfrom(65535)
                except TimeoutError:
                    continue
                sock.sendto(b"SIP/2.0 200 OK\r\n\r\n", source)
                sock.sendto(data, source)  # our own request echoed back
                sock.sendto(data[: len(data) // 2], source)
                sock.sendto(b"\x80\x00" + bytes(170), source)  # an RTP-looking packet

    flooder = threading.Thread(target=flood, name="flooder")
    flooder.start()
    try:
        time.sleep(2.0)
        assert state(monitor) is TrunkState.DOWN
        assert "no response to OPTIONS" in (monitor.snapshots()["carrier-a"].last_error or "")
    finally:
        stop.set()
        flooder.join()
    assert monitor.snapshots()["carrier-a"].state is TrunkState.DOWN


def test_steady_probing_respects_the_interval(
        carrier: Carrier, monitor_factory: Callable[..., TrunkMonitor]) -> None:
    monitor = monitor_factory(make_trunk("carrier-a", carrier))
    wait_for(lambda: state(monitor) is TrunkState.UP, what="UP")
    before = carrier.requests("OPTIONS")
    time.sleep(3.05)
    sent = carrier.requests("OPTIONS") - before
    assert sent in (3, 4), f"interval 1 s over 3 s sent {sent} OPTIONS"


def test_the_view_reads_health_and_overrides_at_once(
        carrier_factory: Callable[[str], Carrier], redis_client: redis.Redis,
        monitor_factory: Callable[..., TrunkMonitor]) -> None:
    a, b = carrier_factory("carrier-a"), carrier_factory("carrier-b")
    monitor = monitor_factory(make_trunk("carrier-a", a, 1), make_trunk("carrier-b", b, 2))
    wait_for(lambda: {s.state for s in monitor.snapshots().values()} == {TrunkState.UP})
    assert [t.name for t in monitor.view().trunks] == ["carrier-a", "carrier-b"]
    assert monitor.view().overrides == {}
    forced = Override("carrier-b", OverrideAction.FORCE, "drill", "ops", time.time())
    monitor.store.set_override(forced)
    assert monitor.view().overrides == {"carrier-b": forced}
    a.pause()
    wait_for(lambda: state(monitor) is TrunkState.DOWN, timeout=3.0)
    seen = monitor.view()
    assert seen.health["carrier-a"].state is TrunkState.DOWN
    assert seen.health["carrier-b"].state is TrunkState.UP and seen.overrides_error is None
    a.resume()


def test_with_redis_hung_the_view_has_the_overrides_read_last_at_once(
        carrier: Carrier, tmp_path: Path, monitor_factory: Callable[..., TrunkMonitor]) -> None:
    server = RedisServer(tmp_path / "own-redis")
    server.start()
    client = redis.Redis(unix_socket_path=str(server.socket), decode_responses=True,
                         socket_timeout=2.0)  # a read waits 2 s before it times out
    try:
        monitor = monitor_factory(make_trunk("carrier-a", carrier), client=client)
        drained = Override("carrier-a", OverrideAction.DRAIN, "maintenance", "ops", time.time())
        monitor.store.set_override(drained)
        assert monitor.view().overrides == {"carrier-a": drained}
        server.pause()
        started = time.monotonic()
        seen = monitor.view()
        assert time.monotonic() - started < 0.5, "not the client's 2 s timeout"
        assert seen.overrides == {"carrier-a": drained}, "the last ones read"
        assert "did not answer within 0.2 s; overrides as read at" in (seen.overrides_error or "")
        started = time.monotonic()
        assert monitor.view().overrides == {"carrier-a": drained}
        assert time.monotonic() - started < 0.1, "a read that hangs is not waited for again"
        server.resume()
        wait_for(lambda: monitor.view().overrides_error is None, what="fresh again")
    finally:
        server.resume()
        monitor.stop()
        client.close()
        server.stop()


def test_transitions_during_a_redis_outage_are_kept_and_delivered(
        carrier: Carrier, tmp_path: Path, monitor_factory: Callable[..., TrunkMonitor]) -> None:
    server = RedisServer(tmp_path / "own-redis")
    server.start()
    client = redis.Redis(unix_socket_path=str(server.socket), decode_responses=True,
                         socket_timeout=0.5)
    try:
        monitor = monitor_factory(make_trunk("carrier-a", carrier), client=client)
        wait_for(lambda: len(monitor.store.transitions(10)) == 1, what="first event stored")
        server.pause()
        carrier.pause()
        wait_for(lambda: state(monitor) is TrunkState.DOWN, timeout=2.5, what="DOWN")
        carrier.resume()
        wait_for(lambda: state(monitor) is TrunkState.UP, timeout=2.5, what="UP, Redis away")
        server.resume()
        wait_for(lambda: len(monitor.store.transitions(10)) == 5, timeout=8.0,
                 what="events flushed")
        assert [e.new.value for e in reversed(monitor.store.transitions(10))] == [
            "up", "suspect", "down", "recovering", "up"]
        assert monitor.store.load_health("carrier-a", "node-1").state is TrunkState.UP
    finally:
        server.resume()
        monitor.stop()
        client.close()
        server.stop()


def test_an_unexpected_error_in_the_loop_is_logged_and_survived(
        carrier: Carrier, monitor_factory: Callable[..., TrunkMonitor],
        caplog: pytest.LogCaptureFixture) -> None:
    monitor = monitor_factory(make_trunk("carrier-a", carrier))
    wait_for(lambda: state(monitor) is TrunkState.UP, what="UP")
    probe = monitor._watches["carrier-a"].probe
    real_on_timer, failures = probe.on_timer, [1]

    def broken_once(now: float) -> list[object]:
        if failures:
            failures.pop()
            raise RuntimeError("simulated bug")
        return real_on_timer(now)

    probe.on_timer = broken_once  # type: ignore[method-assign]
    wait_for(lambda: "Trunk monitor loop failed" in caplog.text, timeout=2.0)
    carrier.pause()
    wait_for(lambda: state(monitor) is TrunkState.DOWN, timeout=3.0, what="DOWN after the bug")
    carrier.resume()
