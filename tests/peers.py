"""Real peers for tests and benchmarks: Kamailio carriers and redis-server on loopback.

Each peer runs in its own process group, so an outage is one signal to the
whole group: SIGSTOP for silence, SIGKILL for a closed port (ICMP unreachable).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar

TESTS = Path(__file__).resolve().parent
CARRIER_CFG = TESTS / "kamailio" / "carrier.cfg"
FRONTDOOR_CFG = TESTS.parent / "config" / "kamailio" / "frontdoor.cfg"
SIPP_SCENARIOS = TESTS / "sipp"
START_TIMEOUT_S = 15.0


def forward_flow(ring_s: float) -> str:
    """An ivr.yaml that forwards every caller to the roster at once, each person ringing
    `ring_s`; it hangs up after the call, or when nobody answers."""
    return ("start: connect\nvoice: {engine: espeak}\nnodes:\n"
            f"  connect: {{type: forward, ring_s: {ring_s:g}, next: done, failure: nobody}}\n"
            "  done: {type: hangup}\n  nobody: {type: hangup}\n")


def staff_roster(people: int) -> str:
    """An oncall.yaml of `people` staff, all on the one sipp phone (numbers 1001, 1002,
    ...): a person talking to one caller is not rung for another, so a steady load needs
    as many people as there are calls up at once."""
    keys = [f"staff-{i:03d}" for i in range(1, people + 1)]
    lines = [f'  {key}: {{phone: "{1000 + i}"}}' for i, key in enumerate(keys, 1)]
    return ("timezone: UTC\npeople:\n" + "\n".join(lines) +
            f"\nrotation: {{order: [{', '.join(keys)}], start: 2026-01-05, every_days: 1}}\n")


class Peer(Protocol):
    """Anything a test or benchmark starts and must stop: Kamailio, redis-server, sipp."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


P = TypeVar("P", bound=Peer)


