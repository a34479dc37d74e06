"""Where mixtral keeps its files."""

from __future__ import annotations

import os
from pathlib import Path


def mixtral_home() -> Path:
    """``MIXTRAL_HOME``, else the XDG data directory."""
    if home := os.environ.get("MIXTRAL_HOME"):
        return Path(home).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "mixtral"


def worker_cache_dir() -> Path:
    """Where `mixtral worker` keeps the tensors clients sent it: the XDG cache directory."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mixtral" / "rpc"
