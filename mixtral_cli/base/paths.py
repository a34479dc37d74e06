"""Where mixtral keeps its files."""

from __future__ import annotations

import errno
import os
from pathlib import Path

# A name the filesystem cannot hold (ENAMETOOLONG) names nothing, as a missing one does.
_NOTHING_THERE = {errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP}


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


def exists(path: Path) -> bool:
    """Whether ``path`` names something; unlike Path.exists, a name too long for the filesystem is no error."""
    try:
        path.stat()
    except OSError as exc:
        if exc.errno in _NOTHING_THERE:
            return False
        raise
    return True
