"""The command line itself: help, version, errors and shell completion scripts."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import run_mixtral

COMPLETIONS = Path(__file__).parent.parent / "completions"
DOCS = Path(__file__).parent.parent / "docs"
SHELLS = {"bash": "mixtral.bash", "zsh": "_mixtral", "fish": "mixtral.fish"}


def test_help_lists_the_commands(mixtral):
    result = mixtral("--help")

    assert result.exit_code == 0
    for command in ("chat", "complete", "summarize", "prompt", "pull", "models", "quantize", "tiny", "completion"):
        assert command in result.stdout


def test_version(mixtral):
    from mixtral_cli import __version__

    result = mixtral("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"mixtral {__version__}"


def test_user_error_is_one_message_without_traceback(tmp_path):
    result = run_mixtral("quantize", tmp_path / "missing")

    assert result.returncode == 1
    assert result.stderr.startswith("Error:")
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = run_mixtral("--debug", "quantize", tmp_path / "missing")

    assert result.returncode == 1
    assert "Traceback" in result.stderr and "CheckpointError" in result.stderr


def test_mixtral_debug_variable_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXTRAL_DEBUG", "1")
    result = run_mixtral("quantize", tmp_path / "missing")
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_errors_print_on_the_console_given():
    from rich.console import Console

    from mixtral_cli.ui.console import print_error

    console = Console(record=True, width=80)
    print_error("No model 'x'.", "Use -m tiny.", console=console)
    assert console.export_text() == "Error: No model 'x'.\nUse -m tiny.\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_scripts_are_fresh(shell):
    generated = run_mixtral("completion", shell)

    assert generated.returncode == 0, generated.stderr
    committed = (COMPLETIONS / SHELLS[shell]).read_text()
    assert generated.stdout == committed, f"completions/{SHELLS[shell]} is stale: run completions/generate.sh"


def test_cli_reference_is_fresh(tmp_path):
    import os
    import subprocess
    import sys

    generated = tmp_path / "cli.md"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", DOCS / "generate.sh", generated], env=env, capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
    assert generated.read_text() == (DOCS / "cli.md").read_text(), "docs/cli.md is stale: run docs/generate.sh"


@pytest.mark.parametrize(
    ("words", "expected"),
    [("mixtral qu", {"quantize"}), ("mixtral quantize x --type Q4_K", {"Q4_K_M", "Q4_K_S"})],
)
def test_bash_completion_answers_from_the_app(words, expected, monkeypatch):
    monkeypatch.setenv("_MIXTRAL_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", words)
    monkeypatch.setenv("COMP_CWORD", str(len(words.split()) - 1))
    result = run_mixtral()

    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == expected
