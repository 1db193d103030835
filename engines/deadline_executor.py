"""An engine thread pool that runs the most urgent synthesis first.

A plain thread pool is first-in, first-out: the first piece of a new reply waits behind the
later pieces of replies that are already playing, although those have slack (the audio before
them is still playing), and under overload a reply that has started playing stalls mid-sentence
behind new replies. ``DeadlineExecutor`` orders waiting work by when its listener needs it,
which the pipeline states per piece with :func:`piece_due`:

- a **later piece** of a reply is due when the audio sent before it has finished playing; a gap
  in speech that has begun is the worst thing a listener can hear;
- a **first piece** is due at once, but only the start of its reply waits on it.

A free worker takes the earliest-due later piece when waiting any longer could make a later
piece late (its slack, counting the work queued before it and spread over the pool's workers,
is no more than the first piece's expected cost plus a margin); otherwise the oldest first
piece, so new replies start before the later pieces that can still wait. Costs are learned per
pool from the pieces it ran (seconds per character). Under overload this turns into late
starts instead of gaps: replies already playing go on, new ones start when there is room.

Work submitted without a due time (warm-up, voice-cloning latents) counts as a later piece due
when it was submitted.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")

DEFAULT_SECONDS_PER_CHAR = 0.01
"""Cost estimate before a pool has timed any piece (Piper on one core: ≈ 0.006–0.01)."""
COST_SMOOTHING = 0.2
"""Weight of the newest piece in the pool's running estimate of seconds per character."""
SAFETY_MARGIN_S = 0.25
"""Slack a later piece keeps beyond the cost of a first piece run before it: the cost estimate
ignores the work already running and the listener's own buffering."""


@dataclass(frozen=True)
class PieceDue:
    """When the listener needs the audio of a piece (``time.perf_counter()`` seconds)."""

    at: float
    starts_reply: bool = False
    """The first piece of an utterance (only the start of the reply waits on it)."""
    characters: int = 0
    """Size of the piece, for the cost estimate (0: unknown)."""


_due: contextvars.ContextVar[PieceDue | None] = contextvars.ContextVar("piece_due", default=None)


def piece_due(due: PieceDue | None) -> None:
    """Work submitted from this context from now on is due as ``due`` says; ``None``: due when
    submitted, as a later piece.

    Tasks copy their context when they are created, so an engine stream created after this
    call (``tts.synthesize()``) carries it into the executor it submits to."""
    _due.set(due)


def current_due() -> PieceDue:
    due = _due.get()
    return PieceDue(time.perf_counter()) if due is None else due


@dataclass(frozen=True)
class _Job:
    due: PieceDue
    order: int
    submitted: float
    future: Future[Any]
    call: Callable[[], Any]


class DeadlineExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose waiting work runs in the order the module doc describes.

    Each ``submit`` queues the job and one trampoline on the underlying pool; a worker thread
    that picks up a trampoline runs whichever job is most urgent at that moment."""

    def __init__(
        self,
        max_workers: int,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        super().__init__(max_workers, thread_name_prefix, initializer, initargs)
        self._jobs: list[_Job] = []
        self._jobs_lock = threading.Lock()
        self._running = 0
        self._order = itertools.count()
        self.seconds_per_char = DEFAULT_SECONDS_PER_CHAR

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()
        call = functools.partial(fn, *args, **kwargs)
        job = _Job(current_due(), next(self._order), time.perf_counter(), future, call)
        with self._jobs_lock:
            self._jobs.append(job)
        try:
            super().submit(self._run_most_urgent)
        except RuntimeError:  # shut down: the job never runs
            with self._jobs_lock:
                self._jobs.remove(job)
            raise
        return future

    @property
    def max_workers(self) -> int:
        return self._max_workers

    @property
    def running(self) -> int:
        """Jobs being run now."""
        return self._running

    @property
    def waiting(self) -> int:
        """Jobs not started yet (cancelled ones included until a worker discards them)."""
        with self._jobs_lock:
            return len(self._jobs)

    def expected_wait_s(self) -> float:
        """About how long a new reply's first piece would wait for a worker: the queued work
        per worker, or how long the oldest waiting first piece has waited, whichever is more
        (under overload, later pieces keep going first, which the queue alone does not show)."""
        now = time.perf_counter()
        with self._jobs_lock:
            live = [j for j in self._jobs if not j.future.cancelled()]
        queued = sum(self._cost(j) for j in live) / self._max_workers
        waited = max((now - j.submitted for j in live if j.due.starts_reply), default=0.0)
        return max(queued, waited)

    def _cost(self, job: _Job) -> float:
        return job.due.characters * self.seconds_per_char

    def _pick(self, now: float) -> _Job:
        """The job to run next (see module doc); the caller holds the lock, jobs not empty."""
        later = sorted((j for j in self._jobs if not j.due.starts_reply), key=_by_due)
        first = min((j for j in self._jobs if j.due.starts_reply), key=_by_due, default=None)
        if first is None:
            return later[0]
        if not later:
            return first
        queued = 0.0
        slack = float("inf")
        for job in later:
            queued += self._cost(job)
            slack = min(slack, job.due.at - now - queued / self._max_workers)
        return later[0] if slack <= self._cost(first) + SAFETY_MARGIN_S else first

    def _run_most_urgent(self) -> None:
        with self._jobs_lock:
            self._jobs = [j for j in self._jobs if not j.future.cancelled()]
            if not self._jobs:  # cancelled, or taken by shutdown
                return
            job = self._pick(time.perf_counter())
            self._jobs.remove(job)
        if not job.future.set_running_or_notify_cancel():
            return
        started = time.perf_counter()
        with self._jobs_lock:
            self._running += 1
        try:
            result = job.call()
        except BaseException as exc:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)
            self._learn(job, time.perf_counter() - started)
        finally:
            with self._jobs_lock:
                self._running -= 1

    def _learn(self, job: _Job, seconds: float) -> None:
        if job.due.characters > 0:
            rate = seconds / job.due.characters
            self.seconds_per_char += COST_SMOOTHING * (rate - self.seconds_per_char)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            with self._jobs_lock:
                jobs, self._jobs = self._jobs, []
            for job in jobs:
                job.future.cancel()
        super().shutdown(wait=wait, cancel_futures=cancel_futures)


def _by_due(job: _Job) -> tuple[float, int]:
    return job.due.at, job.order
