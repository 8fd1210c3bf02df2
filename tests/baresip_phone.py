"""baresip (Debian's baresip-core), a real softphone nobody here wrote, as a test peer.

Each `Baresip` is one baresip process in its own process group, with a config
directory of its own: SIP on a free loopback port, no audio device (it sends a WAV
file through the `aufile` source and, with the `sndfile` filter, keeps what it hears
as a WAV file), and `ctrl_tcp` on a free port. `Control` speaks ctrl_tcp's protocol:
netstring-framed JSON, commands answered by responses, events pushed unasked.

No audio player module is loaded, so baresip plays nothing; the `sndfile` filter
still sees every decoded frame. What Debian's baresip 1.0.0 does that a test must
know: it ends a call ("end of file") when its `aufile` source runs out, so the tone
lasts longer than any test call; it always offers telephone-event (there is no
setting to leave it out); and `sndfile` starts a new recording each time the audio
restarts (after hold), named by the second it started.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.peers import START_TIMEOUT_S, GroupProcess, free_udp_port, require, wait_udp_bound

MODULES = Path("/usr/lib/baresip/modules")
RATE = 8000
"""The sample rate of the WAV files: G.711's, which `aufile` insists on."""
WAV_HEADER_BYTES = 44
"""A recording shorter than this has no samples yet."""
TONE_S = 60.0
"""How long a phone's tone lasts; the call ends when it runs out."""
EVENT_TIMEOUT_S = 10.0
"""How long `Control.wait_event` waits by default."""
CODECS = {"pcmu": ("g711", "PCMU/8000/1"), "pcma": ("g711", "PCMA/8000/1"),
          "opus": ("opus", "opus/48000/2")}
"""Codec names a test may ask for: (baresip module, baresip's name for the codec)."""


TRACE = re.compile(r"\x1b\[36;1m#\n\w+ (\S+) -> (\S+)\n(.*?)\x1b\[;m", re.S)
"""One SIP message in baresip's -s trace: source, destination, the message."""


class BaresipError(RuntimeError):
    """baresip refused a command, or an awaited event did not come."""


