"""The CLI's side of `--server`: the same work sent to a running `mixtral serve`, with the standard library alone.

A server that is not there, is not mixtral, runs another version or refuses the key is one ServerError;
an error the server met doing the work comes back as a ServerReportedError with the message, hint and
exit code it would have had locally.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

from .. import __version__
from ..answer.request import AnswerEnd, AnswerRequest
from ..answer.tool_calls import ToolCallDelta
from ..base.errors import ServerError
from .tool_calls import delta_from
from .work import COMPLETE_ROUTE, completion_body, end_from, reported

SERVER_ENV = "MIXTRAL_SERVER"
API_KEY_ENV = "MIXTRAL_API_KEY"
_TIMEOUT_S = 600  # per read: a long prompt on a slow machine may take minutes before its first token


class ServerClient:
    def __init__(self, url: str, *, api_key: str | None = None) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServerError(f"{url!r} is not a server URL.", url=url, hint="Give one like http://127.0.0.1:8080.")
        self.url = f"{parts.scheme}://{parts.netloc}"
        self._parts = parts
        self._prefix = parts.path.rstrip("/")
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None

    def check(self) -> None:
        """Raise ServerError unless a mixtral server of this version answers at the URL."""
        response = self._request("GET", "/health")
        health = self._json(response)
        version = health.get("version") if isinstance(health, dict) else None
        if version is None:
            raise ServerError(f"{self.url} is not a mixtral server.", url=self.url)
        if version != __version__:
            raise ServerError(
                f"The server at {self.url} runs mixtral {version}; this is mixtral {__version__}.",
                url=self.url,
                hint="Use the same version on both sides.",
            )

    def complete(self, request: AnswerRequest) -> Iterator[str | ToolCallDelta | AnswerEnd]:
        """What the server's answer job yields: the text chunks (and call deltas) as they come, then the
        ``AnswerEnd``."""
        self.check()
        for item in self.stream(COMPLETE_ROUTE, completion_body(request)):
            yield end_from(item) if isinstance(item, dict) else item

    def call(self, method: str, path: str, body: dict | None = None) -> Any:
        """One request's JSON answer."""
        response = self._request(method, path, body)
        self._raise_for_status(response)
        return self._json(response)

    def stream(self, path: str, body: dict) -> Iterator[str | ToolCallDelta | dict]:
        """A streamed answer of mixtral's own routes: text chunks, then what its last line says of the end."""
        response = self._request("POST", path, body)
        self._raise_for_status(response)
        try:
            for raw in response:
                line = json.loads(raw)
                if "text" in line:
                    yield line["text"]
                elif "tool_call" in line:
                    yield delta_from(line["tool_call"])
                elif "done" in line:
                    yield line["done"]
                elif "error" in line:
                    raise reported(line["error"])
        except (OSError, http.client.HTTPException) as exc:
            raise ServerError(f"The server at {self.url} stopped answering: {exc}.", url=self.url) from exc
        finally:
            response.close()

    def score(self, request_text: str, *, shape: str | None = None) -> str:
        """The scoring route's answer to a model-card request, as the server wrote it."""
        self.check()
        path = "/score" + (f"?shape={quote(shape)}" if shape else "")
        response = self._request("POST", path, request_text.encode("utf-8"))
        self._raise_for_status(response)
        return response.read().decode("utf-8")

    def _request(self, method: str, path: str, body: object = None) -> http.client.HTTPResponse:
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if isinstance(body, dict):
            body = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        kind = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
        connection = kind(self._parts.hostname, self._parts.port, timeout=_TIMEOUT_S)
        try:
            connection.request(method, self._prefix + path, body=body, headers=headers)
            return connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            raise ServerError(
                f"No mixtral server answers at {self.url} ({reason}).",
                url=self.url,
                hint=f"Start one with `mixtral serve -m MODEL`, or check --server and {SERVER_ENV}.",
            ) from exc

    def _raise_for_status(self, response: http.client.HTTPResponse) -> None:
        if response.status < 400:
            return
        if response.status == 401:
            raise ServerError(
                f"The server at {self.url} refused the API key.", url=self.url, hint=f"Set {API_KEY_ENV} to its key."
            )
        body = self._json(response)
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict) or "message" not in error:
            raise ServerError(f"The server at {self.url} answered HTTP {response.status}.", url=self.url)
        raise reported(error)

    def _json(self, response: http.client.HTTPResponse) -> object:
        try:
            return json.loads(response.read())
        except (ValueError, OSError, http.client.HTTPException) as exc:
            raise ServerError(f"{self.url} is not a mixtral server.", url=self.url) from exc
        finally:
            response.close()
