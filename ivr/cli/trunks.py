"""`hotline trunks ...`: see trunk health, drain, force and restore trunks."""

from __future__ import annotations

import getpass
from datetime import datetime
from typing import Any

import click
import redis

from ivr.cli.common import (
    BadUsage,
    CliError,
    F,
    check_trunk,
    config_option,
    json_option,
    load,
    local_time,
    open_store,
    print_json,
    print_table,
)
from ivr.operations import BadRequest, NotRunning, new_override, status_rows
from ivr.operations import history as history_entries
from ivr.settings import Settings
from trunks.errors import UnknownTrunk
from trunks.overrides import OverrideAction
from trunks.store import TrunkStore

HISTORY_LIMIT = 50
def override_options(function: F) -> F:
    """The arguments shared by `drain` and `force`."""
    for decorate in reversed([
        click.argument("name"),
        click.option("--reason", required=True, help="Why; kept in the audit log."),
        click.option("--expires", metavar="DURATION", help="Lift it after e.g. 30m, 2h, 1d."),
        click.option("--by", help="Operator name [default: your login name]."),
        config_option,
    ]):
        function = decorate(function)
    return function


@click.group()
def trunks() -> None:
    """See and steer the SIP trunks."""


@trunks.command()
@config_option
@json_option
def status(config: str | None, as_json: bool) -> None:
    """Show each trunk's health as seen by each running node, and its override."""
    settings = load(config)
    store = open_store(settings)
    try:
        rows = _status_rows(settings, store)
    except redis.RedisError as exc:
        raise CliError(f"Redis failed while reading status: {exc}") from exc
    if as_json:
        print_json(rows)
        return
    print_table(["TRUNK", "NODE", "STATE", "RTT_MS", "SINCE", "OVERRIDE", "PRIORITY", "LAST_ERROR"],
                [[r["name"], r["node"], r["state"], _ms(r["rtt_ms"]), local_time(r["since_ts"]),
                  _override_text(r["override"]), str(r["priority"]), r["last_error"] or "-"]
                 for r in rows])


@trunks.command()
@override_options
def drain(name: str, reason: str, expires: str | None, by: str | None, config: str | None) -> None:
    """Take no new calls on trunk NAME; calls in progress continue."""
    _set_override(name, OverrideAction.DRAIN, reason, expires, by, config)


@trunks.command()
@override_options
def force(name: str, reason: str, expires: str | None, by: str | None, config: str | None) -> None:
    """Prefer trunk NAME to all others while it is usable."""
    _set_override(name, OverrideAction.FORCE, reason, expires, by, config)


@trunks.command()
@click.argument("name")
@click.option("--reason", default="restored", show_default=True, help="Kept in the audit log.")
@click.option("--by", help="Operator name [default: your login name].")
@config_option
def restore(name: str, reason: str, by: str | None, config: str | None) -> None:
    """Lift any drain or force on trunk NAME."""
    settings = load(config)
    check_trunk(settings, name)
    store = open_store(settings)
    try:
        previous = store.clear_override(name, by or _login(), reason)
    except redis.RedisError as exc:
        raise CliError(f"Redis failed; {name} was not restored: {exc}") from exc
    if previous is None:
        click.echo(f"{name} had no override; nothing changed.")
    else:
        click.echo(f"{name} restored (was {previous.action.value}: {previous.reason}).")


@trunks.command()
@click.option("--trunk", "only", metavar="NAME", help="Only this trunk.")
@click.option("--limit", default=HISTORY_LIMIT, show_default=True, type=click.IntRange(1))
@config_option
@json_option
def history(only: str | None, limit: int, config: str | None, as_json: bool) -> None:
    """Show state transitions and operator actions, newest first."""
    settings = load(config)
    if only:
        check_trunk(settings, only)
    store = open_store(settings)
    try:
        entries = history_entries(store, limit * 4 if only else limit)
    except redis.RedisError as exc:
        raise CliError(f"Redis failed while reading history: {exc}") from exc
    entries = [e for e in entries if not only or e["trunk"] == only][:limit]
    if as_json:
        print_json(entries)
        return
    print_table(["TIME", "TRUNK", "KIND", "WHAT", "BY", "DETAIL"],
                [[local_time(e["at_ts"]), e["trunk"], e["kind"], e["what"], e["by"] or "-",
                  _detail(e)] for e in entries])


def _set_override(name: str, action: OverrideAction, reason: str, expires: str | None,
                  by: str | None, config: str | None) -> None:
    settings = load(config)
    try:
        override = new_override(settings, name, action, reason, expires, by or _login())
    except BadRequest as exc:
        raise BadUsage(f"--{exc}") from exc
    except UnknownTrunk as exc:
        raise BadUsage(str(exc)) from exc
    store = open_store(settings)
    try:
        store.set_override(override)
    except redis.RedisError as exc:
        raise CliError(f"Redis failed; {name} was not changed: {exc}") from exc
    until = "" if override.expires_at is None else f" until {local_time(override.expires_at)}"
    verb = "drained" if action is OverrideAction.DRAIN else "forced"
    click.echo(f"{name} {verb}{until} by {override.by}: {override.reason}")


def _status_rows(settings: Settings, store: TrunkStore) -> list[dict[str, Any]]:
    try:
        return status_rows(settings, store)
    except NotRunning as exc:
        raise CliError(str(exc)) from exc


def _detail(entry: dict[str, Any]) -> str:
    until = entry.get("expires_at")
    if not until:
        return str(entry["detail"])
    return f"{entry['detail']} (until {local_time(datetime.fromisoformat(until).timestamp())})"


def _override_text(override: dict[str, Any] | None) -> str:
    return "-" if override is None else f"{override['action']} ({override['by']})"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
