"""A real Hub on loopback: olah serving local git repositories (LFS objects included) as Hub repos."""

from __future__ import annotations

import hashlib
import http.client
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


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


class GatedHub:
    """The Hub in front of ``upstream`` with one repo gated as huggingface.co gates it.

    Its listing stays public; its files answer 401 without a token and 403 with one whose account has
    not accepted the terms, with the ``X-Error-Code: GatedRepo`` header huggingface_hub reads.
    Everything else is passed through to ``upstream``.
    """

    def __init__(self, upstream: str, repo: str) -> None:
        self.repo = repo
        target = urlsplit(upstream)
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's names
                gate._answer(self, target.hostname, target.port)

            do_HEAD = do_POST = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> GatedHub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, request: BaseHTTPRequestHandler, host: str, port: int) -> None:
        if request.path.startswith(f"/{self.repo}/resolve/"):
            logged_in = "authorization" in {k.lower() for k in request.headers}
            message = (
                f"Access to model {self.repo} is restricted and you are not in the authorized list. "
                f"Visit https://huggingface.co/{self.repo} to ask for access."
                if logged_in
                else f"Access to model {self.repo} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in."
            )
            request.send_response(403 if logged_in else 401)
            request.send_header("X-Error-Code", "GatedRepo")
            request.send_header("X-Error-Message", message)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else None
        connection = http.client.HTTPConnection(host, port, timeout=30)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        connection.request(request.command, request.path, body=body, headers=headers)
        answer = connection.getresponse()
        data = answer.read()
        request.send_response(answer.status)
        # A HEAD answer keeps the upstream's length: it is the file's size.
        dropped = {"transfer-encoding", "connection"} | ({"content-length"} if request.command != "HEAD" else set())
        for key, value in answer.getheaders():
            if key.lower() not in dropped:
                request.send_header(key, value)
        if request.command != "HEAD":
            request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(data)
        connection.close()


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def online_env(hub) -> dict[str, str]:  # noqa: ANN001 - a LocalHub, or a proxy in front of one
    """This process's environment with the Hub at ``hub``: no offline switch, no token, no progress bars."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    return {**env, "HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
