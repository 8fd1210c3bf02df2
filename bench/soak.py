"""Soak: does `hotline serve` keep a flat line over an hour of calls?

A `hotline serve` process (the real command, in its own process) takes sipp callers at
5 calls/s, each listening to its prompt for 3 s and hanging up, for `--minutes`
(60 by default: 18,000 calls). Among them one caller stays the whole time: it asks for
session timers with us as the refresher (``Session-Expires: 90;refresher=uas``), puts
the call on hold and sends hold music, so the server refreshes the session by UPDATE every
45 s for the whole run. Every `--sample-s` the server's resident memory (VmRSS), threads
and open file descriptors are read from /proc.

After a warm-up (the first sixth of the run, at least 5 minutes) the RSS samples are fitted
with a straight line against calls made: the slope, in MB per 1,000 calls, says whether
memory still grows. Target: under 0.1 MB per 1,000 calls, and threads and descriptors
flat. The issue names no reference implementation for this measure, so only the hotline
is measured.

    python bench/soak.py [--minutes 60] [--rate 5] [--sample-s 10]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sip_callers import callers, serve, write_config  # noqa: E402
from trunks.voip.message import (  # noqa: E402
    Message,
    build_response,
    format_message,
    new_branch,
    parse_message,
    via,
)
from trunks.voip.rtp import RtpPacket, build_rtp  # noqa: E402
from trunks.voip.sdp import build_sdp, read_offer  # noqa: E402

HOLD_MS = 3000
TARGET_MB_PER_1000 = 0.1
SESSION_EXPIRES_S = 90


@dataclass
class Sample:
    elapsed_s: float
    calls: int
    rss_mb: float
    threads: int
    fds: int


def calls_created(workdir: Path) -> int:
    """Calls sipp has placed so far, from its statistics file (-trace_stat)."""
    for path in workdir.glob("*_.csv"):
        lines = path.read_text().splitlines()
        if len(lines) > 1:
            header, last = lines[0].split(";"), lines[-1].split(";")
            return int(last[header.index("TotalCallCreated")])
    return 0


def read_sample(pid: int, started: float, calls: int) -> Sample:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(next(line.split()[1] for line in status.splitlines()
                      if line.startswith("VmRSS:")))
    threads = int(next(line.split()[1] for line in status.splitlines()
                       if line.startswith("Threads:")))
    return Sample(time.monotonic() - started, calls, rss_kb / 1024, threads,
                  len(os.listdir(f"/proc/{pid}/fd")))


class LongCaller:
    """One caller on hold for the whole run, its session refreshed by the server."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.sip.settimeout(0.5)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.address = self.sip.getsockname()[:2]
        self.to = "<sip:400@hotline>"
        self.cseq = 0
        self.refreshes = 0
        self.ended_by_server: str | None = None
        self.remote_rtp: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def request(self, method: str, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        if method != "ACK":
            self.cseq += 1
        host, port = self.address
        lines = [("Via", via(self.address, new_branch())),
                 ("From", f"<sip:soak@{host}>;tag=soak"), ("To", self.to),
                 ("Call-ID", "soak-long-call"), ("CSeq", f"{self.cseq} {method}"),
                 ("Contact", f"<sip:soak@{host}:{port}>"), *headers,
                 *([("Content-Type", "application/sdp")] if body else [])]
        self.sip.sendto(format_message(f"{method} sip:400@hotline SIP/2.0", lines, body),
                        self.target)

    def final(self, method: str) -> Message:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                message = parse_message(self.sip.recv(65535))
                if message.is_response and message.cseq.method == method \
                        and message.status_code >= 200:
                    return message
        raise RuntimeError(f"bench: no final response to the long call's {method}")

    @staticmethod
    def timer_headers() -> list[tuple[str, str]]:
        """Asking for session timers with the server as refresher (RFC 4028: every
        re-INVITE asks again, or the timer stops)."""
        return [("Supported", "timer"), ("Allow", "INVITE, ACK, BYE, UPDATE"),
                ("Session-Expires", f"{SESSION_EXPIRES_S};refresher=uas")]

    def start(self) -> None:
        sdp = build_sdp(("127.0.0.1", self.rtp.getsockname()[1]), [0], 101)
        self.request("INVITE", self.timer_headers(), sdp)
        ok = self.final("INVITE")
        if ok.status_code != 200:
            raise RuntimeError(f"bench: the long call got {ok.status_code}")
        self.to = ok.value("To") or ""
        offer = read_offer(ok)
        self.remote_rtp = (offer.address, offer.port)
        self.request("ACK", [])
        self.request("INVITE", self.timer_headers(), sdp.replace(b"a=sendrecv", b"a=sendonly"))
        self.final("INVITE")
        self.request("ACK", [])
        for target in (self._answer, self._music):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        if self.ended_by_server is None:
            self.request("BYE", [])
        self.sip.close()
        self.rtp.close()

    def _answer(self) -> None:
        while not self._stop.is_set():
            try:
                message = parse_message(self.sip.recv(65535))
            except (TimeoutError, ValueError):
                continue
            if message.is_response:
                continue
            if message.method == "UPDATE":
                self.refreshes += 1
                expires = message.value("Session-Expires") or ""
                self.sip.sendto(build_response(message, 200, "OK",
                                               [("Session-Expires", expires)]), self.target)
            elif message.method == "BYE":
                self.ended_by_server = "BYE"
                self.sip.sendto(build_response(message, 200, "OK"), self.target)
                return

    def _music(self) -> None:
        """Hold music: 20 ms packets of a 440 Hz tone, paced by an absolute clock."""
        assert self.remote_rtp is not None
        tone = (np.sin(2 * np.pi * 440 * np.arange(160) / 8000) * 8000).astype(np.int16)
        payload = bytes((int(s) >> 8) & 0xFF for s in tone)  # any bytes do for the engine
        start, n = time.monotonic(), 0
        while not self._stop.is_set():
            packet = RtpPacket(0, n & 0xFFFF, (n * 160) & 0xFFFFFFFF, 0x50AC, payload)
            with contextlib.suppress(OSError):
                self.rtp.sendto(build_rtp(packet), self.remote_rtp)
            n += 1
            time.sleep(max(0.0, start + n * 0.02 - time.monotonic()))


def slope_mb_per_1000(samples: list[Sample]) -> float:
    calls = np.array([s.calls for s in samples], dtype=float)
    rss = np.array([s.rss_mb for s in samples])
    if len(samples) < 3 or calls.max() == calls.min():
        return float("nan")
    return float(np.polyfit(calls, rss, 1)[0] * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--warm-up-s", type=float, default=None,
                        help="default: a sixth of the run, at least 5 minutes")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "soak.md")
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        sys.exit("bench: sipp not found; run 'make install' (as root for Debian packages)")
    total = int(args.minutes * 60 * args.rate)
    concurrent = int(args.rate * HOLD_MS / 1000) + 5
    sinks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(concurrent)]
    for sink in sinks:
        sink.bind(("127.0.0.1", 0))
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="hotline-soak-") as directory:
        work = Path(directory)
        port = write_config(work, "soak", prompt_s=10)
        server = serve(work, port)
        long_call = LongCaller(("127.0.0.1", port))
        try:
            long_call.start()
            started = time.monotonic()
            stats = ["-trace_stat", "-fd", str(max(1, int(args.sample_s / 2)))]
            sipp = callers(port, [sinks[i % concurrent].getsockname()[1] for i in range(total)],
                           args.rate, HOLD_MS, work / "sipp", stats)
            while sipp.poll() is None and time.monotonic() - started < args.minutes * 60 + 120:
                samples.append(read_sample(server.pid, started, calls_created(work / "sipp")))
                print(f"{samples[-1]}", flush=True)
                time.sleep(args.sample_s)
            samples.append(read_sample(server.pid, started, calls_created(work / "sipp")))
            code = sipp.wait(60)
            refreshes, ended = long_call.refreshes, long_call.ended_by_server
        finally:
            long_call.stop()
            server.send_signal(signal.SIGTERM)
            server.wait(30)
            for sink in sinks:
                sink.close()
        failed = sum(1 for line in (work / "sipp").glob("*_errors.log")
                     for _ in line.read_text().splitlines())
    report(args, samples, code, failed, refreshes, ended)


