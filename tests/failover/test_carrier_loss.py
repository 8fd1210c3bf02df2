"""Losing the primary carrier during steady calls, end to end: sipp callers come in
through the backup carrier (Kamailio) a few per second; the hotline forwards each to a
sipp staff phone through the primary carrier while it lives, and the primary is killed
midway. No caller may see a failed set-up; the calls after the kill go through the
backup. `bench/failover_load.py` measures the same under more load, with timings."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ivr.records import CallRecord, CallStore
from ivr.server import Server
from ivr.settings import load_settings
from tests.conftest import wait_for, wait_trunks_up
from tests.peers import (
    Carrier,
    RedisServer,
    end_process,
    forward_flow,
    free_udp_port,
    require,
    sipp_trace,
    staff_roster,
    wait_udp_bound,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

BENCH_SIPP = Path(__file__).resolve().parents[2] / "bench" / "sipp"
RATE = 3.0
"""Calls per second."""
CALLS = 45
HOLD_S = 3.0
"""How long each caller stays on the line once put through."""
KILL_AFTER_S = 6.0
"""Seconds after the first call that the primary carrier is killed."""
PEOPLE = int(RATE * (HOLD_S + 2)) + 5
"""A person talking to one caller is not rung for another: enough staff for the load."""
FLOW = forward_flow(ring_s=5)


class Sipp:
    """A sipp process of the test's own, killed at teardown if still running."""

    def __init__(self, args: list[str], workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.process = subprocess.Popen([require("sipp", "sip-tester"), *args], cwd=workdir,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return -1

    def errors(self) -> str:
        return "".join(p.read_text(errors="replace")
                       for p in self.workdir.glob("*_errors.log"))[-3000:]

    def stop(self) -> None:
        end_process(self.process)


@pytest.fixture
def peers() -> Iterator[contextlib.ExitStack]:
    """Whatever the test starts on this stack is stopped after it, in reverse order."""
    with contextlib.ExitStack() as stack:
        yield stack


def staff_phone(stack: contextlib.ExitStack, workdir: Path) -> tuple[Sipp, int]:
    """The staff phone: answers every call at once and waits for its BYE."""
    port = free_udp_port()
    phone = Sipp(["-sf", str(BENCH_SIPP / "uas_answer_hold.xml"), "-i", "127.0.0.1", "-p",
                  str(port), "-mp", str(free_udp_port()), "-nostdin", "-trace_msg",
                  "-trace_err"], workdir)
    stack.callback(phone.stop)
    wait_udp_bound(port)
    return phone, port


def carrier(stack: contextlib.ExitStack, carrier: Carrier) -> Carrier:
    stack.callback(carrier.stop)
    carrier.start()
    return carrier


def hotline(stack: contextlib.ExitStack, tmp_path: Path, redis_server: RedisServer,
            trunks: dict[str, tuple[Carrier, int]]) -> Server:
    """The hotline with `trunks` (name: carrier, listen port), best first; default probes
    (OPTIONS every 15 s), so a carrier's death shows first in the calls' set-ups."""
    (tmp_path / "ivr.yaml").write_text(FLOW)
    (tmp_path / "oncall.yaml").write_text(staff_roster(PEOPLE))
    lines = [f'  - {{name: {name}, mode: ip, proxy: "{peer.address}", '
             f'listen: "127.0.0.1:{listen}", priority: {i + 1}}}'
             for i, (name, (peer, listen)) in enumerate(trunks.items())]
    (tmp_path / "hotline.yaml").write_text(
        f"node: node-1\ndata_dir: {tmp_path / 'var'}\n"
        f'redis: {{url: "{redis_server.url}"}}\ntrunks:\n' + "\n".join(lines) + "\n")
    server = Server(load_settings(tmp_path / "hotline.yaml"))
    stack.callback(server.stop)
    server.start()
    wait_trunks_up(server)
    return server


def finished_records(client: redis.Redis, count: int) -> list[CallRecord]:
    store = CallStore(client)
    wait_for(lambda: len([r for r in store.recent(count + 5) if r.ended_at]) >= count,
             timeout=30, what=f"{count} finished call records")
    return sorted(store.recent(count + 5), key=lambda r: r.started_at)


def test_killing_the_primary_carrier_during_steady_calls_fails_no_set_up(
        peers: contextlib.ExitStack, redis_server: RedisServer, redis_client: redis.Redis,
        tmp_path: Path) -> None:
    phone, phone_port = staff_phone(peers, tmp_path / "staff")
    staff = ("127.0.0.1", phone_port)
    listen = {"primary": free_udp_port(), "backup": free_udp_port()}
    primary = carrier(peers, Carrier(tmp_path / "primary", host="127.0.0.3", staff=staff))
    backup = carrier(peers, Carrier(tmp_path / "backup", host="127.0.0.4",
                                    hotline=("127.0.0.1", listen["backup"]), staff=staff))
    hotline(peers, tmp_path, redis_server, {"primary": (primary, listen["primary"]),
                                            "backup": (backup, listen["backup"])})

    callers = Sipp([backup.address, "-sf", str(BENCH_SIPP / "uac_setup_hold.xml"),
                    "-s", "1000", "-r", f"{RATE:g}", "-m", str(CALLS), "-l", str(CALLS),
                    "-d", str(int(HOLD_S * 1000)), "-i", "127.0.0.1",
                    "-p", str(free_udp_port()), "-mp", str(free_udp_port()), "-nostdin",
                    "-trace_err", "-timeout", "90s"], tmp_path / "callers")
    peers.callback(callers.stop)
    time.sleep(KILL_AFTER_S)
    killed_at = time.time()
    primary.kill()
    code = callers.wait(CALLS / RATE + HOLD_S + 60)
    assert code == 0, f"a caller's call failed (sipp exit {code}):\n{callers.errors()}"

    records = finished_records(redis_client, CALLS)
    assert len(records) == CALLS
    assert [r.outcome for r in records] == ["forwarded"] * CALLS, \
        [(r.id, r.path, r.forward_attempts) for r in records if r.outcome != "forwarded"]
    before = [r for r in records if r.started_at < killed_at - 1.0]
    after = [r for r in records if r.started_at >= killed_at]
    assert len(before) >= 10 and len(after) >= 10
    assert all([(a["trunk"], a["outcome"]) for a in r.forward_attempts] ==
               [("primary", "answered")] for r in before), "the primary takes calls while up"
    for record in after:
        *failed, last = [(a["trunk"], a["outcome"]) for a in record.forward_attempts]
        assert last == ("backup", "answered"), record.forward_attempts
        assert failed in ([], [("primary", "trunk failed")]), record.forward_attempts
    phone.stop()  # calls put through the primary before it died wait for a lost BYE
    answered = {text.split("Call-ID:", 1)[1].split()[0]
                for direction, text in sipp_trace(phone.workdir)
                if direction == "sent" and text.startswith("SIP/2.0 200")
                and "INVITE" in text.split("CSeq:", 1)[1].split("\n", 1)[0]}
    assert len(answered) >= CALLS, "the staff phone answered every call"
