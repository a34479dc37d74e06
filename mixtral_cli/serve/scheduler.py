"""The served model: one engine on one thread of its own, the requests waiting for it in order, and keep-alive.

llama.cpp's context is not safe to share between threads, so every engine call (loading included) happens
on the engine thread. A request becomes a ``Job``: a function of the engine that yields results, run when
its turn comes. Results travel back to the asyncio side through the job's own queue; a job that is
cancelled (its client left, it waited too long, the server stops) is skipped, or stops at its next token.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from ..errors import MixtralError, ServerBusyError, ServerStoppedError

if TYPE_CHECKING:
    from ..engine.model import Engine

log = logging.getLogger("mixtral.serve")
Work = Callable[["Engine"], Iterator[object]]
_POLL_S = 0.25  # how often a waiting request checks that its client is still there


class ClientGone(Exception):
    """The client closed its connection: its job is cancelled, nothing is left to answer."""


class _Started:
    pass


class _Ended:
    pass


class _Failed:
    def __init__(self, error: MixtralError) -> None:
        self.error = error


_STARTED, _ENDED = _Started(), _Ended()


class Job:
    """One request's work, and the results it sends back to the request's event loop."""

    def __init__(self, work: Work, loop: asyncio.AbstractEventLoop) -> None:
        self.work = work
        self.cancelled = threading.Event()
        self.submitted = time.monotonic()
        self._loop = loop
        self._results: asyncio.Queue[object] = asyncio.Queue()

    def send(self, item: object) -> None:
        """From any thread: the next result (or marker) for the request."""
        try:
            self._loop.call_soon_threadsafe(self._results.put_nowait, item)
        except RuntimeError:  # the event loop is closed: the server is gone, and the request with it
            self.cancelled.set()

    def cancel(self) -> None:
        self.cancelled.set()

    def fail(self, error: MixtralError) -> None:
        self.send(_Failed(error))
        self.cancel()

    async def wait_turn(self, *, timeout: float, client_gone: Callable[[], Awaitable[bool]]) -> None:
        """Until the engine takes this job; ServerBusyError after ``timeout`` seconds in the queue."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.cancel()
                raise ServerBusyError(retry_after=max(1, math.ceil(timeout / 2)))
            item = await self._next(min(left, _POLL_S), client_gone)
            if item is _STARTED:
                return
            if isinstance(item, _Failed):
                raise item.error

    async def results(self, client_gone: Callable[[], Awaitable[bool]]):  # noqa: ANN201 - AsyncIterator[object]
        """The work's results as they come; its error, if it fails."""
        try:
            while True:
                item = await self._next(_POLL_S, client_gone)
                if item is _ENDED:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                if item is not None:
                    yield item
        finally:
            self.cancel()  # a request that stops listening, for whatever reason, frees the engine at once

    async def _next(self, timeout: float, client_gone: Callable[[], Awaitable[bool]]) -> object | None:
        try:
            return await asyncio.wait_for(self._results.get(), timeout)
        except asyncio.TimeoutError:
            if await client_gone():
                self.cancel()
                raise ClientGone from None
            return None


class ModelHost:
    """Loads the engine, runs jobs on it one at a time in the order they came, unloads it when idle.

    ``keep_alive``: seconds idle before the weights are unloaded; 0 unloads as soon as no job waits;
    None never unloads.
    """

    def __init__(self, load: Callable[[], Engine], *, keep_alive: float | None) -> None:
        self._load = load
        self._keep_alive = keep_alive
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._engine: Engine | None = None
        self._running: Job | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # submit and stop agree on which jobs stop() must fail
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="mixtral-engine", daemon=True)
        self.loads = 0
        self.requests_run = 0  # jobs the engine took (a job cancelled while it waited is not one)
        self.facts: dict = {}  # the loaded model's description (``engine_facts``); every load gives the same

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    @property
    def waiting(self) -> int:
        return self._jobs.qsize()

    @property
    def n_ctx(self) -> int:
        return self.facts.get("n_ctx", 0)

    @property
    def busy(self) -> bool:
        return self._running is not None

    def start(self) -> None:
        """Start the engine thread and load the model; a model that cannot load raises here."""
        self._thread.start()
        self._ready.wait()
        if self._load_error is not None:
            self._thread.join()
            raise self._load_error

    def submit(self, work: Work) -> Job:
        job = Job(work, asyncio.get_running_loop())
        with self._lock:
            if self._stopping.is_set():
                raise ServerStoppedError()
            self._jobs.put(job)
        return job

    def stop(self) -> None:
        """Fail the running and waiting jobs (ServerStoppedError), and end the thread once the running one stops."""
        with self._lock:
            self._stopping.set()
            running = self._running
            pending = []
            while True:
                try:
                    pending.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            self._jobs.put(None)
        for job in (running, *pending):
            if job is not None:
                job.fail(ServerStoppedError())

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # -- the engine thread ----------------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            self._ensure_loaded()
        except BaseException as exc:  # noqa: BLE001 - handed to start(), which raises it on the main thread
            self._load_error = exc
            return
        finally:
            self._ready.set()
        try:
            while True:
                try:
                    job = self._jobs.get(timeout=self._idle_timeout())
                except queue.Empty:
                    self._unload("idle")
                    continue
                if job is None:
                    break
                if not job.cancelled.is_set():
                    self._run(job)
                if self._keep_alive == 0 and self._jobs.empty():
                    self._unload("keep-alive 0")
        finally:
            self._unload("stopping")

    def _idle_timeout(self) -> float | None:
        return self._keep_alive if self._engine is not None and self._keep_alive else None

    def _ensure_loaded(self) -> Engine:
        if self._engine is None:
            from .work import engine_facts

            self._engine = self._load()
            self.loads += 1
            self.facts = engine_facts(self._engine)
            log.info("model loaded in %.2f s", self._engine.load_s)
        return self._engine

    def _unload(self, why: str) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
            log.info("model unloaded (%s)", why)

    def _run(self, job: Job) -> None:
        with self._lock:
            self._running = job
        self.requests_run += 1
        job.send(_STARTED)
        try:
            results = job.work(self._ensure_loaded())
            try:
                for item in results:
                    if job.cancelled.is_set():
                        break
                    job.send(item)
            finally:
                results.close()  # the generation's own cleanup (its sampler) runs now, on this thread
            job.send(_ENDED)
        except MixtralError as exc:
            job.send(_Failed(exc))
        except Exception:
            log.exception("a request failed")
            job.send(_Failed(MixtralError("The server failed to answer this request; its log says why.")))
        finally:
            with self._lock:
                self._running = None


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}


def parse_keep_alive(text: str) -> float | None:
    """'5m', '30s', '1h', '90' (seconds), '0' (unload after each request) or '-1' (never: None)."""
    text = text.strip().lower()
    if text in ("-1", "never"):
        return None
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration: give e.g. 5m, 30s, 1h, 0 or -1.")
    return float(match[1]) * _UNIT_S[match[2]]
