"""The served model: one engine on one thread of its own, the requests waiting for it in order, and keep-alive.

llama.cpp's context is not safe to share between threads, so every engine call (loading included) happens
on the engine thread. A request becomes a ``Job``: a function of the engine that yields results, run when
its turn comes. Results travel back to the asyncio side through the job's own queue; a job that is
cancelled (its client left, it waited too long, the server stops) is skipped, or stops at its next step.

The running jobs advance together: each round steps every one of them (a job that waits for the engine's
shared batch yields None), then evaluates the batch once, so every running sequence gains a token and every
prompt being read a chunk in one ``llama_decode`` (continuous batching, engine/batch.py). A cancelled job
leaves before the next evaluation: a long prompt stops within one chunk.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..base.bounds import MAX_WAIT_S
from ..base.errors import MixtralError, ServerBusyError, ServerStoppedError

if TYPE_CHECKING:
    from ..engine.model import Engine

log = logging.getLogger("mixtral.serve")
Work = Callable[["Engine"], Iterator[object]]
_POLL_S = 0.25  # how often a waiting request checks that its client is still there
# How long a job the engine has just taken waits for requests the server is still reading. Clients that send at
# once reach the engine milliseconds apart (8 took 16 ms on 2 cores), and a prompt read before the others came
# makes them wait for all of it: 21 tokens of 8x7B alone took 0.42 s there.
_GATHER_S = 0.025


class ClientGone(Exception):
    """The client closed its connection: its job is cancelled, nothing is left to answer."""


class _Started:
    pass


class _Accepted:
    pass


class _Ended:
    pass


class _Failed:
    def __init__(self, error: MixtralError) -> None:
        self.error = error


_STARTED, _ACCEPTED, _ENDED = _Started(), _Accepted(), _Ended()


class Job:
    """One request's work, and the results it sends back to the request's event loop."""

    def __init__(self, work: Work, loop: asyncio.AbstractEventLoop) -> None:
        self.work = work
        self.cancelled = threading.Event()
        self.submitted = time.monotonic()
        self.loop = loop
        self._results: collections.deque[object] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None  # set while the request waits for a result
        self._client_asked = time.monotonic()  # when the request was last asked whether its client is still there

    def send(self, item: object) -> None:
        """From any thread: the next result (or marker) for the request."""
        _send_all(self.loop, [(self, item)])

    def deliver(self, item: object) -> None:
        """On the request's event loop: ``item`` is the next result."""
        self._results.append(item)
        _wake(self._waiter)

    def cancel(self) -> None:
        self.cancelled.set()

    def fail(self, error: MixtralError) -> None:
        self.send(_Failed(error))
        self.cancel()

    async def wait_turn(self, *, timeout: float, client_gone: Callable[[], Awaitable[bool]]) -> None:
        """Until the engine takes this job and it starts (the checks it makes on the engine, a prompt longer
        than the context say, raise here, before a streamed answer's first byte); ServerBusyError after
        ``timeout`` seconds in the queue. Loading the model does not count as waiting."""
        deadline, started = time.monotonic() + timeout, False
        while True:
            left = deadline - time.monotonic()
            if left <= 0 and not started:
                self.cancel()
                raise ServerBusyError(retry_after=max(1, math.ceil(timeout / 2)))
            item = await self._next(_POLL_S if started else min(left, _POLL_S), client_gone)
            if item is _STARTED:
                started = True
            elif item is _ACCEPTED:
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
        """The next result, or None after ``timeout`` seconds without one. A future and a timer, not
        asyncio.wait_for's task of its own: this runs for every streamed token."""
        if not self._results:
            self._waiter = self.loop.create_future()
            timer = self.loop.call_later(timeout, _wake, self._waiter)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
        item = self._results.popleft() if self._results else None
        # Asked when results stop, and every _POLL_S while they flow: a request of many answers (each of
        # them chunks) must stop as soon as its client has left, not once it is done.
        now = time.monotonic()
        if item is None or now - self._client_asked >= _POLL_S:
            self._client_asked = now
            if await client_gone():
                self.cancel()
                raise ClientGone
        return item


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _send_all(loop: asyncio.AbstractEventLoop, results: list[tuple[Job, object]]) -> None:
    """From any thread: ``results`` delivered to their jobs on ``loop``, in order, in one call of the loop."""
    try:
        loop.call_soon_threadsafe(_deliver_all, results)
    except RuntimeError:  # the event loop is closed: the server is gone, and the requests with it
        for job, _ in results:
            job.cancelled.set()


