"""Shared by the SIP-level benchmarks: a hotline answering calls with a long prompt (a
`Server` in this process, or `hotline serve` in its own), and sipp callers whose audio
goes to sockets we choose."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivr.server import Server  # noqa: E402
from ivr.settings import load_settings  # noqa: E402
from trunks.voip.message import format_message, new_branch, via  # noqa: E402

SCENARIO = ROOT / "bench" / "sipp" / "uac_listen.xml"
SERVE_START_S = 60.0
"""How long `hotline serve` may take to answer OPTIONS on its trunk's port."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def hotline(prompt_s: float) -> Iterator[Server]:
    """Run the hotline with one trunk whose flow plays a `prompt_s` 440 Hz prompt and
    hangs up; it takes calls from 127.0.0.1 (the trunk's address) on `port_of(server)`."""
    if shutil.which("sipp") is None:
        sys.exit("bench: sipp not found; run 'make install' (as root for Debian packages)")
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="hotline-bench-") as directory:
        work = Path(directory)
        write_config(work, "bench", prompt_s)
        server = Server(load_settings(work / "hotline.yaml"))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def port_of(server: Server) -> int:
    return server.endpoints["bench"].address[1]


def write_config(work: Path, name: str, prompt_s: float, redis_url: str | None = None,
                 route_first: bool = False) -> int:
    """Write `work`/hotline.yaml and ivr.yaml: node and trunk `name`, a flow that plays a
    `prompt_s` 440 Hz prompt and hangs up, data under `work`/var, Redis at `redis_url`
    (None: embedded). With `route_first` the flow first forwards the call as far as
    the route plan: its one trunk is DOWN, so nobody is rung and the prompt follows.
    Returns the trunk's SIP port."""
    t = np.arange(int(8000 * prompt_s)) / 8000
    with wave.open(str(work / "prompt.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes((np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes())
    route = ("  route: {type: forward, ring_s: 5, next: prompt, failure: prompt}\n"
             if route_first else "")
    (work / "ivr.yaml").write_text(
        f"start: {'route' if route_first else 'prompt'}\nvoice: {{engine: espeak}}\nnodes:\n"
        f"{route}  prompt: {{type: say, file: prompt.wav, next: bye}}\n  bye: {{type: hangup}}\n")
    (work / "oncall.yaml").write_text(
        "timezone: UTC\npeople:\n  staff: {phone: '1001'}\n"
        "rotation: {order: [staff], start: 2026-01-05, every_days: 7}\n")
    listen = free_port()
    # the proxy is a closed port: the trunk is DOWN for outgoing calls, which these
    # benchmarks do not make; calls in are accepted from its address all the same
    (work / "hotline.yaml").write_text(
        f"node: {name}\ndata_dir: {work / 'var'}\nlog_level: WARNING\n"
        + (f"redis: {{url: '{redis_url}'}}\n" if redis_url else "") +
        f"trunks:\n  - {{name: {name}, mode: ip, proxy: '127.0.0.1:{free_port()}', "
        f"listen: '127.0.0.1:{listen}'}}\n")
    return listen


def serve(work: Path, port: int, source: Path = ROOT) -> subprocess.Popen[bytes]:
    """Start `hotline serve` (the code under `source`) on `work`/hotline.yaml, logging to
    `work`/serve.log; returned once its trunk's SIP `port` answers OPTIONS."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    with (work / "serve.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ivr", "serve", "--config", str(work / "hotline.yaml")],
            cwd=source, env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + SERVE_START_S
    while time.monotonic() < deadline:
        if answers_options(port):
            return process
        if process.poll() is not None:
            break
        time.sleep(0.5)
    process.kill()
    process.wait()
    sys.exit(f"bench: hotline serve did not come up:\n{(work / 'serve.log').read_text()[-2000:]}")


def answers_options(port: int) -> bool:
    """Whether the SIP endpoint on 127.0.0.1:`port` answers an OPTIONS within 0.5 s."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(0.5)
        probe.sendto(format_message("OPTIONS sip:bench@127.0.0.1 SIP/2.0", [
            ("Via", via(probe.getsockname()[:2], new_branch())),
            ("From", "<sip:bench@127.0.0.1>;tag=b"), ("To", "<sip:bench@127.0.0.1>"),
            ("Call-ID", f"up-{time.monotonic()}"), ("CSeq", "1 OPTIONS")]),
            ("127.0.0.1", port))
        try:
            probe.recv(65535)
        except (TimeoutError, ConnectionRefusedError):
            return False
        return True


def callers(port: int, media_ports: list[int], rate: float, hold_ms: int, workdir: Path,
            extra: list[str] | None = None) -> subprocess.Popen[bytes]:
    """sipp placing one call per media port at `rate` calls/s to the hotline on `port`,
    each listening for `hold_ms`; its files go to `workdir`. sipp's -timeout bounds the
    whole run: the calls' time plus a minute."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "ports.csv").write_text("SEQUENTIAL\n" + "".join(f"{p};\n" for p in media_ports))
    return subprocess.Popen(
        ["sipp", f"127.0.0.1:{port}", "-sf", str(SCENARIO), "-inf", str(workdir / "ports.csv"),
         "-r", f"{rate:g}", "-m", str(len(media_ports)), "-l", str(len(media_ports)),
         "-d", str(hold_ms), "-i", "127.0.0.1", "-p", str(free_port()), "-nostdin",
         "-timeout", f"{int(len(media_ports) / rate + hold_ms / 1000) + 60}s", "-trace_err",
         *(extra or [])],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
