"""Shared by the SIP-level benchmarks: a hotline `Server` in this process, answering
calls with a long prompt, and sipp callers whose audio goes to sockets we choose."""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivr.server import Server  # noqa: E402
from ivr.settings import load_settings  # noqa: E402

SCENARIO = ROOT / "bench" / "sipp" / "uac_listen.xml"


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
        t = np.arange(int(8000 * prompt_s)) / 8000
        with wave.open(str(work / "prompt.wav"), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(8000)
            out.writeframes((np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes())
        (work / "ivr.yaml").write_text(
            "start: prompt\nvoice: {engine: espeak}\nnodes:\n"
            "  prompt: {type: say, file: prompt.wav, next: bye}\n  bye: {type: hangup}\n")
        listen = free_port()
        # the proxy is a closed port: the trunk is DOWN for outgoing calls, which these
        # benchmarks do not make; calls in are accepted from its address all the same
        (work / "hotline.yaml").write_text(
            f"node: bench\ndata_dir: {work / 'var'}\nlog_level: WARNING\n"
            f"trunks:\n  - {{name: bench, mode: ip, proxy: '127.0.0.1:{free_port()}', "
            f"listen: '127.0.0.1:{listen}'}}\n")
        server = Server(load_settings(work / "hotline.yaml"))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def port_of(server: Server) -> int:
    return server.endpoints["bench"].address[1]


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
