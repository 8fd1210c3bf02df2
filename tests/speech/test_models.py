"""`hotline speech install-model` and `list-models` against a model mirror on loopback.

The mirror is `http.server` on 127.0.0.1 serving small fake models (a directory
with `am/final.mdl`, as Vosk's zips have) and a generated model-list.json in the
official format, including entries whose MD5 or size is wrong and a zip-slip
archive.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import re
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ivr.cli.speech import speech
from speech.engines import create_recognizer
from speech.errors import ModelNotFound, UnknownModel
from speech.models import ModelEntry, find_entry, install_model, parse_model_list, vosk_model_path
from speech.recognizer import SpeechSettings

GOOD = "vosk-model-tiny-xx-0.1"


class Mirror:
    """A static HTTP server in a thread, recording the paths asked for."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.requests = directory, []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                requests.append(self.path)

        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
        self.thread = threading.Thread(target=self.server.serve_forever, name="mirror",
                                       kwargs={"poll_interval": 0.05})

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{path}"

    def __enter__(self) -> Mirror:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving and close the socket, so connections are refused; idempotent."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join()
        self.server.server_close()


def model_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in files.items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def fake_model(root: str) -> dict[str, bytes]:
    return {f"{root}/am/final.mdl": b"acoustic model" * 100,
            f"{root}/conf/mfcc.conf": b"--use-energy=false\n", f"{root}/README": b"tiny\n"}


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    site = tmp_path / "site"
    site.mkdir()
    archives = {
        GOOD: model_zip(fake_model(GOOD)),
        "vosk-model-flat-pt-0.3": model_zip({"final.mdl": b"x", "mfcc.conf": b""}),
        "vosk-model-slip-xx-0.1": model_zip({**fake_model("ok"), "../evil.txt": b"gotcha"}),
        "vosk-model-empty-xx-0.1": model_zip({"empty/README": b"no model here"}),
    }
    for name, data in archives.items():
        (site / f"{name}.zip").write_bytes(data)
    with Mirror(site) as server:
        entries = [_entry(server, name, data) for name, data in archives.items()]
        good = archives[GOOD]
        entries.append(_entry(server, "vosk-model-badmd5-xx-0.1", good, file=GOOD,
                              md5="0" * 32))
        entries.append(_entry(server, "vosk-model-short-xx-0.1", good, file=GOOD,
                              size=len(good) + 1))
        entries.append(_entry(server, "vosk-model-old-xx-0.0", good, file=GOOD,
                              obsolete="true"))
        (site / "model-list.json").write_text(json.dumps(entries))
        yield server


def _entry(server: Mirror, name: str, data: bytes, file: str | None = None,
           **changes: Any) -> dict[str, Any]:
    entry = {"lang": "xx", "lang_text": "Test", "md5": hashlib.md5(data).hexdigest(),
             "name": name, "obsolete": "false", "size": len(data), "size_text": "1KiB",
             "type": "small", "url": server.url(f"{file or name}.zip"), "version": "0.1"}
    return {**entry, **changes}


def run(*args: str) -> Result:
    return CliRunner().invoke(speech, list(args), catch_exceptions=False)


def test_install_verifies_and_unpacks(mirror: Mirror, models_dir: Path) -> None:
    result = run("install-model", GOOD, "--models-dir", str(models_dir),
                 "--list-url", mirror.url("model-list.json"))
    assert result.exit_code == 0, result.output
    installed = models_dir / GOOD
    assert result.output.strip() == str(installed.resolve())
    assert (installed / "am" / "final.mdl").read_bytes() == b"acoustic model" * 100
    assert sorted(p.name for p in models_dir.iterdir()) == [GOOD], "no temporary files left"
    assert vosk_model_path(GOOD, models_dir) == installed
    asked = len(mirror.requests)
    again = run("install-model", GOOD, "--models-dir", str(models_dir),
                "--list-url", mirror.url("model-list.json"))
    assert again.exit_code == 0 and "already installed" in again.output
    assert len(mirror.requests) == asked, "an installed model is not fetched again"
    (installed / "stale").write_text("old")
    forced = run("install-model", GOOD, "--force", "--models-dir", str(models_dir),
                 "--list-url", mirror.url("model-list.json"))
    assert forced.exit_code == 0 and not (installed / "stale").exists()
    assert sorted(p.name for p in models_dir.iterdir()) == [GOOD]


def test_model_at_the_top_of_the_archive(mirror: Mirror, models_dir: Path) -> None:
    path = install_model("vosk-model-flat-pt-0.3", models_dir, mirror.url("model-list.json"),
                         progress=False)
    assert (path / "final.mdl").is_file()


