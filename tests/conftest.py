"""Fixtures: real redis-server and Kamailio carriers on loopback, the example FAQ's
search index (built once per session), and hygiene checks.

`--shift-days N` runs the whole suite N days from today: the wall clock of the test
process (time.time, datetime.now) moves N days ahead and keeps ticking; monotonic
clocks and the peers' processes are left alone. `make test PYTEST_ARGS="--shift-days 7"`
checks that no test depends on the week it runs in.
"""

from __future__ import annotations

import datetime
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
import time_machine

from ivr.settings import load_yaml
from kb.calibration import Calibration
from kb.faq import Faq
from kb.index import Index, open_index
from kb.search import Searcher
from tests.peers import Carrier, Phone, RedisServer
from trunks.config import ProbeSettings
from trunks.health import TrunkState
from trunks.voip.media import RtpEngine

if TYPE_CHECKING:
    from ivr.server import Server

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_FAQ = ROOT / "config" / "faq.yaml"
INDEX_BUILD_TIMEOUT_S = 900
"""Tuning the model for the example FAQ takes one to three minutes of CPU."""

FAST_PROBES = ProbeSettings(interval_s=1.0, fast_interval_s=0.1, down_interval_s=0.5,
                            timeout_s=0.3, retransmit_s=0.1, down_after=3, up_after=3)
"""Probe timings scaled down so state changes happen within a second or two."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The first test to use the FAQ index pays for building it, so allow for that."""
    for item in items:
        if "example_index" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(INDEX_BUILD_TIMEOUT_S))


@pytest.fixture(scope="session")
def kb_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir whose kb/ holds the session's indexes (for `hotline kb --faq`).

    Set TEST_KB_DATA_DIR to a directory to keep the indexes from one run to the next
    (building one takes minutes; an index is rebuilt whenever the FAQ or model change)."""
    keep = os.environ.get("TEST_KB_DATA_DIR")
    return Path(keep) if keep else tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def kb_cache(kb_data_dir: Path) -> Path:
    return kb_data_dir / "kb"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--shift-days", type=float, default=0.0, metavar="N",
                     help="run the suite with the wall clock N days from today")


def pytest_configure(config: pytest.Config) -> None:
    days = config.getoption("--shift-days")
    if days:
        moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)
        config.stash[_SHIFT] = time_machine.travel(moment, tick=True)
        config.stash[_SHIFT].start()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SHIFT in config.stash:
        config.stash[_SHIFT].stop()


def pytest_report_header(config: pytest.Config) -> str | None:
    days = config.getoption("--shift-days")
    return f"wall clock shifted by {days:g} days: {datetime.datetime.now()}" if days else None


_SHIFT = pytest.StashKey[time_machine.travel]()


@pytest.fixture(scope="session")
def example_faq() -> Faq:
    return load_yaml(EXAMPLE_FAQ, Faq)


@pytest.fixture(scope="session")
def example_index(example_faq: Faq, kb_cache: Path) -> Index:
    return open_index(example_faq, kb_cache)


@pytest.fixture(scope="session")
def searcher(example_faq: Faq, example_index: Index) -> Searcher:
    return Searcher(example_faq, example_index, Calibration.load())


@pytest.fixture(autouse=True)
def _no_tqdm_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    """tqdm starts its monitor thread even for a disabled bar, and faster-whisper makes
    one per decode. In the server that thread is a harmless daemon waking every 10 s;
    here the leftovers check would blame the test that happened to start it."""
    import tqdm

    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HOTLINE_") or name == "CARRIER_B_PASSWORD":
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    """Fail a test that leaves threads or child processes running."""
    threads, children = set(threading.enumerate()), _children()
    yield
    deadline = time.monotonic() + 3.0
    while True:
        left = [t.name for t in threading.enumerate() if t not in threads and t.is_alive()]
        left += [f"process {pid}" for pid in _children() - children]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"test left running: {left}"


@pytest.fixture(autouse=True)
def _stop_phones(_no_leftovers: None) -> Iterator[None]:
    """Kill sipp phones a failing test left waiting (before the leftovers check)."""
    yield
    Phone.stop_all()


def _children() -> set[int]:
    """Live (not zombie) processes whose parent is this one."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[1]) == os.getpid():
            found.add(int(stat.parent.name))
    return found


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(unix_socket_path=str(redis_server.socket), decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def engine() -> Iterator[RtpEngine]:
    """A running RTP engine on loopback."""
    rtp = RtpEngine()
    rtp.start()
    yield rtp
    rtp.stop()


@pytest.fixture
def carrier_factory(tmp_path: Path) -> Iterator[Callable[[str], Carrier]]:
    """Start Kamailio carriers by name; all are stopped after the test."""
    started: list[Carrier] = []

    def start(name: str) -> Carrier:
        carrier = Carrier(tmp_path / name)
        carrier.start()
        started.append(carrier)
        return carrier

    yield start
    for carrier in started:
        carrier.stop()
        assert not carrier.running


@pytest.fixture
def carrier(carrier_factory: Callable[[str], Carrier]) -> Carrier:
    return carrier_factory("carrier-a")


def wait_trunks_up(server: Server) -> None:
    """Wait until `server`'s monitor has seen every trunk answer: calls go out only
    through trunks seen UP."""
    monitor = server.monitor
    assert monitor is not None, "the server is not started"
    wait_for(lambda: all(s.state is TrunkState.UP for s in monitor.snapshots().values()),
             what="trunks up")


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> float:
    """Poll `predicate` until true; return the seconds it took, fail after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.01)
    return time.monotonic() - start
