"""llama.cpp's own tools (llama-server, llama-perplexity, ...), built from the llama.cpp that llama-cpp-python
vendors by scripts/build-llama-tools.sh: where we speak llama.cpp's numbers or protocol, we compare with them."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build-llama-tools.sh"


@functools.cache
def llama_tools_bin() -> Path:
    """The folder holding the tools (the README's test command builds them first; cached, so this is quick)."""
    done = subprocess.run(["bash", str(SCRIPT)], check=True, capture_output=True, text=True)
    return Path(done.stdout.strip().splitlines()[-1])


def llama_tool(name: str) -> Path:
    """The path of one of the tools, e.g. ``llama_tool("llama-perplexity")``."""
    return llama_tools_bin() / name
