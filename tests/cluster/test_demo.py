"""`make demo-cluster` (scripts/demo-cluster) end to end: it starts its cluster, kills a
node with calls up, tells what happens in plain words, and leaves nothing running, also
when it is interrupted."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kb.index import Index

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo-cluster"
DEMO_PORTS = 70
"""The demo uses UDP ports DEMO_PORT to DEMO_PORT+69."""
DEMO_TIMEOUT_S = 300


def _free_port_range(size: int) -> int:
    """The first of `size` consecutive UDP ports on loopback that are free now (below
    the ephemeral range that other tests' free ports come from)."""
    for base in random.sample(range(10000, 20000 - size, 100), 50):
        sockets = []
        try:
            for port in range(base, base + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise RuntimeError(f"no {size} free consecutive UDP ports")


def _environment(tmp_path: Path, cache: Path) -> dict[str, str]:
    """The demo's environment: its files under `tmp_path`, the session's FAQ index and
    prompts in `cache`, this checkout's code behind `hotline` (the venv's own install may
    be of another checkout)."""
    return {**os.environ, "DEMO_DIR": str(tmp_path / "demo"), "DEMO_CACHE_DIR": str(cache),
            "DEMO_PORT": str(_free_port_range(DEMO_PORTS)), "PYTHONPATH": str(ROOT),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def _left_running(directory: Path) -> list[str]:
    """Processes whose command line or working directory is under `directory`, or that
    run the demo's peers."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(directory) in f"{command} {cwd}" or "scripts/demo-peers" in command:
            found.append(f"{proc.name}: {command}")
    return found


@pytest.mark.timeout(DEMO_TIMEOUT_S + 60)
def test_the_cluster_demo_kills_a_node_and_tells_what_the_other_does(
        tmp_path: Path, kb_data_dir: Path, example_index: Index) -> None:
    env = _environment(tmp_path, kb_data_dir)
    done = subprocess.run([str(DEMO)], env=env, capture_output=True, text=True,
                          timeout=DEMO_TIMEOUT_S)
    out = done.stdout
    assert done.returncode == 0, f"{out[-3000:]}\n{done.stderr[-2000:]}"
    sip = dict(re.findall(r"(node-[ab]) serves on 127\.0\.0\.1:(\d+)", out))
    assert sorted(sip) == ["node-a", "node-b"]
    first = re.search(r"Call forwarded-1@127\.0\.0\.1 from 13900000001 came in through the "
                      r"front door to (node-[ab]), which\nrang (\w+) \(the engineer on call\)",
                      out)
    assert first is not None, out
    victim = first[1]
    survivor = "node-b" if victim == "node-a" else "node-a"
    assert first[2] in ("alice", "bob", "carol")  # who is on duty depends on the date
    assert f"{victim} was killed with 2 calls up" in out
    assert f"front door: node sip:127.0.0.1:{sip[victim]} down: out of the rotation" in out
    assert (f"front door: call after-kill-1@127.0.0.1 from 127.0.0.1 to node "
            f"sip:127.0.0.1:{sip[survivor]}") in out
    assert f"It was answered by {survivor}" in out
    assert f"{victim} is no longer listed" in out
    assert re.search(rf"Call forwarded-1@127\.0\.0\.1 moved to {survivor} [\d.]+ s after the "
                     r"kill; both legs accepted the re-INVITEs", out), out
    assert re.search(rf"from {victim} to {survivor} at .*, both legs re-INVITEd in", out)
    menu = re.search(r"Call (menu-\d+-1@127\.0\.0\.1) from (\d+): cut off: node failure, "
                     r"call-back cb-\w+ in 2 s\.", out)
    assert menu is not None, out
    assert re.search(rf"The call-back \S+: {survivor} called {menu[2]}, the phone answered",
                     out), out
    assert f"The forwarded caller's call ended normally, through {survivor}" in out
    assert f"Done: {victim} died with 2 calls" in out
    assert _left_running(tmp_path) == []


@pytest.mark.timeout(DEMO_TIMEOUT_S)
def test_the_cluster_demo_stops_everything_on_ctrl_c(
        tmp_path: Path, kb_data_dir: Path, example_index: Index) -> None:
    demo = subprocess.Popen([str(DEMO)], env=_environment(tmp_path, kb_data_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group, as on a terminal
    assert demo.stdout is not None
    started = any("presses 1 to be put through" in line  # every peer and both nodes up
                  for line in demo.stdout)
    assert started, demo.communicate(timeout=60)[1]
    os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C: the demo and the commands it runs
    _, errors = demo.communicate(timeout=60)
    assert demo.returncode == 130, errors
    assert "demo-cluster: interrupted; stopping everything" in errors
    assert _left_running(tmp_path) == []
