"""`mixtral --help` stays quick: the command line imports typer and the commands' options, and each command
imports its core (the engine, the server, the converter, the UI and their libraries) only when it runs.
benchmarks/startup.py measures what this keeps."""

from __future__ import annotations

import subprocess
import sys

# Each is a command's core or a library only some commands need; any of them at startup is paid by every
# `--help`, every shell completion and every command that does not use it.
CORES = (
    "asyncio",
    "llama_cpp",
    "numpy",
    "gguf",
    "huggingface_hub",
    "rich",
    "prompt_toolkit",
    "starlette",
    "mixtral_cli.engine.model",
    "mixtral_cli.serve",
    "mixtral_cli.chat",
    "mixtral_cli.convert",
    "mixtral_cli.ui",
)


def test_importing_the_command_line_imports_no_commands_core():
    listing = "import sys, mixtral_cli.cli; print('\\n'.join(sys.modules))"
    loaded = set(
        subprocess.run([sys.executable, "-c", listing], capture_output=True, text=True, check=True).stdout.split()
    )

    cores = sorted(name for name in loaded if any(name == core or name.startswith(f"{core}.") for core in CORES))
    assert cores == []
