"""`hotline speech ...`: list and install Vosk models.

Exit codes as in the rest of the CLI: 0 success, 1 a network, checksum or disk
failure, 2 an unknown model name or bad usage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ivr.cli.common import BadUsage, CliError, json_option, print_json, print_table
from speech.errors import ModelInstallError, UnknownModel
from speech.models import ModelEntry, fetch_model_list, install_model, is_model_dir
from speech.recognizer import DEFAULT_MODELS_DIR, VOSK_MODEL_LIST_URL

F = TypeVar("F", bound=Callable[..., Any])


def _models_dir_option(function: F) -> F:
    return click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path),
                        default=DEFAULT_MODELS_DIR, show_default=True,
                        help="Directory of installed models (speech.models_dir).")(function)


def _list_url_option(function: F) -> F:
    return click.option("--list-url", default=VOSK_MODEL_LIST_URL, show_default=True,
                        metavar="URL", help="The model list (a mirror's, or a file:// URL).")(
        function)


@click.group()
def speech() -> None:
    """Manage speech recognition models."""


@speech.command("list-models")
@click.option("--lang", metavar="CODE", help="Only models for this language (en-us, ko, ...).")
@click.option("--all", "show_all", is_flag=True, help="Include obsolete models.")
@_models_dir_option
@_list_url_option
@json_option
def list_models(lang: str | None, show_all: bool, models_dir: Path, list_url: str,
                as_json: bool) -> None:
    """Show the Vosk models that can be installed, and which are."""
    try:
        entries = fetch_model_list(list_url)
    except ModelInstallError as exc:
        raise CliError(str(exc)) from exc
    shown = [e for e in entries if (show_all or not e.obsolete)
             and (lang is None or e.lang.lower() == lang.lower())]
    if as_json:
        print_json([{**dataclasses.asdict(e), "installed": _installed(e, models_dir)}
                    for e in shown])
        return
    if not shown:
        click.echo("no models match")
        return
    print_table(["NAME", "LANG", "TYPE", "SIZE", "INSTALLED"],
                [[e.name, e.lang, e.type, _size(e.size),
                  "yes" if _installed(e, models_dir) else "-"] for e in shown])


@speech.command("install-model")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download again even if it is installed.")
@_models_dir_option
@_list_url_option
def install(name: str, force: bool, models_dir: Path, list_url: str) -> None:
    """Download Vosk model NAME, check its size and MD5, and unpack it into the models
    directory; print its path. Set speech.vosk.model to NAME to use it."""
    if "/" in name or name in ("", ".", ".."):
        raise BadUsage(f"{name!r} is not a model name (see `hotline speech list-models`)")
    already = is_model_dir(models_dir / name) and not force
    try:
        path = install_model(name, models_dir, list_url, force=force)
    except UnknownModel as exc:
        raise BadUsage(str(exc)) from exc
    except ModelInstallError as exc:
        raise CliError(str(exc)) from exc
    if already:
        click.echo(f"{name} is already installed (--force to download it again)", err=True)
    click.echo(str(path.resolve()))


def _installed(entry: ModelEntry, models_dir: Path) -> bool:
    return is_model_dir(models_dir / entry.name)


def _size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size < 2**30 else f"{size / 2**30:.1f} GiB"
