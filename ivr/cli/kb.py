"""`hotline kb ...`: build, query and score the FAQ search the voice bot uses."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from ivr.cli.common import BadUsage, CliError, config_option, json_option, load, print_json
from ivr.settings import ConfigError, load_yaml
from kb.calibration import Calibration, cross_validate, fit
from kb.errors import KbError
from kb.evaluate import Report, evaluate, labels, load_turns
from kb.faq import Faq
from kb.index import Index, open_index
from kb.progress import Progress, progress_reporter
from kb.search import Searcher

DATA_DIR_ENV = "HOTLINE_DATA_DIR"


@dataclass(frozen=True)
class KbFiles:
    faq: Path
    cache_dir: Path
    calibration: Path | None


def faq_option(function: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--faq", type=click.Path(path_type=Path), default=None,
        help="FAQ file [default: kb.faq of the config]. With --faq the config is not read: "
             "indexes go under $HOTLINE_DATA_DIR/kb (else var/kb) and the shipped "
             "calibration is used.")(function)


def calibration_option(function: click.decorators.FC) -> click.decorators.FC:
    return click.option("--calibration", type=click.Path(path_type=Path), default=None,
                        help="Decision calibration file [default: kb.calibration, "
                             "else the shipped one].")(function)


@click.group("kb")
def kb() -> None:
    """Build, query and score the voice bot's FAQ search."""


@kb.command()
@faq_option
@config_option
def build(faq: Path | None, config: str | None) -> None:
    """Build the FAQ's search index now (otherwise the first search does it).

    Progress shows as a bar on a terminal, else as a line every few seconds on stderr."""
    files = _files(faq, config, None)
    started = time.monotonic()
    with progress_reporter(emit=lambda line: click.echo(line, err=True)) as progress:
        index = _index(_faq(files.faq), files.cache_dir, progress)
    click.echo(f"{files.faq}: index of {len(index.entry_ids)} entries in {index.directory} "
               f"({time.monotonic() - started:.1f} s)")


@kb.command()
@click.argument("text")
@faq_option
@calibration_option
@config_option
@json_option
def ask(text: str, faq: Path | None, calibration: Path | None, config: str | None,
        as_json: bool) -> None:
    """Search the FAQ for TEXT, as the voice bot would for a caller's turn."""
    result = _searcher(_files(faq, config, calibration)).ask(text)
    if as_json:
        print_json(result.to_dict())
        return
    click.echo(f"decision: {result.decision}  (confidence {result.confidence:.2f}, "
               f"score {result.score:.3f})")
    for candidate in result.candidates:
        click.echo(f"  {candidate.score:.3f}  {candidate.id}")
    if result.answer:
        click.echo(result.answer)


@kb.command("eval")
@click.argument("questions", type=click.Path(path_type=Path))
@faq_option
@calibration_option
@config_option
@json_option
def eval_command(questions: Path, faq: Path | None, calibration: Path | None,
                 config: str | None, as_json: bool) -> None:
    """Score the search on QUESTIONS, a YAML list of {text, expect} (expect null: don't answer)."""
    searcher = _searcher(_files(faq, config, calibration))
    try:
        turns = load_turns(questions, searcher.faq)
    except KbError as exc:
        raise BadUsage(str(exc)) from exc
    for turn in turns[:5]:  # warm up caches so the latency is that of a running server
        searcher.ask(turn.text)
    report, _ = evaluate(searcher, turns)
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)


@kb.command()
@click.argument("questions", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Write the calibration here (point kb.calibration at it).")
@faq_option
@config_option
@json_option
def calibrate(questions: Path, out: Path, faq: Path | None, config: str | None,
              as_json: bool) -> None:
    """Fit when to answer from QUESTIONS (labelled turns) and report its cross-validation."""
    searcher = _searcher(_files(faq, config, None), Calibration.never_answer())
    try:
        turns = load_turns(questions, searcher.faq)
    except KbError as exc:
        raise BadUsage(str(exc)) from exc
    _, results = evaluate(searcher, turns)
    features = np.array([r.features for r in results])
    right, in_scope = labels(turns, [r.candidates[0].id for r in results])
    try:
        scores = cross_validate(features, right, in_scope)
        fitted = fit(features, right, in_scope, fitted={
            "turns": len(turns), "in_scope": int(in_scope.sum()),
            "faq_digest": searcher.faq.digest(), "cross_validation": scores})
    except KbError as exc:
        raise BadUsage(str(exc)) from exc
    fitted.save(out)
    if as_json:
        print_json({"file": str(out), **fitted.fitted})
        return
    click.echo(f"cross-validated ({scores['folds']}-fold x {scores['repeats']}): overall "
               f"{scores['overall']:.3f} +/- {scores['overall_std']:.3f}, in scope "
               f"{scores['in_scope']:.3f}, out of scope rejected {scores['out_of_scope']:.3f}")
    click.echo(f"wrote {out} (answer at confidence >= {fitted.threshold:.2f})")


def _files(faq: Path | None, config: str | None, calibration: Path | None) -> KbFiles:
    if faq is not None and config is None:
        data_dir = Path(os.environ.get(DATA_DIR_ENV) or "var")
        return KbFiles(faq, data_dir / "kb", calibration)
    settings = load(config)
    assert settings.kb.cache_dir is not None  # load_settings fills it in
    return KbFiles(faq or settings.kb.faq, settings.kb.cache_dir,
                   calibration or settings.kb.calibration)


def _faq(path: Path) -> Faq:
    try:
        return load_yaml(path, Faq)
    except ConfigError as exc:
        raise BadUsage(str(exc)) from exc


def _index(faq: Faq, cache_dir: Path, progress: Progress | None = None) -> Index:
    try:
        return open_index(faq, cache_dir, progress=progress)
    except KbError as exc:
        raise CliError(str(exc)) from exc


def _searcher(files: KbFiles, calibration: Calibration | None = None) -> Searcher:
    faq = _faq(files.faq)
    try:
        calibration = calibration or Calibration.load(files.calibration)
    except KbError as exc:
        raise BadUsage(str(exc)) from exc
    index = _index(faq, files.cache_dir)
    try:
        return Searcher(faq, index, calibration)
    except KbError as exc:
        raise CliError(str(exc)) from exc


def _print_report(report: Report) -> None:
    click.echo(f"turns: {report.turns} ({report.in_scope} in scope, "
               f"{report.turns - report.in_scope} out of scope)")
    click.echo(f"in-scope top-1 accuracy:   {report.top1:.3f}")
    click.echo(f"in-scope answered right:   {report.answered_right:.3f}")
    click.echo(f"out-of-scope rejection:    {report.rejection:.3f}")
    click.echo(f"overall accuracy:          {report.overall:.3f}")
    click.echo(f"clarify decisions:         {report.clarified}")
    click.echo(f"latency p50 / p99:         {report.latency_p50_ms:.1f} / "
               f"{report.latency_p99_ms:.1f} ms")
    if report.mistakes:
        click.echo("mistakes:")
        for mistake in report.mistakes:
            click.echo(f"  {json.dumps(mistake)}")