def _deliver_all(results: list[tuple[Job, object]]) -> None:
    for job, item in results:
        job.deliver(item)


class Arrivals:
    """Requests the server is reading: received, not yet handed to the engine (nor answered without it). A
    client slow to send its body is counted all that time: the engine's wait for them is bounded."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    def begin(self) -> Callable[[], None]:
        """Count one more; the function returned counts it out (once, however often it is called)."""
        with self._changed:
            self._count += 1
        ended = False

        def end() -> None:
            nonlocal ended
            if not ended:
                ended = True
                with self._changed:
                    self._count -= 1
                    self._changed.notify_all()

        return end

    def settle(self, timeout: float) -> None:
        """Wait until none is being read, at most ``timeout`` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: self._count == 0, timeout)


class _Outbox:
    """A round's results, handed to each event loop in one call: on 2 cores, waking the loop once per token of
    every stream takes time from the evaluation's own threads."""

    def __init__(self) -> None:
        self._results: dict[asyncio.AbstractEventLoop, list[tuple[Job, object]]] = {}

    def put(self, job: Job, item: object) -> None:
        self._results.setdefault(job.loop, []).append((job, item))

    def send(self) -> None:
        results, self._results = self._results, {}
        for loop, each in results.items():
            _send_all(loop, each)


class ModelHost:
    """Loads the engine, runs jobs on it in the order they came, unloads it when idle.

    ``sequences`` jobs run at once, each in a KV sequence of its own, advancing together (one evaluation a
    round); the others wait in order. ``keep_alive``: seconds idle before the weights are unloaded; 0 unloads
    as soon as no job runs or waits; None never unloads.
    """

    def __init__(self, load: Callable[[], Engine], *, keep_alive: float | None, sequences: int = 1) -> None:
        self._load = load
        self._keep_alive = keep_alive
        self._sequences = sequences
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._engine: Engine | None = None
        self._running: list[_Running] = []
        self._outbox = _Outbox()  # the results of the running jobs' steps, sent once a round
        self.arrivals = Arrivals()  # the requests that will come next: counted by the server as it reads them
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # submit and stop agree on which jobs stop() must fail
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="mixtral-engine", daemon=True)
        self.loads = 0
        self.requests_run = 0  # jobs the engine took (a job cancelled while it waited is not one)
        self.evaluations = 0  # llama_decode calls: the requests that ran together shared them
        self.facts: dict = {}  # the loaded model's description (``engine_facts``); every load gives the same

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    @property
    def waiting(self) -> int:
        return self._jobs.qsize()

    @property
    def busy(self) -> bool:
        return bool(self._running)

    @property
    def slots(self) -> int:
        """Jobs that run at once: the engine's KV sequences."""
        return self._sequences

    @property
    def slots_in_use(self) -> int:
        return len(self._running)

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
        """Fail the running and waiting jobs (ServerStoppedError); the thread ends once the running ones stop."""
        with self._lock:
            self._stopping.set()
            jobs = [running.job for running in self._running]
            while True:
                try:
                    jobs.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            self._jobs.put(None)
        for job in jobs:
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
            while self._admit():
                for running in list(self._running):
                    self._step(running)
                self._outbox.send()
                self._evaluate()
                if self._keep_alive == 0 and not self._running and self._jobs.empty():
                    self._unload("keep-alive 0")
        finally:
            for running in list(self._running):
                self._finish(running)
            self._unload("stopping")

    def _admit(self) -> bool:
        """``_take_jobs``; jobs started here wait, briefly, for the requests still being read, so that prompts
        sent together are read in the same evaluations."""
        started = self.requests_run
        if not self._take_jobs():
            return False
        if self.requests_run > started and len(self._running) < self._sequences:
            self.arrivals.settle(_GATHER_S)
            return self._take_jobs()
        return True

    def _take_jobs(self) -> bool:
        """Start waiting jobs while sequences are free, waiting for one when none runs; False once stopped."""
        while len(self._running) < self._sequences:
            idle = not self._running
            try:
                job = self._jobs.get(timeout=self._idle_timeout()) if idle else self._jobs.get_nowait()
            except queue.Empty:
                if not idle:
                    return True
                self._unload("idle")
                continue
            if job is None:
                return False
            if not job.cancelled.is_set():
                self._begin(job)
        return True

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

    def _begin(self, job: Job) -> None:
        self.requests_run += 1
        job.send(_STARTED)
        try:
            seat = _Seat(self._ensure_loaded(), self._free_sequences)
            running = _Running(job, seat, job.work(seat))
        except Exception as exc:  # noqa: BLE001 - the job's error, not the server's
            job.send(_failure(exc))
            return
        job.send(_ACCEPTED)
        with self._lock:
            self._running.append(running)

    def _free_sequences(self) -> list[int]:
        taken = {running.seat.sequence for running in self._running}
        return [sequence for sequence in range(self._sequences) if sequence not in taken]

    def _step(self, running: _Running) -> None:
        """The job's next result; its end, or its error, ends it."""
        job = running.job
        if job.cancelled.is_set():
            self._finish(running)
            return
        try:
            item = next(running.results)
        except StopIteration:
            self._outbox.put(job, _ENDED)
            self._finish(running)
        except Exception as exc:  # noqa: BLE001 - the job's error, not the server's
            self._outbox.put(job, _failure(exc))
            self._finish(running)
        else:
            if item is not None:  # None: the job waits for the next evaluation
                self._outbox.put(job, item)

    def _evaluate(self) -> None:
        """One evaluation of the engine's shared batch for every running job; its failure fails them all."""
        if self._engine is None or not self._running:
            return
        try:
            if self._engine.evaluate():
                self.evaluations += 1
        except Exception as exc:  # noqa: BLE001 - every running job's error, not the server's
            for running in list(self._running):
                running.job.send(_failure(exc))
                self._finish(running)

    def _finish(self, running: _Running) -> None:
        if running.job.cancelled.is_set():
            self._report_cancelled(running.seat)
        running.results.close()  # the generation's own cleanup (its sampler) runs now, on this thread
        with self._lock:
            self._running.remove(running)

    def _report_cancelled(self, seat: _Seat) -> None:
        """A request cancelled while its prompt was read (its client gave up, the server stops) is work thrown
        away, and a sign that prompts take longer than clients wait: the log says how much of it was read."""
        sequence = seat.sequence
        read = None if sequence is None or self._engine is None else self._engine.prompt_read(sequence)
        if read is not None:
            log.warning("a request was cancelled after %s of its %s prompt tokens", f"{read[0]:,}", f"{read[1]:,}")


