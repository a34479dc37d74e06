"""scripts/fetch-vulkan-headers.sh, which scripts/install-llama-cpp.sh vulkan runs on Debian 12 (apt, Debian's own
mirrors: the package registry this machine reaches)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "scripts" / "fetch-vulkan-headers.sh"


def _debian() -> bool:
    release = Path("/etc/os-release")
    return shutil.which("apt-get") is not None and release.exists() and "ID=debian" in release.read_text()


@pytest.mark.skipif(not _debian(), reason="fetches with apt from Debian's sources")
def test_headers_unpack_into_a_cache_folder_not_made_yet(tmp_path):
    headers = tmp_path / "fresh" / "wheel-cache" / "vulkan-headers"

    done = subprocess.run(["bash", str(SCRIPT), str(headers)], capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr
    core = (headers / "usr/include/vulkan/vulkan_core.h").read_text()
    assert "#define VK_HEADER_VERSION " in core
    assert not headers.with_name("vulkan-headers.partial").exists()
