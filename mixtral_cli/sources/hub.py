"""The Hugging Face Hub through huggingface_hub: file lists, checked downloads, errors users can act on.

Downloads land in the Hub cache (``HF_HOME``) and are reused from there, never copied: Mixtral files are
26-280 GB. huggingface_hub resumes interrupted files; every LFS file is checked against the Hub's sha256,
so a corrupt or cut-off file is fetched again instead of used. What was checked is remembered in
MIXTRAL_HOME/verified.json, so a file of many gigabytes is hashed once, not on every pull.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.atomic import write_state
from ..base.errors import HubError, MixtralError, OutputPathError
from ..base.paths import mixtral_home

if TYPE_CHECKING:
    from ..base.progress import Progress

# OS errors of the local disk, never of the connection.
_LOCAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # LFS files only


@dataclass(frozen=True)
class RemoteRepo:
    repo: str
    commit: str
    files: tuple[RemoteFile, ...]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(f.path for f in self.files)

    def described(self, paths: list[str]) -> list[RemoteFile]:
        by_path = {f.path: f for f in self.files}
        return [by_path[p] for p in paths]


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


@contextlib.contextmanager
def hub_errors(repo: str, revision: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into one sentence with the next step."""
    from huggingface_hub import errors

    try:
        yield
    except errors.GatedRepoError as exc:
        raise _gated(repo, logged_in=exc.response is not None and exc.response.status_code == 403) from exc
    except errors.RepositoryNotFoundError as exc:
        raise HubError(
            f"There is no Hub repo {repo}{f' at revision {revision}' if revision else ''}, or it is private.",
            hint="Check the name (or the revision); for a private repo, `hf auth login` or set HF_TOKEN.",
        ) from exc
    except errors.RevisionNotFoundError as exc:
        raise HubError(f"{repo} has no revision {revision}.", hint="Check --revision.") from exc
    except errors.HFValidationError as exc:
        # A name or revision the library refuses before asking the Hub: its message runs to several sentences.
        raise HubError(
            f"The Hub library refuses {repo!r}{f' at {revision!r}' if revision else ''} as a name.",
            hint="Check the repo id (ORG/NAME) and the revision.",
        ) from exc
    except errors.OfflineModeIsEnabled as exc:
        raise HubError("HF_HUB_OFFLINE is set, and pulling needs the Hub.", hint="Unset HF_HUB_OFFLINE.") from exc
    except errors.LocalEntryNotFoundError as exc:
        raise _unreachable(repo) from exc
    except errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "an error"
        raise HubError(f"The Hub answered {status} for {repo}.", hint="Try again later.") from exc
    except (OSError, *_transport_errors()) as exc:
        if isinstance(exc, MixtralError):
            raise
        if isinstance(exc, OSError) and exc.errno in _LOCAL_ERRNOS:
            # The Hub was reached; writing what it sent failed here.
            raise OutputPathError(
                Path(exc.filename or cache_dir()),
                exc.strerror or str(exc),
                hint="Free some space there (or set HF_HOME to a larger disk), then run the same command "
                "again to resume.",
            ) from exc
        raise _unreachable(repo, detail=str(exc)) from exc


def _gated(repo: str, *, logged_in: bool) -> HubError:
    # The Hub answers 401 without a token and 403 when the token's account has not been let in.
    page = f"{endpoint()}/{repo}"
    if logged_in:
        return HubError(
            f"{repo} is gated and the account of your token has not accepted its terms on {page}.",
            hint="Accept them there with that account (or wait until the request is granted), then pull again.",
        )
    return HubError(
        f"{repo} is gated: accept its terms on {page}, then log in.",
        hint="Log in with `hf auth login`, or set HF_TOKEN to a token of the account that accepted them.",
    )


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _unreachable(repo: str, *, detail: str | None = None) -> HubError:
    return HubError(
        f"Cannot reach the Hub at {endpoint()} to fetch {repo}{f' ({detail})' if detail else ''}.",
        hint="Check the connection or HF_ENDPOINT; run the same command again to resume.",
    )


def _transport_errors() -> tuple[type[Exception], ...]:
    """The HTTP client's connection errors: huggingface_hub uses httpx (or its fork httpx2), not OSError."""
    import importlib

    found = []
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def list_repo(repo: str, revision: str | None = None) -> RemoteRepo:
    """The repo's commit and every file with the size and sha256 the Hub reports (two requests)."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi()
    with hub_errors(repo, revision):
        commit = str(api.model_info(repo, revision=revision or "main").sha)
        tree = api.list_repo_tree(repo, revision=commit, recursive=True)
        files = tuple(
            RemoteFile(e.path, int(e.size), e.lfs.sha256 if e.lfs else None) for e in tree if isinstance(e, RepoFile)
        )
    return RemoteRepo(repo, commit, files)


def check_access(remote: RemoteRepo, path: str) -> None:
    """Ask for one file's headers: a gated repo lists its files to anyone but refuses their contents."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    with hub_errors(remote.repo):
        get_hf_file_metadata(hf_hub_url(remote.repo, path, revision=remote.commit))


def cached_file(remote: RemoteRepo, path: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(remote.repo, path, revision=remote.commit)
    return Path(found) if isinstance(found, str) else None


def download(
    remote: RemoteRepo,
    file: RemoteFile,
    *,
    progress: Progress | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> Path:
    """The file in the Hub cache, downloaded or resumed as needed, and checked against its sha256.

    A file checked once is not hashed again while it stays as it was (same size and modification time).
    """
    from huggingface_hub import hf_hub_download

    with hub_errors(remote.repo):
        path = Path(hf_hub_download(remote.repo, file.path, revision=remote.commit))
    if file.sha256 is None or _verified(path, file.sha256, progress, on_notice):
        return path
    if on_notice:
        on_notice(f"{file.path} in the Hub cache does not match the Hub's sha256: downloading it again.")
    delete_cached(path)
    with hub_errors(remote.repo):
        path = Path(hf_hub_download(remote.repo, file.path, revision=remote.commit, force_download=True))
    if not _verified(path, file.sha256, progress, on_notice):
        raise HubError(
            f"{file.path} from {remote.repo} does not match the Hub's sha256 even after a fresh download.",
            hint="Try again later; the Hub or a proxy may be serving a broken file.",
        )
    return path


def delete_cached(path: Path) -> None:
    """Delete a file and, for a Hub cache snapshot entry, the blob it links to."""
    target = path.resolve()
    path.unlink(missing_ok=True)
    if target != path:
        target.unlink(missing_ok=True)


def _verified(
    path: Path, sha256: str, progress: Progress | None, on_notice: Callable[[str], None] | None = None
) -> bool:
    blob = path.resolve()
    stat = blob.stat()
    identity = [sha256, stat.st_size, stat.st_mtime_ns]
    record = mixtral_home() / "verified.json"
    try:
        checked = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        checked = {}
    if not isinstance(checked, dict):
        checked = {}  # another program's file, or garbled: the checks are redone and the file rewritten
    if checked.get(str(blob)) == identity:
        return True
    if progress:
        progress.stage(f"Checking {path.name}", stat.st_size)
    if sha256_of(blob, on_progress=progress.advance if progress else None) != sha256:
        return False
    checked = {name: entry for name, entry in checked.items() if Path(name).exists()}
    checked[str(blob)] = identity
    text = json.dumps(checked, indent=1) + "\n"
    write_state(record, text, what="The checks of downloaded files' sha256", on_notice=on_notice)
    return True


def sha256_of(path: Path, *, on_progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 2**20):
            digest.update(chunk)
            if on_progress:
                on_progress(len(chunk))
    return digest.hexdigest()