def started(stack: contextlib.ExitStack[bool | None], peer: P) -> P:
    """Start `peer`, to be stopped when `stack` closes (whatever fails)."""
    stack.callback(peer.stop)
    peer.start()
    return peer


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def end_process(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """Terminate `process` if it still runs, killing it after `timeout` s; reap it."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def require(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError(f"{binary} is not installed: run `sudo make install` "
                           f"(or apt-get install {package})")
    return path


class GroupProcess:
    """A child process in its own process group, signalled as a whole."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.command = command
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signum)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        """Kill the whole group at once and reap it; its ports close."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.signal(signal.SIGKILL)
        self.process.wait()
        _wait_group_gone(self.process.pid)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            self.process.wait(10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Kamailio(GroupProcess):
    """Kamailio from `cfg` on `host`:`port` (a free one if none), with `args` (its -A
    defines), working and logging in `workdir`; `start` waits until it answers OPTIONS
    with `READY`."""

    READY = "200"
    TITLE = "Kamailio"

    def __init__(self, workdir: Path, host: str, port: int | None, cfg: Path,
                 args: list[str]) -> None:
        self.host, self.port = host, port or free_udp_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        command = [require("kamailio", "kamailio"), "-f", str(cfg), "-l",
                   f"udp:{host}:{self.port}", "-DD", "-E", "-m", "32", "-M", "4",
                   "-Y", str(workdir), "-w", str(workdir), *args]
        super().__init__(command, workdir / "kamailio.log")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        super().start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not sip_ping(self.port, self.host, status=self.READY):
            if not self.running or time.monotonic() > deadline:
                raise RuntimeError(f"{self.TITLE} did not start on {self.address}: "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")


class Carrier(Kamailio):
    """A Kamailio instance acting as a carrier's SIP proxy on 127.0.0.1:`port`."""

    def __init__(self, workdir: Path, port: int | None = None, cfg: Path = CARRIER_CFG,
                 extra_args: list[str] | None = None, host: str = "127.0.0.1",
                 hotline: tuple[str, int] | None = None,
                 staff: tuple[str, int] | None = None, auth_password: str | None = None,
                 min_expires: int | None = None, fail_invites: bool = False,
                 registrar: str | None = None,
                 hotline2: tuple[str, int] | None = None) -> None:
        """`registrar`: the user part of an AOR whose calls go to the contacts registered
        for it, all at once (a forking registrar, carrier.cfg's REGISTRAR); `hotline2`:
        the hotline's second address, tried when `hotline` fails a call."""
        defines = {"HOTLINE": hotline and f"sip:{hotline[0]}:{hotline[1]}",
                   "HOTLINE2": hotline2 and f"sip:{hotline2[0]}:{hotline2[1]}",
                   "STAFF": staff and f"sip:{staff[0]}:{staff[1]}",
                   "AUTH_PASSWORD": auth_password, "REGISTRAR": registrar}
        for name, value in defines.items():
            if value:
                extra_args = [*(extra_args or []), "-A", f'{name}="{value}"']
        if fail_invites:
            extra_args = [*(extra_args or []), "-A", "FAIL_INVITES"]
        if hotline and staff:  # calls from the hotline go to the staff phone
            extra_args = [*(extra_args or []), "-A", f"HOTLINE_PORT={hotline[1]}"]
        if min_expires is not None:
            extra_args = [*(extra_args or []), "-A", f"MIN_EXPIRES={min_expires}"]
        super().__init__(workdir, host, port, cfg, extra_args or [])

    def requests(self, method: str, source_port: int | None = None) -> int:
        """How many `method` requests this carrier logged (from `source_port`, if given)."""
        return len(self.request_times(method, source_port))

    def request_times(self, method: str, source_port: int | None = None) -> list[float]:
        """Arrival times (Unix seconds) of the `method` requests this carrier logged."""
        text = self.log.read_text(errors="replace")
        source = rf"127\.0\.0\.1:{source_port}\b" if source_port else r"\S+"
        return [float(t) for t in re.findall(rf"request {method} from {source} at ([0-9.]+)",
                                             text)]

    def branches(self, call_id: str) -> list[str]:
        """The contacts (host:port) a registrar carrier forked the call `call_id` to."""
        text = self.log.read_text(errors="replace")
        return re.findall(rf"branch to sip:[^@\s]+@(\S+) call-id {re.escape(call_id)}$", text,
                          flags=re.M)


class FrontDoor(Kamailio):
    """The shipped front door (config/kamailio/frontdoor.cfg, or a `cfg` that includes it)
    on `host`:`port`, sending the calls of `carriers` (host:port) to `nodes` (host:port)."""

    READY = "403"  # we are no carrier
    TITLE = "the front door"

    def __init__(self, workdir: Path, nodes: list[str], carriers: list[str],
                 host: str = "127.0.0.4", port: int | None = None,
                 cfg: Path = FRONTDOOR_CFG) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        listing = workdir / "dispatcher.list"
        listing.write_text("".join(f"1 sip:{node}\n" for node in nodes) +
                           "".join(f"2 sip:{carrier}\n" for carrier in carriers))
        super().__init__(workdir, host, port, cfg, ["-A", f'DS_LIST="{listing}"'])

    def nodes_used(self) -> list[str]:
        """The node (host:port) each call went to, in order, from the log."""
        return re.findall(r"to node sip:(\S+)", self.log.read_text(errors="replace"))


