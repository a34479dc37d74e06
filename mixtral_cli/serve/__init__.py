"""`mixtral serve`: a resident model behind HTTP (OpenAI's routes, the model cards' scoring route), and the
client that `--server` uses. The HTTP stack is the optional ``serve`` extra; the client needs only the
standard library."""

from __future__ import annotations

from collections.abc import Callable

from ..base.errors import MissingExtraError

_SERVE_EXTRA = ("starlette", "uvicorn", "anyio", "httptools")


def server_runner() -> Callable[..., None]:
    """``run_server``, or MissingExtraError when the serve extra is not installed."""
    try:
        from .server import run_server
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in _SERVE_EXTRA:
            raise MissingExtraError("serve", "serve") from exc
        raise
    return run_server
