"""The model store and the state folder as a hostile hand or an odd machine leaves them: a manifest that
is garbled in every way JSON allows, a MIXTRAL_HOME that cannot be written. A command that needs the
manifest says it is corrupt in one line; every other command runs, and state that cannot be kept is a
notice, never a refusal of the work."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from mixtral_cli.engine import calibration
from mixtral_cli.engine.layout import LayoutRates
from mixtral_cli.sources import hub as hub

from .helpers import read_only

pytestmark = pytest.mark.usefixtures("demo_model")

ENTRY = {
    "name": "org/repo:Q4_K_M",
    "repo": "org/repo",
    "revision": "0" * 40,
    "quant": "Q4_K_M",
    "kind": "gguf",
    "files": ["/models/model.gguf"],
    "size": 1,
}


def manifest_with(**overrides: object) -> bytes:
    return json.dumps({"default": None, "models": {ENTRY["name"]: ENTRY}, **overrides}).encode()


def entry_with(**overrides: object) -> bytes:
    entry = {key: value for key, value in {**ENTRY, **overrides}.items() if value is not None}
    return manifest_with(models={ENTRY["name"]: entry})


CORRUPT_MANIFESTS = {
    "models is a list": (manifest_with(models=[ENTRY]), "its models are not an object of names"),
    "models is text": (manifest_with(models="none"), "its models are not an object of names"),
    "default is a number": (manifest_with(default=5), "its default is not a model name"),
    "default is a list": (manifest_with(default=["a"]), "its default is not a model name"),
    "a list at the top": (b"[]", "it is not a JSON object"),
    "an entry without files": (entry_with(files=None), "model 'org/repo:Q4_K_M' names no files"),
    "an entry with no file": (entry_with(files=[]), "model 'org/repo:Q4_K_M' names no files"),
    "files as text": (entry_with(files="/models/model.gguf"), "model 'org/repo:Q4_K_M' names no files"),
    "a file that is a number": (entry_with(files=[7]), "model 'org/repo:Q4_K_M' names no files"),
    "a size that is text": (entry_with(size="1 GB"), "model 'org/repo:Q4_K_M' has no valid size"),
    "a size that is true": (entry_with(size=True), "model 'org/repo:Q4_K_M' has no valid size"),
    "instruct as text": (entry_with(instruct="yes"), "model 'org/repo:Q4_K_M' has no valid instruct"),
    "an entry without a repo": (entry_with(repo=None), "model 'org/repo:Q4_K_M' has no valid repo"),
    "an entry that is text": (manifest_with(models={"x": "y"}), "model 'x' is not an object"),
    "not JSON": (b'{"models": ', "it is not JSON: Expecting value at line 1"),
    "not UTF-8": (b'{"default": "\xff"}', "byte 13 is not UTF-8 text"),
    "nested too deeply": (b'{"models": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "it is nested too deeply"),
}


@pytest.fixture(params=list(CORRUPT_MANIFESTS), ids=list(CORRUPT_MANIFESTS))
def corrupt_manifest(request, isolated_home):
    content, reason = CORRUPT_MANIFESTS[request.param]
    manifest = isolated_home / "mixtral" / "models.json"
    manifest.write_bytes(content)
    return manifest, reason


def test_a_corrupt_manifest_is_named_with_what_is_wrong_by_commands_that_need_it(corrupt_manifest, mixtral):
    manifest, reason = corrupt_manifest
    result = mixtral("models", "list")

    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == f"Error: The model store's manifest {manifest} is corrupt: {reason}."
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("spec", ["tiny", "file"])
def test_a_corrupt_manifest_stops_no_command_that_does_not_need_it(spec, corrupt_manifest, mixtral, demo_model):
    model = "tiny" if spec == "tiny" else str(demo_model)
    result = mixtral("prompt", "-m", model, "Hello")

    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip()


def test_a_folder_in_place_of_the_manifest_is_named_as_corrupt(isolated_home, mixtral):
    manifest = isolated_home / "mixtral" / "models.json"
    manifest.mkdir(parents=True)
    result = mixtral("models", "list")

    assert result.exit_code == 1
    assert f"{manifest} is corrupt: it cannot be read: Is a directory." in result.stderr


# -- state that cannot be written -----------------------------------------------------------------------


def test_a_read_only_home_runs_a_model_file_and_says_the_measured_speeds_are_not_kept(isolated_home, demo_model):
    home = isolated_home / "mixtral"
    command = [sys.executable, "-m", "mixtral_cli", "complete", "-m", str(demo_model), "-n", "2", "Hello"]
    result = subprocess.run(read_only(home, command), capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "measured speeds for the model are not kept" in result.stderr
    assert "Read-only file system" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_read_only_home_chats_and_says_each_turn_that_the_chat_is_not_saved(isolated_home, demo_model):
    home = isolated_home / "mixtral"
    command = read_only(home, [sys.executable, "-m", "mixtral_cli", "chat", "-m", "tiny", "-n", "2", "-c", "512"])
    result = subprocess.run(command, capture_output=True, text=True, input="One\nTwo\n")

    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 2  # both answers
    assert result.stderr.count("Cannot save the chat to") == 2
    assert "Traceback" not in result.stderr


def test_measured_speeds_that_cannot_be_kept_are_a_notice(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MIXTRAL_HOME", str(blocker / "home"))
    notices: list[str] = []

    calibration.store_rates("key", LayoutRates(1.0, 1.0, 1.0, 1.0, 0.0), on_notice=notices.append)

    target = blocker / "home" / "calibration.json"
    assert notices == [
        f"This machine's measured speeds for the model are not kept: cannot write {target}: {blocker} is not a folder."
    ]


@pytest.mark.parametrize(
    "content",
    [b"[]", b'{"k": []}', b'{"k": {"plain_prompt": "fast"}}', b'{"k": {"plain_prompt": NaN}}', b"\xff", b"[" * 100_000],
)
def test_garbled_calibration_is_measured_again(content, isolated_home):
    calibration.cache_path().parent.mkdir(parents=True, exist_ok=True)
    calibration.cache_path().write_bytes(content)

    assert calibration.cached_rates("k") is None


def test_a_hash_check_that_cannot_be_kept_is_a_notice_and_the_file_counts_as_checked(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MIXTRAL_HOME", str(blocker / "home"))
    download = tmp_path / "model.gguf"
    download.write_bytes(b"GGUF")
    notices: list[str] = []

    assert hub._verified(download, hashlib.sha256(b"GGUF").hexdigest(), None, notices.append)
    assert len(notices) == 1 and "checks of downloaded files' sha256 are not kept" in notices[0]


@pytest.mark.parametrize("content", [b"[]", b'"checked"', b"\xff\xfe", b"[" * 100_000])
def test_a_garbled_record_of_hash_checks_is_checked_again_and_rewritten(content, isolated_home):
    record = isolated_home / "mixtral" / "verified.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_bytes(content)
    download = isolated_home / "model.gguf"
    download.write_bytes(b"GGUF")

    assert hub._verified(download, hashlib.sha256(b"GGUF").hexdigest(), None)
    assert str(download) in json.loads(record.read_text())
