"""Running the CLI in a child process."""

from __future__ import annotations

import os
import subprocess
import sys


def run_mixtral_process(*args: str | os.PathLike[str], **kwargs) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mixtral_cli`` in a child process: for exit codes, signals and real stdio."""
    return subprocess.run(
        [sys.executable, "-m", "mixtral_cli", *map(str, args)], capture_output=True, text=True, **kwargs
    )
