"""What every `hotline` command shares: loading the config, errors, output."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
import redis

from ivr import operations
from ivr.redis_server import RedisUnavailable, connect
from ivr.settings import CONFIG_ENV, ConfigError, Settings, config_path, load_settings
from trunks.errors import UnknownTrunk
from trunks.store import TrunkStore

F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """A runtime failure shown as one sentence; exit code 1."""

    exit_code = 1


class BadUsage(CliError):
    """Bad arguments or configuration, shown as one sentence; exit code 2."""

    exit_code = 2


def config_option(function: F) -> F:
    return click.option(
        "--config", "config", metavar="FILE", default=None,
        help=f"Configuration file [default: ${CONFIG_ENV} or config/hotline.yaml].",
    )(function)


def json_option(function: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(function)


def load(config: str | None) -> Settings:
    try:
        return load_settings(config_path(config))
    except ConfigError as exc:
        raise BadUsage(str(exc)) from exc


def redis_client(settings: Settings) -> redis.Redis:
    """The server's Redis, or a one-sentence CliError saying why it cannot be reached."""
    try:
        return connect(settings)
    except RedisUnavailable as exc:
        raise CliError(str(exc)) from exc


def open_store(settings: Settings) -> TrunkStore:
    return TrunkStore(redis_client(settings), settings.redis.prefix)


def check_trunk(settings: Settings, name: str) -> None:
    try:
        operations.check_trunk(settings, name)
    except UnknownTrunk as exc:
        raise BadUsage(str(exc)) from exc


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def local_time(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
