"""`hotline drill ...`: run the trunk-switch drill now, and see past drills.

`drill run` asks a running `hotline serve` (any node) to run the drill, since the
servers own the trunks' SIP ports, and follows it until its report. Interrupting
it (Ctrl-C, SIGTERM) asks the drill to stop; the drill then restores the trunks
and reports, and the command waits for that.

Exit codes: 0 the drill passed; 1 it failed, was interrupted, or could not run
(no server, Redis down); 2 bad usage or configuration; 3 refused, another drill
is running.
"""

from __future__ import annotations

import getpass
import json
import signal
import sys
from types import FrameType
from typing import Any

import click
import redis

from failover.drill.report import DrillReport, Result
from failover.drill.run import new_id
from failover.drill.store import DrillStore
from ivr.cli.common import (
    BadUsage,
    CliError,
    check_trunk,
    config_option,
    json_option,
    load,
    local_time,
    print_json,
    print_table,
    redis_client,
)
from trunks.store import TrunkStore

EXIT_REFUSED = 3
PICKUP_TIMEOUT_S = 10.0
"""How long a request may wait for a server to take it."""
EVENT_TIMEOUT_S = 120.0
"""Longest silence from a running drill before the command gives up waiting."""


class Refused(CliError):
    exit_code = EXIT_REFUSED


@click.group()
def drill() -> None:
    """Prove the backup trunk with real test calls."""


@drill.command()
@click.option("--trunk", metavar="NAME", help="Trunk to prove [default: drill.trunk, or the "
              "backup].")
@click.option("--calls", type=click.IntRange(1, 20), help="Test calls [default: drill.calls].")
@click.option("--by", help="Who runs it, for the audit log [default: your login name].")
@config_option
@json_option
def run(trunk: str | None, calls: int | None, by: str | None, config: str | None,
        as_json: bool) -> None:
    """Force the backup trunk, place test calls through it, check them, restore."""
    settings = load(config)
    if settings.drill.number is None:
        raise BadUsage("drill.number is not set in the configuration: the drill needs the "
                       "number to call (the hotline's own)")
    if trunk is not None:
        check_trunk(settings, trunk)
    client = redis_client(settings)
    drills = DrillStore(client, settings.redis.prefix)
    try:
        holder = drills.holder()
        if holder is not None:
            raise Refused(f"refused: drill {holder} is running; only one drill at a time")
        if not TrunkStore(client, settings.redis.prefix).live_nodes():
            raise CliError("no hotline server is running (no node has a live heartbeat in "
                           "Redis); start `hotline serve` first")
        drill_id = new_id()
        drills.request(drill_id, trunk, calls, by or _login())
        report = _follow(drills, drill_id, as_json)
    except redis.RedisError as exc:
        raise CliError(f"Redis failed during the drill: {exc}") from exc
    if as_json:
        print_json(report)
    else:
        click.echo(DrillReport.from_json(json.dumps(report)).to_text())
    if report["result"] != Result.PASSED:
        sys.exit(1)


def _follow(drills: DrillStore, drill_id: str, as_json: bool) -> dict[str, Any]:
    """Print the drill's progress until its report; on SIGINT/SIGTERM ask it to stop."""
    interrupted: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not interrupted:
            click.echo(f"{signal.Signals(signum).name}: stopping the drill and restoring "
                       "the trunks...", err=True)
        interrupted.append(signum)
        drills.cancel(drill_id)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        taken = False
        while (event := drills.next_event(
                drill_id, EVENT_TIMEOUT_S if taken else PICKUP_TIMEOUT_S)) is not None:
            taken = True
            kind = event["kind"]
            if kind == "progress" and not as_json:
                click.echo(f"{local_time(event['at'])}  {event['text']}", err=True)
            elif kind == "done":
                return dict(event["report"])
            elif kind == "refused":
                raise Refused(f"refused: {event['text']}")
            elif kind == "error":
                raise CliError(f"the drill failed to run: {event['text']}")
        if not taken and drills.withdraw(drill_id):
            raise CliError(f"no hotline server took the drill within {PICKUP_TIMEOUT_S:.0f} s")
        raise CliError(f"drill {drill_id} went silent; see `hotline drill history`")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@drill.command()
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1))
@config_option
@json_option
def history(limit: int, config: str | None, as_json: bool) -> None:
    """Show past drills, newest first."""
    settings = load(config)
    drills = DrillStore(redis_client(settings), settings.redis.prefix)
    try:
        reports = drills.reports(limit)
    except redis.RedisError as exc:
        raise CliError(f"Redis failed while reading drills: {exc}") from exc
    if as_json:
        print_json([json.loads(r.to_json()) for r in reports])
        return
    if not reports:
        click.echo("No drills yet.")
        return
    print_table(["DRILL", "STARTED", "TRUNK", "RESULT", "CALLS_OK", "RESTORED", "BY"],
                [[r.id, local_time(r.started_at), r.trunk, r.result.value,
                  f"{sum(1 for c in r.calls if c.get('ok'))}/{len(r.calls)}",
                  "yes" if r.restored else "NO", f"{r.by} ({r.trigger})"] for r in reports])


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"

