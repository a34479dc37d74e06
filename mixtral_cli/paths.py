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
