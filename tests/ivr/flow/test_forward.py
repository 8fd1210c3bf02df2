"""Forwarding to on-call staff, end to end: a sipp caller comes in through a Kamailio
carrier; the hotline rings sipp phones behind carriers; the audio of both phones is
owned by the test (`TonePhone`), so what crosses the bridge is checked each way."""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from ivr.cli import cli
from ivr.clock import fixed
from ivr.flow.oncall import load_oncall
from ivr.quality import MOS_BAD, MOS_POOR
from ivr.records import CallRecord, CallStore
from ivr.server import Server
from ivr.settings import load_settings
from tests.conftest import FAST_PROBES, wait_for, wait_trunks_up
from tests.peers import SIPP_SCENARIOS, Carrier, Phone, RedisServer, free_udp_port, require
from tests.rtp_peer import RtpPeer
from tests.tone_phone import PCMA, TonePhone

pytestmark = pytest.mark.slow

FLOW = """\
start: connect
voice: {engine: espeak}
nodes:
  connect: {type: forward, ring_s: 5, next: bye, failure: nobody}
  bye: {type: hangup, text: Goodbye.}
  nobody: {type: hangup, text: Nobody is free.}
"""
ONCALL = """\
timezone: UTC
people:
  alice: {name: Alice, phone: "1001"}
  bob: {name: Bob, phone: "1002"}
rotation: {order: [alice, bob], start: 2026-01-05, every_days: 1}
"""
NOW = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)
"""The hotline's clock in these tests: Alice's day (an even number of days after the
rotation's start), so Bob is rung next."""
ROSTER = ["alice", "bob"]
CALLER_HZ, STAFF_HZ = 1000.0, 1500.0

Hotline = Callable[[list[tuple[str, Carrier, int]]], Server]


@pytest.fixture
def tones() -> Iterator[Callable[..., TonePhone]]:
    phones: list[TonePhone] = []

    def make(hz: float, payload_type: int = 0) -> TonePhone:
        phones.append(TonePhone(hz, payload_type))
        return phones[-1]

    yield make
    for phone in phones:
        phone.close()


@pytest.fixture
def hotline(tmp_path: Path, redis_server: RedisServer,
            redis_client: redis.Redis) -> Iterator[Hotline]:
    """Start the hotline with trunks (name, carrier, listen port), best first."""
    servers: list[Server] = []
    (tmp_path / "ivr.yaml").write_text(FLOW)
    (tmp_path / "oncall.yaml").write_text(ONCALL)

    def start(trunks: list[tuple[str, Carrier, int]]) -> Server:
        probe = FAST_PROBES.model_dump()
        lines = [f'  - {{name: {name}, mode: ip, proxy: "{carrier.address}", '
                 f'listen: "127.0.0.1:{listen}", priority: {i + 1}, probe: {probe}}}'
                 for i, (name, carrier, listen) in enumerate(trunks)]
        (tmp_path / "hotline.yaml").write_text(
            f"node: node-1\ndata_dir: {tmp_path / 'var'}\n"
            f'redis: {{url: "{redis_server.url}"}}\ntrunks:\n' + "\n".join(lines) + "\n")
        servers.append(Server(load_settings(tmp_path / "hotline.yaml"), now=fixed(NOW)))
        servers[-1].start()
        wait_trunks_up(servers[-1])
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


OneCarrier = Callable[[Phone], tuple[Carrier, int, Server]]


@pytest.fixture
def one_carrier(hotline: Hotline, tmp_path: Path) -> Iterator[OneCarrier]:
    """Start a carrier that routes callers to the hotline and the hotline's calls to the
    `staff` phone, and the hotline on it; returns (carrier, hotline's port, server)."""
    carriers: list[Carrier] = []

    def start(staff: Phone) -> tuple[Carrier, int, Server]:
        listen = free_udp_port()
        carriers.append(Carrier(tmp_path / "carrier", host="127.0.0.3",
                                hotline=("127.0.0.1", listen), staff=staff.address))
        carriers[-1].start()
        return carriers[-1], listen, hotline([("carrier-a", carriers[-1], listen)])

    yield start
    for carrier in carriers:
        carrier.stop()


