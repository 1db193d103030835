"""An engine thread pool that runs the most urgent synthesis first.

A plain thread pool is first-in, first-out: the first piece of a new reply waits behind the
later pieces of replies that are already playing, although those have slack (the audio before
them is still playing) and the new reply's listener hears nothing until its first piece is done.
``DeadlineExecutor`` orders waiting work by a deadline instead: the moment its listener needs
the audio. The pipeline sets it per piece with :func:`piece_deadline` (the first piece of an
utterance is due at once; a later piece when the audio already sent has finished playing), and
work submitted without one (warm-up, voice cloning latents) is due when it is submitted.

When the machine cannot keep up, replies that are already playing are served before new ones
start, so overload shows as later starts rather than gaps in speech that has begun.
"""

from __future__ import annotations

import contextvars
import functools
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "piece_deadline", default=None
)


def piece_deadline(deadline: float | None) -> None:
    """Work submitted from this context from now on is due at ``deadline``
    (``time.perf_counter()`` seconds); ``None`` means due when submitted.

    Tasks copy their context when they are created, so an engine stream created after this
    call (``tts.synthesize()``) carries the deadline into the executor it submits to."""
    _deadline.set(deadline)


def current_deadline() -> float:
    deadline = _deadline.get()
    return time.perf_counter() if deadline is None else deadline


@dataclass(order=True)
class _Job:
    deadline: float
    order: int
    future: Future[Any] = field(compare=False)
    call: Callable[[], Any] = field(compare=False)


class DeadlineExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose waiting work runs earliest deadline first (see module
    doc); ties and work without a deadline keep their submission order.

    Each ``submit`` queues the job and one trampoline on the underlying pool; a worker thread
    that picks up a trampoline runs whichever job is most urgent at that moment. The pool's own
    queue therefore still counts the jobs waiting (``_work_queue.qsize()``)."""

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
        self._order = itertools.count()

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()
        job = _Job(
            current_deadline(), next(self._order), future, functools.partial(fn, *args, **kwargs)
        )
        with self._jobs_lock:
            heapq.heappush(self._jobs, job)
        try:
            super().submit(self._run_most_urgent)
        except RuntimeError:  # shut down: the job never runs
            with self._jobs_lock:
                self._jobs.remove(job)
                heapq.heapify(self._jobs)
            raise
        return future

    @property
    def waiting(self) -> int:
        """Jobs not started yet (cancelled ones included until a worker discards them)."""
        with self._jobs_lock:
            return len(self._jobs)

    def _run_most_urgent(self) -> None:
        with self._jobs_lock:
            if not self._jobs:  # cancelled by shutdown
                return
            job = heapq.heappop(self._jobs)
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            result = job.call()
        except BaseException as exc:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            with self._jobs_lock:
                jobs, self._jobs = self._jobs, []
            for job in jobs:
                job.future.cancel()
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