def _failure(exc: Exception) -> _Failed:
    """A job's error as its request sees it: an error of the server's own is logged and said in general terms."""
    if not isinstance(exc, MixtralError):
        log.exception("a request failed", exc_info=exc)
        exc = MixtralError("The server failed to answer this request; its log says why.")
    return _Failed(exc)


class _Seat:
    """The engine as one job sees it: its generations run in one KV sequence that no other running job uses.

    The sequence is chosen at the job's first generation: of the free ones, the one whose cache holds the
    longest start of its prompt, so that a conversation's next turn finds its earlier turns still there.
    """

    def __init__(self, engine: Engine, free: Callable[[], list[int]]) -> None:
        self._engine = engine
        self._free = free
        self.sequence: int | None = None

    def generate(self, prompt_ids, sampling, *, answer: bool = False):  # noqa: ANN001, ANN201 - as Engine.generate
        if self.sequence is None:
            self.sequence = self._engine.sequence_for(prompt_ids, among=self._free())
        return self._engine.generate(prompt_ids, sampling, answer=answer, sequence=self.sequence)

    def __getattr__(self, name: str) -> object:
        return getattr(self._engine, name)


@dataclass(eq=False)
class _Running:
    job: Job
    seat: _Seat
    results: Iterator[object]


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
    seconds = float(match[1]) * _UNIT_S[match[2]]
    if seconds > MAX_WAIT_S:
        raise ValueError(f"{text!r} is longer than {MAX_WAIT_S:.0f} s, the longest wait here: give -1 to never unload.")
    return seconds
