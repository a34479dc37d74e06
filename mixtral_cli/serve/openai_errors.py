"""Errors as OpenAI's API answers them: ``{"error": {"message", "type", "param", "code"}}`` and its HTTP status.

OpenAI's clients pick their exception class by the status (400 BadRequestError, 401 AuthenticationError, 404
NotFoundError, ...) and read ``code``; `--server` reads ``hint`` and ``exit_code``, which ride in the same object,
to report the error as a local run would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..base.errors import (
    ContextOverflowError,
    InvalidConversationError,
    InvalidRequestError,
    InvalidToolsError,
    MixtralError,
    ModelNotFoundError,
    OutputShapeError,
    ServerBusyError,
    ServerStoppedError,
    ToolsNotSupportedError,
)

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


@dataclass(frozen=True)
class APIError:
    """One error answer: its status, OpenAI's four fields, and mixtral's own two."""

    status: int
    message: str
    type: str = INVALID_REQUEST
    param: str | None = None
    code: str | None = None
    hint: str | None = None
    exit_code: int = 1
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": self.error_object()}

    def error_object(self) -> dict[str, Any]:
        fields = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return {**fields, "hint": self.hint, "exit_code": self.exit_code}


def api_error(exc: MixtralError) -> APIError:
    """``exc`` as OpenAI would answer it."""
    own = {"message": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}
    if isinstance(exc, ContextOverflowError):
        return APIError(400, code="context_length_exceeded", param="messages", **own)
    if isinstance(exc, InvalidRequestError):
        return APIError(400, param=exc.param, code=exc.code, **own)
    if isinstance(exc, InvalidToolsError):
        return APIError(400, param=exc.param, **own)
    if isinstance(exc, ToolsNotSupportedError):
        return APIError(400, param="tools", **own)
    if isinstance(exc, InvalidConversationError):
        return APIError(400, param="messages", **own)
    if isinstance(exc, OutputShapeError):
        return APIError(400, **own)
    if isinstance(exc, ModelNotFoundError):
        return APIError(404, param="model", code="model_not_found", **own)
    if isinstance(exc, ServerBusyError):
        headers = {"Retry-After": str(exc.retry_after)}
        return APIError(503, type=SERVER_ERROR, code="server_busy", headers=headers, **own)
    if isinstance(exc, ServerStoppedError):
        return APIError(503, type=SERVER_ERROR, code="server_stopping", **own)
    return APIError(500, type=SERVER_ERROR, **own)


def invalid_api_key() -> APIError:
    return APIError(
        401,
        "Missing or wrong API key (Authorization: Bearer KEY).",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


# The rest of the body may still be on its way: the connection cannot carry another request.
_CLOSE = {"Connection": "close"}


def body_too_large(limit: int) -> APIError:
    message = f"The request body is larger than this server accepts ({limit} bytes)."
    return APIError(413, message, code="request_too_large", headers=_CLOSE)


def body_too_slow(seconds: float) -> APIError:
    message = f"The request body stopped arriving: nothing came for {seconds:g} s."
    return APIError(408, message, code="request_timeout", headers=_CLOSE)


def unknown_route(method: str, path: str, status: int, headers: dict[str, str]) -> APIError:
    """404 (no such route) or 405 (a route without that method), worded as OpenAI words its own."""
    if status == 405:
        allowed = headers.get("allow", headers.get("Allow", ""))
        message = f"{method} is not allowed on {path}" + (f"; use {allowed}." if allowed else ".")
        return APIError(405, message, code="method_not_allowed", headers=headers)
    return APIError(status, f"Invalid URL ({method} {path}).", code="unknown_url", headers=headers)
