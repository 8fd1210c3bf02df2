"""`hotline nodes ...`: which hotline nodes are alive, from their leases in Redis."""

from __future__ import annotations

import time

import click
import redis

from ivr.cli.common import (
    CliError,
    config_option,
    json_option,
    load,
    local_time,
    print_json,
    print_table,
    redis_client,
)
from ivr.nodes import as_rows, live_nodes


@click.group()
def nodes() -> None:
    """See the hotline nodes sharing this configuration's Redis."""


@nodes.command()
@config_option
@json_option
def status(config: str | None, as_json: bool) -> None:
    """Show every live node: its addresses, live calls, whether it drains, its last
    renewal. A node that stopped renewing for a few seconds is not listed."""
    settings = load(config)
    try:
        rows = as_rows(live_nodes(redis_client(settings), settings.redis.prefix), time.time())
    except redis.RedisError as exc:
        raise CliError(f"cannot read the nodes from Redis: {exc}") from exc
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("No live node: none has renewed its lease in the last few seconds.")
        return
    print_table(["NODE", "SIP", "HTTP", "CALLS", "STATE", "HOST", "STARTED", "RENEWED"], [
        [r["name"], ", ".join(f"{t}={a}" for t, a in r["sip"].items()) or "-",
         r["http"] or "-", str(r["live_calls"]), "draining" if r["draining"] else "serving",
         f"{r['host']} pid {r['pid']}", local_time(r["started_at"]),
         f"{r['renewed_s_ago']:g} s ago"] for r in rows])
