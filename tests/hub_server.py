"""A real Hub on loopback: olah serving local git repositories (LFS objects included) as Hub repos."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


class LocalHub:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.mirrors = root / "mirrors"
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.config = root / "olah.toml"
        self.config.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self.port}\n'
            f'repos-path = "{root / "cache"}"\nmirrors-path = ["{self.mirrors}"]\n'
            f'mirror-url = "{self.endpoint}"\nmirror-lfs-url = "{self.endpoint}"\n'
            "[accessibility]\noffline = true\n"
        )
        self.logs: list[Path] = []
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.root / f"olah-{len(self.logs)}.log"
        self.logs.append(log)
        olah = Path(sys.executable).with_name("olah-cli")
        self._process = subprocess.Popen(
            [str(olah), "-c", str(self.config)], stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=self.root
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.endpoint}/api/models/none/none/revision/main", timeout=1)
                return
            except urllib.error.HTTPError:
                return  # it answers: the repo is missing, which is what was asked
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"olah did not start: {log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def requests_for(self, path: str) -> int:
        """How many times a file was fetched (GET), across every run of the server."""
        return sum(1 for log in self.logs for line in log.read_text().splitlines() if '"GET ' in line and path in line)

    def add_repo(self, repo: str, files: dict[str, bytes]) -> None:
        """A git repo at mirrors/models/ORG/NAME on branch main; weights are stored as LFS objects."""
        folder = self.mirrors / "models" / repo
        folder.mkdir(parents=True)
        for path, data in files.items():
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.endswith((".safetensors", ".gguf", ".model")):
                sha = hashlib.sha256(data).hexdigest()
                obj = folder / ".git" / "lfs" / "objects" / sha[:2] / sha[2:4] / sha
                obj.parent.mkdir(parents=True, exist_ok=True)
                obj.write_bytes(data)
                target.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n")
            else:
                target.write_bytes(data)
        git = ["git", "-c", "user.email=test@localhost", "-c", "user.name=test"]
        subprocess.run([*git, "init", "-q", "-b", "main"], cwd=folder, check=True)
        subprocess.run([*git, "add", "-A"], cwd=folder, check=True)
        subprocess.run([*git, "commit", "-qm", "add model"], cwd=folder, check=True)


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
