"""The `hotline` command line.

Exit codes: 0 success, 1 runtime failure (Redis unreachable, server not
running), 2 bad usage or bad configuration.
"""

from __future__ import annotations

import datetime
import logging
import sys
import zoneinfo
from pathlib import Path

import click

from ivr.cli.calls import calls
from ivr.cli.common import BadUsage, CliError, config_option, load
from ivr.cli.drill import drill
from ivr.cli.kb import kb
from ivr.cli.nodes import nodes
from ivr.cli.speech import speech
from ivr.cli.tickets import tickets
from ivr.cli.trunks import trunks
from ivr.clock import utc_now
from ivr.flow.model import load_flow
from ivr.flow.oncall import load_oncall
from ivr.nodes import NodeNameTaken
from ivr.redis_server import RedisUnavailable, describe
from ivr.server import Server
from ivr.settings import ConfigError, Settings, cluster_problems, load_settings, load_yaml
from kb.errors import KbError
from kb.faq import Faq
from speech.engines import check_model
from speech.errors import SpeechError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hotline")
def cli() -> None:
    """Hotline IVR and call-failover server."""


@cli.command()
@config_option
def serve(config: str | None) -> None:
    """Run the hotline until SIGINT (every call hung up at once) or SIGTERM (drain: no
    new calls, the calls up may go on for drain_timeout_s), then stop cleanly.

    \b
    What runs, as the configuration asks:
      - the trunk monitor: OPTIONS probes, health, alerts on changes;
      - a SIP endpoint per trunk with a listen address, answering callers with
        the flow of ivr.yaml (menus, forwards to the on-call roster through the
        healthiest trunk, the voice bot with its tickets);
      - the RTP engine carrying every call's audio;
      - call-backs to callers cut off by a trunk failure (failover.callback);
      - the drill responder, and the drill schedule (drill.schedule);
      - the ticket outbox to the helpdesk (tickets.helpdesk) and alerts (notify);
      - with http.listen: the JSON API, /metrics, the dashboard, Twilio webhooks;
      - unless redis.url or redis.sentinels is set, an embedded redis-server
        under data_dir.
    """
    settings = load(config)
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT, stream=sys.stderr)
    try:
        server = Server(settings)
    except ConfigError as exc:
        raise BadUsage(str(exc)) from exc
    try:
        server.run_until_signalled()
    except (RedisUnavailable, SpeechError, KbError, NodeNameTaken) as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:  # a SIP or RTP port that cannot be bound
        raise CliError(f"cannot start: {exc}") from exc


@cli.group("config")
def config_group() -> None:
    """Check configuration files."""


@config_group.command("check")
@click.argument("files", metavar="FILE...", nargs=-1, required=True,
                type=click.Path(path_type=Path))
@click.option("--at", "at", metavar="TIME", help="Say who is on call at TIME (ISO 8601, e.g. "
              "2026-12-25T10:00; without an offset, in the roster's time zone) instead of now.")
def config_check(files: tuple[Path, ...], at: str | None) -> None:
    """Validate each FILE without starting anything. Given the files of several nodes,
    also check that they make one cluster: one shared Redis, their own names, the same
    trunk names."""
    nodes = [_check_file(file, at) for file in files]
    if len(nodes) > 1:
        problems = cluster_problems(dict(zip(files, nodes, strict=True)))
        if problems:
            raise BadUsage("these files do not make one cluster:\n  " + "\n  ".join(problems))
        click.echo(f"cluster: OK ({len(nodes)} nodes: {', '.join(s.node for s in nodes)})")


def _check_file(file: Path, at: str | None) -> Settings:
    """Validate one node's FILE (and its flow, roster, FAQ, model) and say what it has."""
    try:
        settings = load_settings(file)
        flow = load_flow(settings.flow)
        oncall = load_oncall(settings.oncall) if flow.forwards else None
        faq = load_yaml(settings.kb.faq, Faq) if flow.voicebots else None
        model = (check_model(settings.speech, settings.speech.models_path(settings.data_dir))
                 if flow.voicebots else None)
    except (ConfigError, SpeechError) as exc:
        raise BadUsage(str(exc)) from exc
    names = ", ".join(t.name for t in settings.trunks)
    click.echo(f"{file}: OK ({len(settings.trunks)} trunks: {names})")
    click.echo(f"redis: {describe(settings)}")
    click.echo(f"{settings.flow}: OK ({len(flow.nodes)} nodes, starting at {flow.start})")
    if oncall is not None:
        moment = utc_now() if at is None else _moment(at, oncall.timezone)
        click.echo(f"{settings.oncall}: OK ({len(oncall.people)} people, "
                   f"{oncall.name(oncall.on_duty(moment))} on duty "
                   f"{'now' if at is None else 'at ' + moment.isoformat(timespec='minutes')})")
    if faq is not None:
        click.echo(f"{settings.kb.faq}: OK ({len(faq.entries)} entries)")
        click.echo(f"speech: {settings.speech.engine} model at {model}")
    return settings


def _moment(text: str, timezone: str) -> datetime.datetime:
    """`text` as an aware time; without an offset, local to `timezone`."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time", param_hint="--at") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=zoneinfo.ZoneInfo(timezone))


cli.add_command(trunks)
cli.add_command(calls)
cli.add_command(kb)
cli.add_command(speech)
cli.add_command(tickets)
cli.add_command(drill)
cli.add_command(nodes)


def main() -> None:
    cli(prog_name="hotline")
