"""RTP capacity: N calls hearing a prompt, hotline's engine against stock pyVoIP, one run.

For each N, N far ends hear a prompt, sent three ways in turn:

- `hotline-sip`: the whole server. sipp places N real calls (50 per second) to the
  hotline's SIP endpoint; each call's flow plays a prompt through the RTP engine;
- `hotline-engine`: hotline's `RtpEngine` alone (one thread for all streams),
  driven from this process, as a check on what the SIP layer adds;
- `pyVoIP`: N stock pyVoIP 1.6.8 `RTPClient`s (two threads each, relative sleeps).

The far ends are N sockets in a separate receiver process that records the
kernel's receive timestamp of every packet (SO_TIMESTAMPNS), so the receiver's
own scheduling does not distort the gaps. Reported per N: p99 and worst
inter-packet gap, and the deficit: how many fewer packets arrived than 50 per
second per stream.

    python bench/rtp_capacity.py [--calls 50,100,200,300] [--seconds 10]
"""

from __future__ import annotations

import argparse
import datetime
import json
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyVoIP.VoIP  # noqa: E402, F401  (pyVoIP.RTP needs it first)
from pyVoIP.RTP import PayloadType, RTPClient, TransmitType  # noqa: E402

from bench.sip_callers import callers, hotline, port_of  # noqa: E402
from ivr.server import Server  # noqa: E402
from speech.g711 import ulaw_encode  # noqa: E402
from trunks.voip.media import PCMU, RtpEngine  # noqa: E402

FRAME_S = 0.020
WARM_UP_S = 1.0
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TARGET_GAP_MS, TARGET_DEFICIT = 25.0, 0.005
CALL_RATE = 50.0
"""Calls per second sipp places in the SIP-level run."""
KINDS = ("hotline-sip", "hotline-engine", "pyVoIP")


def receive(count: int, seconds: float, lead: float) -> None:
    """Receiver process: print ports, record arrival times, print statistics as JSON."""
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        socks.append(sock)
    print(json.dumps([s.getsockname()[1] for s in socks]), flush=True)
    arrivals: list[list[float]] = [[] for _ in socks]
    selector = selectors.DefaultSelector()
    for i, sock in enumerate(socks):
        selector.register(sock, selectors.EVENT_READ, i)
    sys.stdin.readline()  # the sender says "go" when its streams are set up
    end = time.time() + lead + WARM_UP_S + seconds + 0.5
    while time.time() < end:
        for key, _ in selector.select(0.1):
            sock = socks[key.data]
            while True:
                try:
                    _, ancillary, _, _ = sock.recvmsg(2048, 64)
                except BlockingIOError:
                    break
                for level, kind, data in ancillary:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", data[:16])
                        arrivals[key.data].append(sec + nsec / 1e9)
    print(json.dumps(statistics(arrivals, seconds)), flush=True)


def statistics(arrivals: list[list[float]], seconds: float) -> dict[str, float]:
    starts = [a[0] for a in arrivals if a]
    if len(starts) < len(arrivals):
        return {"p99_gap_ms": float("inf"), "max_gap_ms": float("inf"), "deficit": 1.0}
    window_start = max(starts) + WARM_UP_S
    window_end = window_start + seconds
    gaps, received = [], 0
    for times in arrivals:
        inside = np.array([t for t in times if window_start <= t < window_end])
        received += len(inside)
        if len(inside) > 1:
            gaps.append(np.diff(inside))
    all_gaps = np.concatenate(gaps) * 1000 if gaps else np.array([float("inf")])
    expected = len(arrivals) * seconds / FRAME_S
    return {"p99_gap_ms": float(np.percentile(all_gaps, 99)),
            "max_gap_ms": float(all_gaps.max()),
            "deficit": max(0.0, 1.0 - received / expected)}


