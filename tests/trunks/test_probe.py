"""OPTIONS probes against a real Kamailio carrier and against a hostile UDP peer."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import FAST_PROBES
from tests.peers import Carrier
from trunks.config import TrunkConfig
from trunks.errors import ProbeRejected, ProbeTimeout, ProbeUnreachable
from trunks.probe import OptionsProbe, ProbeOutcome, probe_once
from trunks.voip import parse_message


def trunk_for(address: str) -> TrunkConfig:
    return TrunkConfig(name="carrier-a", mode="ip", proxy=address, probe=FAST_PROBES)


@pytest.fixture
def probe(carrier: Carrier) -> Iterator[OptionsProbe]:
    p = OptionsProbe(trunk_for(carrier.address))
    yield p
    p.close()


def test_answered_probe_reports_rtt(probe: OptionsProbe, carrier: Carrier) -> None:
    outcomes = [probe_once(probe) for _ in range(3)]
    assert all(o.error is None and o.rtt_s is not None and 0 < o.rtt_s < 0.3 for o in outcomes)
    assert carrier.requests("OPTIONS") == 3 + 1  # plus the fixture's readiness ping


def test_silent_carrier_times_out_after_retransmissions(probe: OptionsProbe,
                                                        carrier: Carrier) -> None:
    probe_once(probe)
    carrier.pause()
    outcome = probe_once(probe)
    carrier.resume()
    assert isinstance(outcome.error, ProbeTimeout)
    assert str(outcome.error) == "no response to OPTIONS within 0.3 s"
    probe_once(probe)  # the carrier reads the queued datagrams once resumed
    # T1 0.1 s doubling, timeout 0.3 s: sent at 0 and 0.1; at 0.3 it times out instead
    assert carrier.requests("OPTIONS") == 1 + 1 + 2 + 1


def test_killed_carrier_is_unreachable_at_once(probe: OptionsProbe, carrier: Carrier) -> None:
    probe_once(probe)
    carrier.kill()
    outcome = probe_once(probe)
    assert isinstance(outcome.error, ProbeUnreachable)
    assert "ICMP port unreachable" in str(outcome.error)
    carrier.start()
    assert probe_once(probe).error is None


def test_unresolvable_host_is_an_unreachable_outcome() -> None:
    probe = OptionsProbe(trunk_for("no-such-host.invalid:5060"))
    outcome = probe_once(probe)
    probe.close()
    assert isinstance(outcome.error, ProbeUnreachable)
    assert "cannot resolve" in str(outcome.error)


class ScriptedPeer:
    """A UDP 'carrier' that answers each OPTIONS with replies made by `script`."""

    def __init__(self, script: Callable[[bytes], list[bytes]], host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        port = self.sock.getsockname()[1]
        self.address = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        self.script = script
        self.requests: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="scripted-peer")
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.requests.append(data)
            for reply in self.script(data):
                self.sock.sendto(reply, source)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def reply(request: bytes, status: str = "200 OK", **changes: str) -> bytes:
    """A response to `request`, with headers (Call-ID, CSeq, Via) replaced by `changes`."""
    message = parse_message(request)
    headers = {
        "Via": f"SIP/2.0/UDP 127.0.0.1;branch={message.branch}",
        "From": message.headers["From"]["raw"] + ";tag=" + message.headers["From"]["tag"],
        "To": message.headers["To"]["raw"] + ";tag=peer",
        "Call-ID": message.call_id,
        "CSeq": f"{message.cseq.number} OPTIONS",
        "Content-Length": "0",
    }
    headers.update({k.replace("_", "-"): v for k, v in changes.items()})
    lines = [f"SIP/2.0 {status}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def probe_scripted_peer(script: Callable[[bytes], list[bytes]], host: str = "127.0.0.1"
                        ) -> tuple[ProbeOutcome, OptionsProbe, ScriptedPeer]:
    """Probe once a peer that answers with `script`; return the outcome, probe and peer."""
    peer = ScriptedPeer(script, host)
    probe = OptionsProbe(trunk_for(peer.address))
    try:
        return probe_once(probe), probe, peer
    finally:
        probe.close()
        peer.close()


JUNK = [b"", b"\x00" * 40, b"SIP/2.0 200 OK\r\nVia: broken", b"\xff\xfe\xfd" * 100,
        b"SIP/2.0 200 OK\r\n\r\n", b"INVITE sip:x SIP/2.0\r\nVia: a\r\n\r\n"]


def foreign(request: bytes) -> list[bytes]:
    """Garbage, then 200s that belong to other transactions; never a real answer."""
    return [*JUNK, reply(request, Call_ID="someone-else@10.0.0.1"),
            reply(request, CSeq="999 OPTIONS"),
            reply(request, Via="SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKother"),
            reply(request, CSeq=f"{parse_message(request).cseq.number} INVITE")]


@pytest.mark.parametrize(("script", "expected"), [
    (foreign, ProbeTimeout),
    (lambda r: [reply(r, "503 Service Unavailable")], ProbeRejected),
    (lambda r: [reply(r, "408 Request Timeout")], ProbeRejected),
    (lambda r: [reply(r, "100 Trying")], ProbeTimeout),
])
def test_replies_that_must_not_count_as_alive(script: Callable[[bytes], list[bytes]],
                                              expected: type[Exception]) -> None:
    outcome, probe, _ = probe_scripted_peer(script)
    assert isinstance(outcome.error, expected)
    if script is foreign:
        assert probe.ignored >= len(JUNK) + 4


def test_a_real_answer_after_junk_is_recognised() -> None:
    outcome, probe, _ = probe_scripted_peer(lambda r: [*JUNK, reply(r, "405 Method Not Allowed")])
    assert outcome.error is None, "any 1xx-4xx final but 408 shows a live SIP stack"
    assert probe.ignored == len(JUNK)


def test_ipv6_probe_writes_bracketed_addresses() -> None:
    outcome, _, peer = probe_scripted_peer(lambda r: [reply(r)], host="::1")
    assert outcome.error is None and outcome.rtt_s is not None
    request = peer.requests[0].decode()
    assert request.startswith(f"OPTIONS sip:{peer.address} SIP/2.0\r\n")
    assert "\r\nVia: SIP/2.0/UDP [::1]:" in request
    assert "\r\nFrom: <sip:hotline-monitor@[::1]>;tag=" in request