def caller(carrier: Carrier, media: TonePhone | RtpPeer, workdir: Path) -> subprocess.Popen[str]:
    """A caller through `carrier` whose audio is `media`; it ends on the hotline's BYE."""
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [require("sipp", "sip-tester"), carrier.address, "-sf",
         str(SIPP_SCENARIOS / "uac_forwarded.xml"), "-key", "rtp_port", str(media.port),
         "-m", "1", "-s", "400", "-i", "127.0.0.1", "-p", str(free_udp_port()),
         "-timeout", "40s", "-timeout_error", "-nostdin", "-trace_err"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def call(carrier: Carrier, media: TonePhone, workdir: Path) -> None:
    """A whole call (see `caller`); fails the test if sipp did not complete it."""
    finish(caller(carrier, media, workdir), workdir)


def finish(process: subprocess.Popen[str], workdir: Path) -> None:
    try:
        _, stderr = process.communicate(timeout=50)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    if process.returncode != 0:
        errors = "".join(p.read_text() for p in workdir.glob("*_errors.log"))
        pytest.fail(f"sipp caller failed ({process.returncode}):\n{errors[-3000:]}\n{stderr}")


def finished_record(client: redis.Redis) -> CallRecord:
    store = CallStore(client)
    wait_for(lambda: bool(store.recent(1)) and store.recent(1)[0].ended_at is not None,
             what="the call's record")
    [record] = store.recent(5)
    return record


def test_the_roster_at_the_tests_clock(tmp_path: Path) -> None:
    (tmp_path / "oncall.yaml").write_text(ONCALL)
    assert load_oncall(tmp_path / "oncall.yaml").roster(NOW) == ROSTER


def test_answered_forward_bridges_audio_both_ways(
        one_carrier: OneCarrier, tones: Callable[..., TonePhone], redis_client: redis.Redis,
        tmp_path: Path) -> None:
    staff_audio = tones(STAFF_HZ, PCMA)  # the staff phone answers in A-law: transcoding
    staff = Phone("uas_answer_then_hang_up.xml", tmp_path / "staff",
                  keys={"rtp_port": str(staff_audio.port)})
    carrier, _, _ = one_carrier(staff)
    caller_audio = tones(CALLER_HZ)
    call(carrier, caller_audio, tmp_path / "caller")
    staff.finish()
    record = finished_record(redis_client)
    assert record.path == ["connect", "bye"] and record.outcome == "forwarded"
    assert record.forwarded_to == "alice"
    [attempt] = record.forward_attempts
    assert attempt | {"quality": None} == {"person": "alice", "trunk": "carrier-a",
                                           "outcome": "answered", "status": 200, "reason": "OK",
                                           "quality": None}
    assert staff.received("INVITE sip:1001@")

    answered = staff_audio.heard[0][0]  # the staff phone hears nothing before its 200 OK
    ringback = caller_audio.dominant_hz(until=answered)
    assert ringback is not None and min(abs(ringback - 440), abs(ringback - 480)) < 10, \
        "the caller hears ringback while the phone rings"
    talk = {"since": answered + 0.3, "until": answered + 2.5}
    heard_by_staff = staff_audio.dominant_hz(**talk)
    assert heard_by_staff is not None and abs(heard_by_staff - CALLER_HZ) < 10
    heard_by_caller = caller_audio.dominant_hz(**talk)
    assert heard_by_caller is not None and abs(heard_by_caller - STAFF_HZ) < 10
    # undistorted: each side's law was translated, not passed through as the other's
    # (measured: 0.9999 translated, 0.91-0.93 passed through untranslated)
    assert staff_audio.purity(CALLER_HZ, **talk) > 0.99
    assert caller_audio.purity(STAFF_HZ, **talk) > 0.99


def test_each_bridged_leg_keeps_how_it_sounded(
        one_carrier: OneCarrier, redis_client: redis.Redis, tmp_path: Path) -> None:
    # the staff phone loses 1 in 20 packets on their way to us and 1 in 5 of ours, and
    # says so in its RTCP; the caller's phone is clean and sends no RTCP
    with RtpPeer(drop_sent=20, drop_received=5, payload_type=PCMA) as staff_media, \
            RtpPeer(report_s=None) as caller_media:
        staff = Phone("uas_answer_then_hang_up.xml", tmp_path / "staff",
                      keys={"rtp_port": str(staff_media.port)})
        carrier, _, _ = one_carrier(staff)
        finish(caller(carrier, caller_media, tmp_path / "caller"), tmp_path / "caller")
        staff.finish()
    record = finished_record(redis_client)
    assert record.outcome == "forwarded"

    assert record.quality is not None and record.quality["reports_received"] == 0
    assert record.quality["received_loss_percent"] == 0 and record.quality["mos"] >= MOS_POOR
    [attempt] = record.forward_attempts
    staff_leg = attempt["quality"]
    assert 3 < staff_leg["received_loss_percent"] < 7, staff_leg
    assert 10 < staff_leg["sent_loss_percent"] < 30, staff_leg
    assert staff_leg["reports_received"] >= 2 and staff_leg["mos"] < MOS_BAD

    [newest, older] = CallStore(redis_client).trunk_legs(["carrier-a"], 20)["carrier-a"]
    assert {newest["leg"], older["leg"]} == {"caller", "alice"}
    shown = CliRunner().invoke(cli, ["calls", "show", record.id, "--config",
                                     str(tmp_path / "hotline.yaml")]).output.splitlines()
    assert f"  alice via carrier-a: MOS {staff_leg['mos']:.2f} (bad)" in shown
    caller_at = shown.index(f"  caller via carrier-a: MOS {record.quality['mos']:.2f} (good)")
    assert shown[caller_at + 2] == "    sent:     no RTCP from the peer"


def test_busy_staff_escalate_then_the_failure_branch(
        one_carrier: OneCarrier, tones: Callable[..., TonePhone], redis_client: redis.Redis,
        tmp_path: Path) -> None:
    staff = Phone("uas_busy.xml", tmp_path / "staff", calls=2)
    carrier, _, _ = one_carrier(staff)
    call(carrier, tones(CALLER_HZ), tmp_path / "caller")
    staff.finish()
    record = finished_record(redis_client)
    assert record.path == ["connect", "nobody"] and record.forwarded_to is None
    assert [(a["person"], a["outcome"], a["status"]) for a in record.forward_attempts] == [
        (person, "refused", 486) for person in ROSTER]
    shown = CliRunner().invoke(cli, ["calls", "show", record.id, "--config",
                                     str(tmp_path / "hotline.yaml")])
    assert shown.exit_code == 0, shown.output
    assert "  bob via carrier-a: refused (486 Busy Here)" in shown.output
    numbers = {"alice": "1001", "bob": "1002"}
    dialled = [text.split()[1] for text in staff.received("INVITE")]
    assert [d.split("@")[0] for d in dialled] == [f"sip:{numbers[p]}" for p in ROSTER]


def test_setup_failing_on_a_trunk_moves_to_the_next_trunk(
        hotline: Hotline, tones: Callable[..., TonePhone], redis_client: redis.Redis,
        tmp_path: Path) -> None:
    staff_audio = tones(STAFF_HZ, PCMA)
    staff = Phone("uas_answer_then_hang_up.xml", tmp_path / "staff",
                  keys={"rtp_port": str(staff_audio.port)})
    listen_a, listen_b = free_udp_port(), free_udp_port()
    failing = Carrier(tmp_path / "carrier-a", host="127.0.0.3", fail_invites=True)
    working = Carrier(tmp_path / "carrier-b", host="127.0.0.4",
                      hotline=("127.0.0.1", listen_b), staff=staff.address)
    failing.start()
    working.start()
    try:
        hotline([("carrier-a", failing, listen_a), ("carrier-b", working, listen_b)])
        call(working, tones(CALLER_HZ), tmp_path / "caller")
        staff.finish()
    finally:
        failing.stop()
        working.stop()
    record = finished_record(redis_client)
    assert [(a["person"], a["trunk"], a["outcome"], a["status"])
            for a in record.forward_attempts] == [
        ("alice", "carrier-a", "trunk failed", 503), ("alice", "carrier-b", "answered", 200)]
    assert record.forwarded_to == "alice" and failing.requests("INVITE") == 1


def test_shutdown_during_a_forward_ends_both_legs_and_completes_the_record(
        one_carrier: OneCarrier, tones: Callable[..., TonePhone], redis_client: redis.Redis,
        tmp_path: Path) -> None:
    staff = Phone("uas_ring_forever.xml", tmp_path / "staff")
    carrier, listen, server = one_carrier(staff)
    ringing = caller(carrier, tones(CALLER_HZ), tmp_path / "caller")
    wait_for(lambda: carrier.requests("INVITE", listen) == 1, what="the staff call")
    server.stop()
    finish(ringing, tmp_path / "caller")  # the hotline's BYE reached the caller
    staff.finish()  # and its CANCEL reached the ringing phone
    assert carrier.requests("INVITE", listen) == 1, "nobody else is rung once the call ends"
    record = finished_record(redis_client)
    assert record.path == ["connect"] and record.end_reason == "hung up by hotline"
    assert record.outcome == "hung up by hotline" and record.ended_at is not None
