"""Names the Hub library would reject, and paths that look like names: refused in one line before any
request, and a SOURCE spelled as a path is always a path, never sent to the Hub as a repo id."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixtral_cli.family.catalog import looks_like_a_path

LONG_NAME = "a" * 250 + "/" + "b" * 250


@pytest.mark.parametrize(
    "name",
    ["org/na me", "org/na%me", "org/x--y", "org/x..y", "org/-x", "org/x.", "org/" + "n" * 97, LONG_NAME, "ö/ü"],
)
def test_pull_refuses_a_repo_id_the_hub_library_rejects_in_one_line(name, mixtral):
    result = mixtral("pull", name)

    assert result.exit_code == 1
    (error, hint) = result.stderr.splitlines()
    assert error.startswith(f"Error: {name[:57]!r}"[:-1]) and "is not a valid Hub repo id" in error
    assert len(error) < 250 and "Traceback" not in result.stderr
    assert "ORG/NAME" in hint


@pytest.mark.parametrize("name", ["../etc", "./Mixtral-8x7B", "/etc/passwd", "~/models/x", "a/b/c", ".hidden/x"])
def test_pull_of_a_path_says_it_is_a_path_and_how_to_convert_one(name, mixtral):
    result = mixtral("pull", name)

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: {name!r} is a path, not a Mixtral name or Hub repo id.",
        f"To convert a model folder or GGUF on this machine: `mixtral quantize {name}`.",
    ]


@pytest.mark.parametrize("typo", ["./Mixtral-typo", "../Mixtral-typo", "models/2024/Mixtral-typo"])
def test_quantize_of_a_mistyped_folder_says_it_does_not_exist_without_asking_the_hub(
    typo, mixtral, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE")  # a source sent to the Hub would fail otherwise, on the network
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # and nothing listens there

    result = mixtral("quantize", typo)

    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == f"Error: {Path(typo)} does not exist."


def test_a_folder_named_like_a_repo_id_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)

    assert looks_like_a_path("org/name")
    assert not looks_like_a_path("org/other")