class Phone:
    """A sipp UAS playing the on-call engineer's phone (or a carrier) on its own port,
    for `calls` calls; `keys` become sipp's -key values ([name] in the scenario)."""

    started: ClassVar[list[Phone]] = []

    def __init__(self, scenario: str, workdir: Path, calls: int = 1,
                 keys: dict[str, str] | None = None, echo: bool = False,
                 timeout_s: float = 20.0) -> None:
        """`echo`: send the RTP that comes to sipp's media port back to its sender;
        `timeout_s`: sipp gives up (and fails) after this long."""
        self.port = free_udp_port()
        self.workdir, self.timeout_s = workdir, timeout_s
        workdir.mkdir(parents=True, exist_ok=True)
        extra = [arg for name, value in (keys or {}).items() for arg in ("-key", name, value)]
        extra += ["-rtp_echo"] if echo else []
        self.process = subprocess.Popen(
            [require("sipp", "sip-tester"), "-sf", str(SIPP_SCENARIOS / scenario),
             "-i", "127.0.0.1", "-p", str(self.port), "-mp", str(free_udp_port()),
             "-m", str(calls), "-timeout", f"{timeout_s:g}s", "-timeout_error", "-nostdin",
             "-trace_err",
             "-trace_msg", *extra],
            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        Phone.started.append(self)
        wait_udp_bound(self.port)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def finish(self) -> None:
        """Wait for sipp to complete its scenario; fail with its error log if it did not."""
        try:
            code = self.process.wait(self.timeout_s + 5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = -1
        if code != 0:
            errors = "".join(p.read_text() for p in self.workdir.glob("*_errors.log"))
            raise AssertionError(f"sipp phone failed ({code}):\n{errors[-3000:]}")

    def received(self, start: str) -> list[str]:
        """Messages sipp received whose first line starts with `start`."""
        return [text for direction, text in sipp_trace(self.workdir)
                if direction == "received" and text.startswith(start)]

    @classmethod
    def stop_all(cls) -> None:
        """Kill phones a failing test left waiting for messages."""
        while cls.started:
            process = cls.started.pop().process
            if process.poll() is None:
                process.kill()
                process.wait()


class RedisServer(GroupProcess):
    """A throw-away redis-server on a unix socket (and, if asked, a TCP port)."""

    def __init__(self, workdir: Path, tcp_port: int = 0) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = workdir / "redis.sock"
        self.tcp_port = tcp_port
        command = [require("redis-server", "redis-server"), "--port", str(tcp_port),
                   "--bind", "127.0.0.1", "--unixsocket", str(self.socket), "--save", "",
                   "--appendonly", "no", "--dir", str(workdir)]
        super().__init__(command, workdir / "redis.log")

    @property
    def url(self) -> str:
        if self.tcp_port:
            return f"redis://127.0.0.1:{self.tcp_port}/0"
        return f"unix://{self.socket}"

    def start(self) -> None:
        super().start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.socket.exists() or not _redis_ping(self.socket):
            if not self.running or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)


def wait_udp_bound(port: int, host: str = "127.0.0.1", timeout: float = START_TIMEOUT_S) -> None:
    """Wait until some process has bound UDP `host`:`port` (binding it ourselves fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing bound udp {host}:{port} within {timeout} s")


def sipp_trace(workdir: Path) -> list[tuple[str, str]]:
    """sipp's -trace_msg log in `workdir` as (sent|received, message text), in order."""
    text = "".join(p.read_text() for p in sorted(workdir.glob("*_messages.log")))
    entries = []
    for block in re.split(r"^-{47} ", text, flags=re.M)[1:]:
        lines = block.splitlines()
        direction = "received" if "message received" in lines[1] else "sent"
        entries.append((direction, "\n".join(lines[3:]).strip()))
    return entries


def sip_ping(port: int, host: str = "127.0.0.1", timeout: float = 0.3,
             status: str = "200") -> bool:
    """Whether something on `host`:`port` answers a minimal OPTIONS with `status`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
        call_id = secrets.token_hex(8)
        request = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{call_id}\r\n"
                   f"From: <sip:ping@127.0.0.1>;tag={call_id}\r\nTo: <sip:127.0.0.1>\r\n"
                   f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                   "Content-Length: 0\r\n\r\n")
        try:
            sock.sendto(request.encode(), (host, port))
            return sock.recv(65535).startswith(f"SIP/2.0 {status}".encode())
        except OSError:
            time.sleep(timeout)
            return False


def _redis_ping(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


def _wait_group_gone(pgid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)
