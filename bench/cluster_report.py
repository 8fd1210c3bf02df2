"""What the cluster benchmarks (node failure, Redis failover, rolling restart) share around
their runs: the peers they need, the header of their reports (commit, machine, load) and
their side-by-side tables."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.redis_outage import describe  # noqa: E402

PEERS = ("sipp", "kamailio", "redis-server")
"""The programs every cluster benchmark runs."""

Result = TypeVar("Result")


def check_peers() -> None:
    """Exit with the install hint if a program the benchmark runs is missing."""
    for binary in PEERS:
        if shutil.which(binary) is None:
            sys.exit(f"bench: {binary} not found; run 'make install' (as root)")


def run_context() -> list[str]:
    """The commit measured, the machine, and its load average now (the machine is shared)."""
    return [describe(ROOT), describe_machine(), ", ".join(f"{n:.2f}" for n in os.getloadavg())]


def describe_machine() -> str:
    """The CPU, cores, kernel and the versions of the peers."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    versions = []
    for command, pattern in ((["kamailio", "-v"], r"kamailio ([0-9.]+)"),
                             (["sipp", "-v"], r"SIPp (v[0-9.]+)"),
                             (["redis-server", "--version"], r"v=([0-9.]+)")):
        out = subprocess.run(command, capture_output=True, text=True).stdout
        found = re.search(pattern, out)
        versions.append(f"{command[0]} {found[1] if found else '?'}")
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, {', '.join(versions)}")


def side_by_side(heads: Sequence[str], rows: Mapping[str, Callable[[Result], str]],
                 results: Sequence[Result]) -> str:
    """A markdown table with a row per measure and a column per result, headed `heads`."""
    lines = [f"| measure | {' | '.join(heads)} |", "|---" * (len(results) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(row(r) for r in results) + " |"
              for name, row in rows.items()]
    return "\n".join(lines)
