"""sipp's message trace (-trace_msg), read back: each message with its time and
direction, for the benchmarks that time calls from the SIP they carried."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from pathlib import Path

SEPARATOR = "-" * 47 + " "
"""What sipp writes before each message's time stamp."""


def messages(workdir: Path) -> Iterator[tuple[float, bool, str]]:
    """(Unix time, received?, message) for each message in the -trace_msg logs in
    `workdir`, file by file, in order."""
    for path in sorted(workdir.glob("*_messages.log")):
        for block in path.read_text(errors="replace").split(SEPARATOR)[1:]:
            stamp, _, rest = block.partition("\n")
            direction, _, message = rest.partition("\n\n")
            when = datetime.datetime.fromisoformat(stamp.strip()).timestamp()
            yield when, "received" in direction, message.strip()


def header(message: str, name: str) -> str:
    """The value of the first header `name` in `message`; "" if it has none."""
    match = re.search(rf"^{name}:\s*(.+?)\s*$", message, re.M | re.I)
    return match[1] if match else ""