@dataclass(frozen=True)
class Recording:
    """What a phone heard, as 8 kHz samples from the start of the call's audio."""

    samples: np.ndarray

    @classmethod
    def read(cls, path: Path) -> Recording:
        """Read a 16-bit 8 kHz mono WAV, also while it is being written (sndfile fills in
        the chunk sizes only when the call's audio stops)."""
        data = path.read_bytes()
        fmt, body = data.find(b"fmt "), data.find(b"data")
        if not data.startswith(b"RIFF") or fmt < 0 or body < 0:
            raise ValueError(f"{path}: not a WAV file")
        encoding, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, fmt + 8)
        if (encoding, channels, rate, bits) != (1, 1, RATE, 16):
            raise ValueError(f"{path}: not 16-bit 8 kHz mono PCM")
        samples = data[body + 8:]
        return cls(np.frombuffer(samples[:len(samples) // 2 * 2], dtype="<i2"))

    @property
    def seconds(self) -> float:
        return len(self.samples) / RATE

    def span(self, since_s: float = 0.0, until_s: float = float("inf")) -> np.ndarray:
        start, end = int(since_s * RATE), int(min(until_s, self.seconds) * RATE)
        return self.samples[start:max(start, end)]

    def loud_s(self, threshold: int = 300, frame_s: float = 0.02) -> float:
        """Seconds of 20 ms frames whose peak is above `threshold`: speech or tone."""
        size = int(RATE * frame_s)
        frames = self.samples[:len(self.samples) // size * size].reshape(-1, size)
        return float((np.abs(frames.astype(int)).max(axis=1) > threshold).sum() * frame_s)


def write_tone(path: Path, hz: float, seconds: float = TONE_S) -> Path:
    """A 16-bit 8 kHz mono WAV of a sine at `hz` (about -12 dBFS)."""
    t = np.arange(int(seconds * RATE)) / RATE
    samples = (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(samples.tobytes())
    return path


class Control:
    """One ctrl_tcp connection (baresip takes one at a time): `command` sends a command
    and returns its response's text; events that come meanwhile are kept, each with the
    monotonic time it arrived ("at"), for `wait_event`."""

    def __init__(self, port: int, alive: Callable[[], bool],
                 timeout: float = START_TIMEOUT_S) -> None:
        """Connect to ctrl_tcp on `port`, retrying while baresip starts (`alive`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=0.5)
                break
            except OSError:
                if not alive() or time.monotonic() > deadline:
                    raise BaresipError(f"ctrl_tcp did not listen on port {port}") from None
                time.sleep(0.02)
        self.events: list[dict[str, Any]] = []
        self._claimed: set[int] = set()
        self._buffer = b""
        self._tokens = 0

    def close(self) -> None:
        self.sock.close()

    def command(self, name: str, params: str = "", timeout: float = EVENT_TIMEOUT_S) -> str:
        """Run a baresip command (`dial`, `accept`, `hold`, ...); its response's text."""
        self._tokens += 1
        token = str(self._tokens)
        message = {"command": name, "token": token, **({"params": params} if params else {})}
        data = json.dumps(message).encode()
        self.sock.sendall(b"%d:%s," % (len(data), data))
        deadline = time.monotonic() + timeout
        while True:
            reply = self._next(deadline, f"the response to {name!r}")
            if reply.get("response") and reply.get("token") == token:
                if not reply.get("ok"):
                    raise BaresipError(f"baresip refused {name} {params}: {reply.get('data')}")
                return str(reply.get("data", ""))

    def wait_event(self, kind: str, timeout: float = EVENT_TIMEOUT_S,
                   after: float = 0.0) -> dict[str, Any]:
        """The first event of type `kind` (CALL_ESTABLISHED, ...) not yet returned that
        arrived after monotonic time `after`."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for index in range(seen, len(self.events)):
                event = self.events[index]
                if index not in self._claimed and event["type"] == kind and event["at"] > after:
                    self._claimed.add(index)
                    return event
            seen = len(self.events)
            self._next(deadline, f"event {kind}")

    def _next(self, deadline: float, what: str) -> dict[str, Any]:
        """Read the next message; an event is also kept in `events`."""
        while True:
            header, colon, rest = self._buffer.partition(b":")
            if colon and len(rest) > int(header):
                size = int(header)
                if rest[size:size + 1] != b",":
                    raise ValueError(f"ctrl_tcp: bad netstring {self._buffer[:80]!r}")
                message: dict[str, Any] = json.loads(rest[:size])
                self._buffer = rest[size + 1:]
                if message.get("event"):
                    message["at"] = time.monotonic()
                    self.events.append(message)
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                kinds = [e.get("type") for e in self.events]
                raise BaresipError(f"timed out waiting for {what}; events so far: {kinds}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise BaresipError(f"ctrl_tcp closed while waiting for {what}")
            self._buffer += chunk


class Baresip(GroupProcess):
    """A baresip phone on 127.0.0.1 that sends `source` (an 8 kHz mono WAV) as its
    microphone, offers only `codecs` (names of `CODECS`) with packets of `ptime` ms, and
    records what it hears under `workdir`/heard. Start it, then drive it by its methods."""

    def __init__(self, workdir: Path, source: Path, codecs: tuple[str, ...] = ("pcmu",),
                 ptime: int = 20, user: str = "phone") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "heard").mkdir(exist_ok=True)
        self.workdir = workdir
        self.user = user
        self.sip_port = free_udp_port()
        self.ctrl_port = _free_tcp_port()
        (workdir / "config").write_text(_config(self.sip_port, self.ctrl_port, codecs,
                                                source, workdir / "heard"))
        names = ",".join(CODECS[codec][1] for codec in codecs)
        (workdir / "accounts").write_text(
            f"<sip:{user}@127.0.0.1:{self.sip_port}>;regint=0;answermode=manual;"
            f"audio_codecs={names};ptime={ptime}\n")
        # -s: SIP trace in the log, line-buffered (stdbuf) so a test can read it live
        command = [require("stdbuf", "coreutils"), "-oL", require("baresip", "baresip-core"),
                   "-4", "-s", "-f", str(workdir)]
        super().__init__(command, workdir / "baresip.log")
        self.control: Control | None = None

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@127.0.0.1:{self.sip_port}"

    def start(self) -> None:
        super().start()
        try:
            self.control = Control(self.ctrl_port, lambda: self.running)
            wait_udp_bound(self.sip_port)
        except (RuntimeError, BaresipError) as exc:
            raise BaresipError(f"baresip did not start: {exc}\n{self.log_tail()}") from exc

    def stop(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
        super().stop()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    # Commands and events.

    def execute(self, name: str, params: str = "") -> str:
        assert self.control is not None, "the phone is not started"
        return self.control.command(name, params)

    def wait_event(self, kind: str, timeout: float = EVENT_TIMEOUT_S,
                   after: float = 0.0) -> dict[str, Any]:
        assert self.control is not None, "the phone is not started"
        try:
            return self.control.wait_event(kind, timeout, after)
        except BaresipError as exc:
            raise BaresipError(f"{exc}\nbaresip's log:\n{self.log_tail()}") from exc

    def dial(self, uri: str) -> None:
        self.execute("dial", uri)

    def accept(self) -> None:
        self.execute("accept")

    def hangup(self) -> None:
        self.execute("hangup")

    def hold(self) -> None:
        self.execute("hold")

    def resume(self) -> None:
        self.execute("resume")

    def send_digits(self, digits: str) -> None:
        """Press `digits` (RFC 4733 events, as negotiated)."""
        self.execute("sndcode", digits)

    def received(self, start: str) -> list[str]:
        """SIP messages the phone received whose first line starts with `start`, in order
        (from its trace, with LF line ends)."""
        return self._trace(start, received=True)

    def sent(self, start: str) -> list[str]:
        """SIP messages the phone sent whose first line starts with `start`."""
        return self._trace(start, received=False)

    def recording(self) -> Recording:
        """What the phone heard since its audio last started (at the answer, and again at
        each resume from hold); empty before that. Complete once the call has closed."""
        files = sorted((self.workdir / "heard").glob("dump-*-dec.wav"))
        if not files or files[-1].stat().st_size < WAV_HEADER_BYTES:
            return Recording(np.zeros(0, dtype="<i2"))
        return Recording.read(files[-1])

    def rtp_received(self) -> int:
        """RTP packets received in the current call, counted on arrival (on hold too),
        from baresip's RTCP statistics."""
        found = re.search(r"\brcvd=(\d+)", self.execute("audio_debug"))
        return int(found.group(1)) if found else 0

    def _trace(self, start: str, received: bool) -> list[str]:
        address = f"127.0.0.1:{self.sip_port}"
        text = self.log.read_text(errors="replace")
        return [message.replace("\r\n", "\n")
                for source, destination, message in TRACE.findall(text)
                if (destination if received else source) == address
                and message.startswith(start)]


def _config(sip_port: int, ctrl_port: int, codecs: tuple[str, ...], source: Path,
            heard: Path) -> str:
    codec_modules = dict.fromkeys(CODECS[codec][0] for codec in codecs)
    lines = [
        "poll_method epoll",
        f"sip_listen 127.0.0.1:{sip_port}",
        "net_interface 127.0.0.1",
        "call_local_timeout 30",
        "call_max_calls 4",
        f"audio_source aufile,{source}",
        "audio_buffer 20-160",
        "rtp_stats no",
        f"module_path {MODULES}",
        *(f"module {name}.so" for name in codec_modules),
        "module aufile.so",
        "module sndfile.so",
        "module_tmp account.so",
        "module_app menu.so",
        "module_app ctrl_tcp.so",
        f"ctrl_tcp_listen 127.0.0.1:{ctrl_port}",
        f"snd_path {heard}",
    ]
    return "\n".join(lines) + "\n"


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