def run(kind: str, count: int, seconds: float, prompt: bytes,
        server: Server) -> dict[str, float]:
    lead = count / CALL_RATE if kind == "hotline-sip" else 0.0  # sipp placing the calls
    receiver = subprocess.Popen([sys.executable, __file__, "--receive", str(count),
                                 "--seconds", str(seconds), "--lead", str(lead)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert receiver.stdin is not None and receiver.stdout is not None
    ports = json.loads(receiver.stdout.readline())
    if kind == "hotline-sip":
        stop = start_calls(server, ports, lead + WARM_UP_S + seconds + 1.0)
    else:
        stop = start_senders(kind, ports, prompt)
    try:
        receiver.stdin.write("go\n")
        receiver.stdin.flush()
        result: dict[str, float] = json.loads(receiver.stdout.readline())
    finally:
        stop()
        receiver.wait(30)
    return result


def start_calls(server: Server, ports: list[int], seconds: float) -> Callable[[], None]:
    work = Path(tempfile.mkdtemp(prefix="sipp-"))
    sipp = callers(port_of(server), ports, CALL_RATE, int(seconds * 1000), work)

    def stop() -> None:
        try:
            sipp.wait(60)
        finally:
            if sipp.poll() is None:
                sipp.kill()
                sipp.wait()
        engine = server.engine
        deadline = time.monotonic() + 30
        while engine is not None and engine.stream_count and time.monotonic() < deadline:
            time.sleep(0.1)  # every call has hung up before the next run
        if sipp.returncode != 0:
            errors = "".join(p.read_text() for p in work.glob("*_errors.log"))
            print(f"warning: sipp exited {sipp.returncode}: {errors[-500:]}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)

    return stop


def start_senders(kind: str, ports: list[int], prompt: bytes) -> Callable[[], None]:
    if kind == "hotline-engine":
        engine = RtpEngine()
        engine.start()
        for port in ports:
            engine.open(PCMU, remote=("127.0.0.1", port)).play(ulaw_encode(prompt))
        return engine.stop
    clients = []
    pcm8 = bytes(((np.frombuffer(prompt, "<i2").astype(np.int32) >> 8) + 128).astype(np.uint8))
    for port in ports:
        client = RTPClient({0: PayloadType.PCMU}, "127.0.0.1", 0, "127.0.0.1", port,
                           TransmitType.SENDRECV)
        client.start()
        client.write(pcm8)  # pyVoIP takes 8-bit unsigned audio
        clients.append(client)

    def stop() -> None:
        for client in clients:
            client.stop()
        time.sleep(0.2)  # its threads notice NSD on their next loop

    return stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="50,100,200,300")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--receive", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--lead", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "rtp-capacity.md")
    args = parser.parse_args()
    if args.receive:
        receive(args.receive, args.seconds, args.lead)
        return
    warnings.simplefilter("ignore")  # pyVoIP warns on every failed send and imports audioop
    duration = args.seconds + WARM_UP_S + 5
    t = np.arange(int(8000 * duration)) / 8000
    prompt = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    counts = [int(n) for n in args.calls.split(",")]
    rows = []
    with hotline(prompt_s=max(counts) / CALL_RATE + duration + 30) as server:
        for count in counts:
            found = {kind: run(kind, count, args.seconds, prompt, server) for kind in KINDS}
            for kind, result in found.items():
                print(f"N={count} {kind}: p99 gap {result['p99_gap_ms']:.1f} ms, "
                      f"max {result['max_gap_ms']:.1f} ms, deficit {result['deficit']:.2%}",
                      flush=True)
            ours, theirs = found["hotline-sip"], found["pyVoIP"]
            cells = [f"{found[k]['p99_gap_ms']:.1f} / {found[k]['max_gap_ms']:.1f} / "
                     f"{found[k]['deficit']:.2%}" for k in KINDS]
            rows.append(f"| {count} | {' | '.join(cells)} | "
                        f"{theirs['p99_gap_ms'] / ours['p99_gap_ms']:.1f}x |")
    report(args.out, args.seconds, rows)


def report(out: Path, seconds: float, rows: list[str]) -> None:
    table = "\n".join([
        "| calls | hotline over SIP: p99 gap ms / max gap ms / deficit | hotline engine alone | "
        "stock pyVoIP RTPClient | p99 ratio (pyVoIP / hotline over SIP) |",
        "|---|---|---|---|---|", *rows])
    print("\n" + table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"""# RTP capacity: hotline's engine vs stock pyVoIP 1.6.8

Measured by `make bench` (`bench/rtp_capacity.py`) on {datetime.date.today().isoformat()}, all
in one run on this machine. N far-end sockets in a separate receiver process hear a 440 Hz
prompt as 20 ms G.711 packets and take the kernel's receive timestamps. "Hotline over SIP"
is the whole server: sipp places the N calls ({CALL_RATE:g} per second) to its SIP endpoint,
each call's SDP naming one of the sockets, and each call's flow plays the prompt. "Engine
alone" drives the RTP engine directly; "stock pyVoIP" runs N pyVoIP 1.6.8 `RTPClient`s. The
first {WARM_UP_S:g} s after the last stream starts is warm-up; statistics cover the next
{seconds:g} s. Deficit is how many fewer packets arrived than 50 per second per stream.
Target: 300 calls with p99 gap <= {TARGET_GAP_MS:g} ms and deficit < {TARGET_DEFICIT:.1%}.

{table}
""")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
