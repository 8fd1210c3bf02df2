"""Whole calls: a sipp caller through a Kamailio carrier into `Server`, pressing keys."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from ivr.cli import cli
from ivr.records import CallStore
from ivr.server import Server
from ivr.settings import load_settings
from tests.conftest import FAST_PROBES, wait_for
from tests.peers import Carrier, RedisServer, free_udp_port, require

pytestmark = pytest.mark.slow
SIPP = Path(__file__).resolve().parents[2] / "sipp"
DTMF_CAPTURES = Path("/usr/share/sip-tester")

FLOW = """\
start: welcome
voice: {engine: espeak}
nodes:
  welcome:
    type: say
    text: Welcome to the hotline test.
    next: menu
  menu:
    type: menu
    text: For support press one.
    options: {"1": thanks}
    timeout_s: 10
    retries: 1
    failure: bye
  thanks:
    type: hangup
    text: Thank you.
  bye:
    type: hangup
"""


@pytest.fixture
def hotline(tmp_path: Path, redis_server: RedisServer,
            redis_client: redis.Redis) -> Iterator[Carrier]:
    """A running hotline behind a Kamailio carrier; yields the carrier callers dial."""
    listen = free_udp_port()
    carrier = Carrier(tmp_path / "carrier", host="127.0.0.3", hotline=("127.0.0.1", listen))
    carrier.start()
    (tmp_path / "ivr.yaml").write_text(FLOW)
    probe = FAST_PROBES.model_dump()
    (tmp_path / "hotline.yaml").write_text(f"""\
node: node-1
data_dir: {tmp_path / "var"}
redis: {{url: "{redis_server.url}"}}
trunks:
  - {{name: carrier-a, mode: ip, proxy: "{carrier.address}", listen: "127.0.0.1:{listen}",
      probe: {probe}}}
""")
    server = Server(load_settings(tmp_path / "hotline.yaml"))
    server.start()
    try:
        yield carrier
    finally:
        server.stop()
        carrier.stop()


def caller(carrier: Carrier, digit: str) -> list[str]:
    return [require("sipp", "sip-tester"), carrier.address, "-sf",
            str(SIPP / "uac_press_digit.xml"), "-key", "digit_pcap",
            str(DTMF_CAPTURES / f"dtmf_2833_{digit}.pcap"), "-m", "1", "-s", "400",
            "-i", "127.0.0.1", "-p", str(free_udp_port()), "-mp", str(free_udp_port()),
            "-timeout", "30s", "-timeout_error", "-nostdin", "-trace_err"]


def call(carrier: Carrier, digit: str, workdir: Path) -> None:
    done = subprocess.run(caller(carrier, digit), cwd=workdir, capture_output=True,
                          text=True, timeout=40)
    if done.returncode != 0:
        errors = "".join(p.read_text() for p in workdir.glob("*_errors.log"))
        pytest.fail(f"sipp caller failed ({done.returncode}):\n{errors[-3000:]}\n{done.stderr}")


def test_caller_presses_one_and_the_call_is_recorded(
        hotline: Carrier, redis_client: redis.Redis, tmp_path: Path) -> None:
    call(hotline, "1", tmp_path)
    store = CallStore(redis_client)
    wait_for(lambda: bool(store.recent(1)) and store.recent(1)[0].ended_at is not None)
    [record] = store.recent(5)
    # the caller pressed 1 during the welcome: type-ahead carries it into the menu
    assert record.path == ["welcome", "menu", "thanks"] and record.digits == "1"
    assert record.outcome == "completed" and record.end_reason == "hung up by hotline"
    assert record.trunk == "carrier-a" and record.caller == "13900000000"
    assert record.node == "node-1", "the node that carried the call"
    assert record.answered_at is not None and record.ended_at >= record.answered_at


def test_a_live_calls_record_shows_where_it_is(
        hotline: Carrier, redis_client: redis.Redis, tmp_path: Path) -> None:
    store = CallStore(redis_client)
    process = subprocess.Popen(caller(hotline, "1"), cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(r.answered_at is not None and r.path and r.ended_at is None
                             for r in store.recent(1)), what="the live call's record")
        [live] = store.recent(1)
        assert live.path[0] == "welcome" and live.outcome is None
    finally:
        assert process.wait(40) == 0
    wait_for(lambda: store.recent(1)[0].ended_at is not None, what="the finished record")
    assert store.recent(1)[0].path == ["welcome", "menu", "thanks"]


def test_wrong_key_ends_in_the_failure_branch(
        hotline: Carrier, redis_client: redis.Redis, tmp_path: Path) -> None:
    call(hotline, "5", tmp_path)
    wait_for(lambda: bool(CallStore(redis_client).recent(1)) and
             CallStore(redis_client).recent(1)[0].ended_at is not None)
    [record] = CallStore(redis_client).recent(5)
    assert record.path == ["welcome", "menu", "bye"] and record.digits == "5"


def test_calls_cli_lists_and_shows(hotline: Carrier, redis_client: redis.Redis,
                                   tmp_path: Path) -> None:
    call(hotline, "1", tmp_path)
    wait_for(lambda: bool(CallStore(redis_client).recent(1)) and
             CallStore(redis_client).recent(1)[0].ended_at is not None)
    config = str(tmp_path / "hotline.yaml")
    listed = CliRunner().invoke(cli, ["calls", "list", "--json", "--config", config])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert row["path"] == ["welcome", "menu", "thanks"]
    assert row["started_at"].endswith("+00:00")
    table = CliRunner().invoke(cli, ["calls", "list", "--config", config]).output
    assert "welcome > menu > thanks" in table and "13900000000" in table
    shown = CliRunner().invoke(cli, ["calls", "show", row["id"][:8], "--config", config])
    assert shown.exit_code == 0 and "digits:       1" in shown.output
    missing = CliRunner().invoke(cli, ["calls", "show", "nope", "--config", config])
    assert missing.exit_code == 2 and "no call 'nope' among the last 1000" in missing.output