@pytest.mark.parametrize(("name", "message"), [
    ("vosk-model-badmd5-xx-0.1", r"MD5 [0-9a-f]{32} does not match 0{32} from the list"),
    ("vosk-model-short-xx-0.1", r"got \d+ bytes, the list says \d+"),
    ("vosk-model-slip-xx-0.1", r"refusing archive member '\.\./evil\.txt'"),
    ("vosk-model-empty-xx-0.1", r"the archive holds no Vosk model"),
])
def test_bad_archives_fail_and_leave_nothing(mirror: Mirror, tmp_path: Path, name: str,
                                             message: str) -> None:
    models_dir = tmp_path / "deep" / "models"
    result = run("install-model", name, "--models-dir", str(models_dir),
                 "--list-url", mirror.url("model-list.json"))
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and re.search(message, result.output)
    assert list(models_dir.iterdir()) == [], "nothing half-installed"
    assert not (tmp_path / "deep" / "evil.txt").exists()


def test_unknown_names_and_unreachable_lists(mirror: Mirror, models_dir: Path) -> None:
    result = run("install-model", "vosk-model-tiny-yy", "--models-dir", str(models_dir),
                 "--list-url", mirror.url("model-list.json"))
    assert result.exit_code == 2
    assert f"no Vosk model named 'vosk-model-tiny-yy'; did you mean {GOOD}" in \
        result.output.replace(" in the model list", "")
    assert run("install-model", "../x", "--models-dir", str(models_dir)).exit_code == 2
    mirror.stop()  # the mirror goes away: a network failure
    gone = run("install-model", GOOD, "--models-dir", str(models_dir),
               "--list-url", mirror.url("model-list.json"))
    assert gone.exit_code == 1 and "cannot read the model list http://127.0.0.1:" in gone.output
    missing = run("list-models", "--list-url", mirror.url("nothing.json"))
    assert missing.exit_code == 1


def test_list_models_table_and_json(mirror: Mirror, models_dir: Path) -> None:
    install_model(GOOD, models_dir, mirror.url("model-list.json"), progress=False)
    url = mirror.url("model-list.json")
    table = run("list-models", "--models-dir", str(models_dir), "--list-url", url)
    assert table.exit_code == 0
    header, *rows = table.output.splitlines()
    assert header.split() == ["NAME", "LANG", "TYPE", "SIZE", "INSTALLED"]
    assert [r.split()[0] for r in rows if r.split()[-1] == "yes"] == [GOOD]
    assert not any("vosk-model-old" in r for r in rows), "obsolete models are hidden"
    shown = json.loads(run("list-models", "--all", "--json", "--lang", "XX",
                           "--models-dir", str(models_dir), "--list-url", url).output)
    assert len(shown) == 7 and shown[0]["installed"] is True and shown[0]["size"] > 0
    assert any(e["obsolete"] for e in shown)


def test_install_as_a_real_subprocess(mirror: Mirror, models_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from ivr.cli.speech import speech; speech()", "install-model",
         GOOD, "--models-dir", str(models_dir), "--list-url", mirror.url("model-list.json")],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str((models_dir / GOOD).resolve())
    bad = subprocess.run(
        [sys.executable, "-c", "from ivr.cli.speech import speech; speech()", "install-model",
         "nope", "--models-dir", str(models_dir), "--list-url", mirror.url("model-list.json")],
        capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "no Vosk model named 'nope'" in bad.stderr


def test_parse_model_list_is_strict() -> None:
    entries = parse_model_list(json.dumps([
        {"name": "a", "url": "u", "md5": "ABC", "size": "12", "obsolete": "true"}]).encode())
    assert entries == [ModelEntry("a", "", "u", "abc", 12, obsolete=True)]
    for bad in (b"{}", b"not json", b'[{"name": "a"}]'):
        with pytest.raises(ValueError, match="model list"):
            parse_model_list(bad)
    with pytest.raises(UnknownModel, match=r"did you mean vosk-model-small-en-us-0\.15\?"):
        find_entry([ModelEntry("vosk-model-small-en-us-0.15", "en-us", "u", "m", 1)],
                   "vosk-model-en-us")


def test_missing_model_names_the_install_command(models_dir: Path) -> None:
    settings = SpeechSettings(vosk={"model": "vosk-model-small-en-us-0.15"})
    with pytest.raises(ModelNotFound) as caught:
        create_recognizer(settings, models_dir)
    message = str(caught.value)
    assert message == (f"speech model 'vosk-model-small-en-us-0.15' not found at "
                       f"{models_dir / 'vosk-model-small-en-us-0.15'}; run `hotline speech "
                       "install-model vosk-model-small-en-us-0.15`")
    (models_dir / "half").mkdir(parents=True)
    with pytest.raises(ModelNotFound, match="install-model half"):
        vosk_model_path(str(models_dir / "half"), models_dir)