def report(args: argparse.Namespace, samples: list[Sample], sipp_code: int, error_lines: int,
           refreshes: int, ended: str | None) -> None:
    warm_up_s = args.warm_up_s if args.warm_up_s is not None else max(300.0,
                                                                       args.minutes * 60 / 6)
    # the last sample is taken after sipp's calls ended: not part of the steady state
    steady = [s for s in samples[:-1] if s.elapsed_s >= warm_up_s]
    quarter = max(1, len(steady) // 4)
    slope = slope_mb_per_1000(steady)
    quarters = [slope_mb_per_1000(steady[i * quarter:(i + 1) * quarter + 1]) for i in range(4)]
    expected_refreshes = int(args.minutes * 60 / (SESSION_EXPIRES_S / 2))
    every = max(1, int(300 / args.sample_s))
    rows = [f"| {s.elapsed_s / 60:.0f} | {s.calls} | {s.rss_mb:.1f} | {s.threads} | {s.fds} |"
            for s in samples[::every]]
    verdict = "flat" if abs(slope) < TARGET_MB_PER_1000 else "still growing"
    threads = [s.threads for s in steady] or [0]
    fds = [s.fds for s in steady] or [0]
    start_mb = steady[0].rss_mb if steady else float("nan")
    measures = [
        (f"RSS slope after warm-up ({warm_up_s / 60:.0f} min)",
         f"{slope:+.3f} MB per 1,000 calls ({verdict})", f"under {TARGET_MB_PER_1000}"),
        ("slope in each quarter of the steady part",
         ", ".join(f"{q:+.3f}" for q in quarters) + " MB per 1,000 calls", ""),
        ("RSS at warm-up end / at the last call",
         f"{start_mb:.1f} / {steady[-1].rss_mb if steady else float('nan'):.1f} MB", ""),
        ("threads after warm-up (min-max)", f"{min(threads)}-{max(threads)}", "flat"),
        ("open descriptors after warm-up (min-max)", f"{min(fds)}-{max(fds)}", "flat"),
        ("after the calls ended: RSS, threads, descriptors",
         f"{samples[-1].rss_mb:.1f} MB, {samples[-1].threads}, {samples[-1].fds}", ""),
        ("the long call: session refreshes by UPDATE",
         f"{refreshes} (every {SESSION_EXPIRES_S // 2} s: about {expected_refreshes})", ""),
        ("the long call ended by the server", ended or "no: up until the end", "no"),
    ]
    table = "\n".join(f"| {name} | {value} | {target} |" for name, value, target in measures)
    text = f"""# {__doc__.splitlines()[0]}

Run on {datetime.date.today():%Y-%m-%d} with `python bench/soak.py --minutes {args.minutes:g} \\
--rate {args.rate:g}` ({os.cpu_count()} cores): {int(args.minutes * 60 * args.rate)} calls of
{HOLD_MS / 1000:g} s, sipp exit code {sipp_code}, {error_lines} lines in sipp's error log.

| measure | value | target |
|---|---|---|
{table}

Samples every 5 minutes:

| minute | calls | RSS (MB) | threads | descriptors |
|---|---|---|---|---|
""" + "\n".join(rows) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
