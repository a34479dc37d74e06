"""The Hugging Face Hub through huggingface_hub: file lists, checked downloads, errors users can act on.

Downloads land in the Hub cache (``HF_HOME``) and are reused from there, never copied: Mixtral files are
26-280 GB. huggingface_hub resumes interrupted files; every LFS file is checked against the Hub's sha256,
so a corrupt or cut-off file is fetched again instead of used.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import HubError, MixtralError, OutputPathError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# OS errors of the local disk, never of the connection.
_LOCAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # LFS files only: the Hub's ETag is their sha256


@dataclass(frozen=True)
class RemoteRepo:
    repo: str
    commit: str
    files: tuple[str, ...]


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
        raise HubError(
            f"{repo} is gated: its terms must be accepted on {endpoint()}/{repo} first.",
            hint="Accept them with your account, then `hf auth login` or set HF_TOKEN.",
        ) from exc
    except errors.RepositoryNotFoundError as exc:
        raise HubError(
            f"There is no Hub repo {repo}{f' at revision {revision}' if revision else ''}, or it is private.",
            hint="Check the name (or the revision); for a private repo, `hf auth login` or set HF_TOKEN.",
        ) from exc
    except errors.RevisionNotFoundError as exc:
        raise HubError(f"{repo} has no revision {revision}.", hint="Check --revision.") from exc
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
    from huggingface_hub import HfApi

    with hub_errors(repo, revision):
        info = HfApi().model_info(repo, revision=revision or "main")
    return RemoteRepo(repo, str(info.sha), tuple(s.rfilename for s in info.siblings or ()))


def describe_files(remote: RemoteRepo, paths: list[str]) -> list[RemoteFile]:
    """Size and sha256 of each file, from the Hub's headers."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    described = []
    with hub_errors(remote.repo):
        for path in paths:
            meta = get_hf_file_metadata(hf_hub_url(remote.repo, path, revision=remote.commit))
            etag = (meta.etag or "").strip('"')
            described.append(RemoteFile(path, int(meta.size or 0), etag if _SHA256.match(etag) else None))
    return described


def cached_file(remote: RemoteRepo, path: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(remote.repo, path, revision=remote.commit)
    return Path(found) if isinstance(found, str) else None


def download(remote: RemoteRepo, file: RemoteFile, *, on_notice: Callable[[str], None] | None = None) -> Path:
    """The file in the Hub cache, downloaded or resumed as needed, and checked against its sha256."""
    from huggingface_hub import hf_hub_download

    with hub_errors(remote.repo):
        path = Path(hf_hub_download(remote.repo, file.path, revision=remote.commit))
        if file.sha256 is None or sha256_of(path) == file.sha256:
            return path
        if on_notice:
            on_notice(f"{file.path} in the Hub cache does not match the Hub's sha256: downloading it again.")
        blob = path.resolve()
        path.unlink()
        blob.unlink(missing_ok=True)
        path = Path(hf_hub_download(remote.repo, file.path, revision=remote.commit, force_download=True))
    if sha256_of(path) != file.sha256:
        raise HubError(
            f"{file.path} from {remote.repo} does not match the Hub's sha256 even after a fresh download.",
            hint="Try again later; the Hub or a proxy may be serving a broken file.",
        )
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 2**20):
            digest.update(chunk)
    return digest.hexdigest()
