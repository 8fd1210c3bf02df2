"""`hotline serve` as a real process, with its embedded Redis and two Kamailio carriers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.ivr.conftest import WriteConfig
from tests.peers import Carrier

pytestmark = pytest.mark.slow


def hotline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ivr", *args], capture_output=True, text=True,
                          timeout=30)


class Serve:
    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.config, self.log = config, log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ivr", "serve", "--config", str(config)],
                stdout=out, stderr=subprocess.STDOUT, env=env)

    def status(self) -> list[dict[str, object]] | None:
        done = hotline("trunks", "status", "--json", "--config", str(self.config))
        return json.loads(done.stdout) if done.returncode == 0 else None

    def states(self) -> dict[object, object]:
        return {row["name"]: row["state"] for row in self.status() or []}

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(15)


@pytest.fixture
def setup(carrier_factory: Callable[[str], Carrier], write_config: WriteConfig,
          tmp_path: Path) -> Iterator[tuple[Path, list[Serve]]]:
    a, b = carrier_factory("carrier-a"), carrier_factory("carrier-b")
    config = write_config({"carrier-a": a.address, "carrier-b": b.address})
    servers: list[Serve] = []
    yield config, servers
    for server in servers:
        server.stop(signal.SIGKILL)


def redis_pids(data_dir: Path) -> list[int]:
    """Embedded redis-servers of `data_dir`, found by the title Redis gives itself."""
    title = f"redis-server unixsocket:{data_dir}/redis/redis.sock".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if entry.name.isdigit() and title in cmdline:
            found.append(int(entry.name))
    return found


def test_serve_monitors_persists_overrides_and_stops_cleanly(
        setup: tuple[Path, list[Serve]], tmp_path: Path) -> None:
    config, servers = setup
    data_dir = tmp_path / "var"
    servers.append(server := Serve(config, tmp_path / "serve-1.log"))
    wait_for(lambda: server.states() == {"carrier-a": "up", "carrier-b": "up"}, timeout=20,
             what="both trunks up")
    assert (data_dir / "redis" / "redis.sock").exists()
    assert len(redis_pids(data_dir)) == 1
    done = hotline("trunks", "drain", "carrier-b", "--reason", "maintenance", "--by", "ops",
                   "--config", str(config))
    assert done.returncode == 0, done.stderr

    second = hotline("serve", "--config", str(config))
    assert second.returncode == 1
    assert "another hotline server already uses" in second.stderr

    assert server.stop() == 0
    assert redis_pids(data_dir) == [], "embedded redis-server stopped with the server"
    assert list((data_dir / "redis").glob("appendonly*")), "append-only files kept"
    log = (tmp_path / "serve-1.log").read_text()
    assert "Trunk(carrier-a) unknown -> up" in log and "Embedded Redis stopped" in log
    done = hotline("trunks", "status", "--config", str(config))
    assert done.returncode == 1 and "the hotline server is not running" in done.stderr

    servers.append(again := Serve(config, tmp_path / "serve-2.log"))
    wait_for(lambda: again.status() is not None, timeout=20, what="restarted server")
    rows = {row["name"]: row for row in again.status() or []}
    assert rows["carrier-b"]["override"]["action"] == "drain", "override survived a restart"
    assert rows["carrier-b"]["override"]["by"] == "ops"


def test_killed_server_leaves_no_redis_behind(setup: tuple[Path, list[Serve]],
                                              tmp_path: Path) -> None:
    config, servers = setup
    servers.append(server := Serve(config, tmp_path / "serve.log"))
    wait_for(lambda: server.status() is not None, timeout=20, what="server up")
    assert len(redis_pids(tmp_path / "var")) == 1
    server.stop(signal.SIGKILL)
    wait_for(lambda: redis_pids(tmp_path / "var") == [], timeout=5,
             what="redis-server gone after its parent was killed")


def test_missing_redis_server_binary_is_explained(setup: tuple[Path, list[Serve]],
                                                  tmp_path: Path) -> None:
    config, _ = setup
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin")}
    done = subprocess.run([sys.executable, "-m", "ivr", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 1
    assert "Error: redis-server not found: install it with `sudo apt-get install redis-server`" \
        in done.stderr
    assert "Traceback" not in done.stderr


def test_an_outage_shows_in_status_and_history(setup: tuple[Path, list[Serve]],
                                               carrier_factory: Callable[[str], Carrier],
                                               tmp_path: Path) -> None:
    config, servers = setup
    servers.append(server := Serve(config, tmp_path / "serve.log"))
    wait_for(lambda: server.states().get("carrier-a") == "up", timeout=20)
    os.killpg(_carrier_pid(config, "carrier-a"), signal.SIGSTOP)
    try:
        # detection time is measured in bench/; here only the outcome matters
        wait_for(lambda: server.states().get("carrier-a") == "down", timeout=10)
        history = json.loads(hotline("trunks", "history", "--json", "--trunk", "carrier-a",
                                     "--config", str(config)).stdout)
        assert history[0]["what"] == "suspect -> down"
        assert "no response to OPTIONS" in history[0]["detail"]
    finally:
        os.killpg(_carrier_pid(config, "carrier-a"), signal.SIGCONT)


def _carrier_pid(config: Path, name: str) -> int:
    port = next(line.split(":")[-1].strip() for line in config.read_text().splitlines()
                if "proxy: 127.0.0.1:" in line and _follows(config, name, line))
    done = subprocess.run(["pgrep", "-o", "-f", f"udp:127.0.0.1:{port}"], capture_output=True,
                          text=True)
    return int(done.stdout.split()[0])


def _follows(config: Path, name: str, line: str) -> bool:
    text = config.read_text()
    return text.index(line) > text.index(f"name: {name}") and (
        name == "carrier-b" or text.index(line) < text.index("name: carrier-b"))
