"""Fixtures for interoperability tests: baresip phones, and the hotline behind a Kamailio
carrier, started with a flow the test writes."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from ivr.clock import fixed
from ivr.server import Server
from ivr.settings import load_settings
from tests.baresip_phone import Baresip, write_tone
from tests.conftest import FAST_PROBES, wait_trunks_up
from tests.peers import Carrier, RedisServer, free_udp_port

NOW = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)
"""The hotline's clock in these tests."""

StartPhone = Callable[..., Baresip]
StartHotline = Callable[..., Carrier]


@pytest.fixture(scope="session")
def tone_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[[float], Path]:
    """The WAV of a tone at the given frequency, written once per session."""
    folder = tmp_path_factory.mktemp("tones")

    def tone(hz: float) -> Path:
        path = folder / f"{hz:g}hz.wav"
        return path if path.exists() else write_tone(path, hz)

    return tone


@pytest.fixture
def baresip(tmp_path: Path, tone_file: Callable[[float], Path]) -> Iterator[StartPhone]:
    """Start baresip phones: `baresip(user, hz)` answers to `user` and sends a tone at
    `hz`; every phone is stopped (and reaped) after the test."""
    phones: list[Baresip] = []

    def start(user: str, hz: float, codecs: tuple[str, ...] = ("pcmu",),
              ptime: int = 20) -> Baresip:
        phones.append(Baresip(tmp_path / f"baresip-{user}", tone_file(hz), codecs, ptime,
                              user))
        phones[-1].start()
        return phones[-1]

    yield start
    for phone in phones:
        phone.stop()
        assert not phone.running


@pytest.fixture
def hotline(tmp_path: Path, redis_server: RedisServer,
            redis_client: redis.Redis) -> Iterator[StartHotline]:
    """Start the hotline on the given ivr.yaml text (and oncall.yaml text, for a flow that
    forwards) behind a carrier that routes callers to it and, when given, the hotline's
    own calls to the `staff` phone; returns the carrier, which callers dial."""
    started: list[tuple[Server, Carrier]] = []

    def start(flow: str, oncall: str | None = None,
              staff: Baresip | None = None) -> Carrier:
        listen = free_udp_port()
        carrier = Carrier(tmp_path / "carrier", host="127.0.0.3",
                          hotline=("127.0.0.1", listen),
                          staff=None if staff is None else ("127.0.0.1", staff.sip_port))
        carrier.start()
        (tmp_path / "ivr.yaml").write_text(flow)
        (tmp_path / "oncall.yaml").write_text(oncall or "")
        probe = FAST_PROBES.model_dump()
        (tmp_path / "hotline.yaml").write_text(f"""\
node: node-1
data_dir: {tmp_path / "var"}
redis: {{url: "{redis_server.url}"}}
trunks:
  - {{name: carrier-a, mode: ip, proxy: "{carrier.address}", listen: "127.0.0.1:{listen}",
      probe: {probe}}}
""")
        try:
            server = Server(load_settings(tmp_path / "hotline.yaml"), now=fixed(NOW))
            server.start()
        except BaseException:
            carrier.stop()
            raise
        started.append((server, carrier))
        wait_trunks_up(server)
        return carrier

    yield start
    for server, carrier in started:
        server.stop()
        carrier.stop()
