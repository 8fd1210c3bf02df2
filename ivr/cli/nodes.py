"""`hotline nodes ...`: which hotline nodes are alive, from their leases in Redis."""

from __future__ import annotations

import getpass
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
from ivr.nodes import as_rows, live_nodes, node_info, request_drain

WAIT_POLL_S = 1.0


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


@nodes.command()
@click.argument("name", required=False)
@click.option("--wait", "wait", is_flag=True,
              help="Wait until the node has drained and stopped.")
@click.option("--by", help="Operator name [default: your login name].")
@config_option
def drain(name: str | None, wait: bool, by: str | None, config: str | None) -> None:
    """Drain node NAME (default: this configuration's node): it answers new calls and the
    front door's probes 503, lets its calls end (up to its drain_timeout_s), then exits.
    The same as SIGTERM to that node."""
    settings = load(config)
    name = name or settings.node
    client = redis_client(settings)
    try:
        if node_info(client, settings.redis.prefix, name) is None:
            raise CliError(f"no live node named {name!r} (see `hotline nodes status`)")
        request_drain(client, settings.redis.prefix, name, by or getpass.getuser())
        click.echo(f"Asked node {name} to drain.")
        if not wait:
            return
        deadline = time.monotonic() + settings.drain_timeout_s + 60
        while (info := node_info(client, settings.redis.prefix, name)) is not None:
            if time.monotonic() > deadline:
                raise CliError(f"node {name} is still up after {settings.drain_timeout_s:g} s "
                               "of draining")
            click.echo(f"  {name}: {info.live_calls} calls up", err=True)
            time.sleep(WAIT_POLL_S)
    except redis.RedisError as exc:
        raise CliError(f"cannot reach Redis: {exc}") from exc
    click.echo(f"Node {name} has drained and stopped.")
