"""How long one client may take to ask the server (what it may ask: request_rules.py).

A client that sends its headers or body slowly, or not at all, would hold a connection (and a file
descriptor) forever, so both have a deadline. Once the server listens beyond loopback these, and the bound on
answers per request, are what keep one client from starving the others.
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .scheduler import ClientGone

HEADERS_TIMEOUT_S = 10.0  # from the connection (or the previous answer) to the end of a request's headers
BODY_TIMEOUT_S = 10.0  # the longest wait for the next piece of a body
KEEP_ALIVE_S = 5.0  # an idle connection between requests (uvicorn's own default, said here)


class BodyTooLarge(Exception):
    pass


class BodyTooSlow(Exception):
    pass


async def read_body(request: Request, *, limit: int) -> bytes:
    """The body, refused past ``limit`` bytes (as the header says, or as it arrives) or when its next piece
    takes longer than BODY_TIMEOUT_S; a client that leaves in the middle is ClientGone, not an error."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    pieces = request.stream().__aiter__()
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(pieces.__anext__(), BODY_TIMEOUT_S)
            except StopAsyncIteration:
                break
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
    except asyncio.TimeoutError:
        raise BodyTooSlow from None
    except ClientDisconnect:
        raise ClientGone from None
    return b"".join(chunks)


class DeadlineHTTPProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol on httptools (llhttp, in C: the pure-Python h11 costs a streamed token more than
    the 2-core machines this runs on can spare beside llama.cpp's threads), which closes a connection whose
    request headers are not complete HEADERS_TIMEOUT_S after it opened or after its previous answer (uvicorn
    itself waits forever)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._headers_deadline = self.loop.call_later(HEADERS_TIMEOUT_S, self._headers_too_slow)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._headers_deadline.cancel()
        self._headers_deadline = self.loop.call_later(HEADERS_TIMEOUT_S, self._headers_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_deadline.cancel()
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        answering = self.cycle is not None and not self.cycle.response_complete
        if not answering and not self.transport.is_closing():
            self.transport.close()
