"""Engine pools run the most urgent piece first: a new reply's first piece goes ahead of the later
pieces of replies already playing, and each piece of an utterance is due when the audio before
it has played."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from engines.audio import AudioChunk
from engines.deadline_executor import (
    DEFAULT_SECONDS_PER_CHAR,
    SAFETY_MARGIN_S,
    DeadlineExecutor,
    PieceDue,
    current_due,
    piece_due,
)
from engines.names import EngineName
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest

GATE_TIMEOUT_S = 10.0


@contextlib.contextmanager
def held_pool() -> Iterator[tuple[DeadlineExecutor, threading.Event]]:
    """A one-thread pool held busy until the returned event is set."""
    executor = DeadlineExecutor(1, thread_name_prefix="test-deadline")
    gate = threading.Event()
    started = threading.Event()

    def hold() -> None:
        started.set()
        gate.wait(GATE_TIMEOUT_S)

    executor.submit(hold)
    assert started.wait(GATE_TIMEOUT_S)
    try:
        yield executor, gate
    finally:
        gate.set()
        executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def one_worker() -> Iterator[tuple[DeadlineExecutor, threading.Event]]:
    with held_pool() as pool:
        yield pool


def submit_due(executor: DeadlineExecutor, due: PieceDue | None, fn: Callable[[], Any]) -> Any:
    """Submit ``fn`` from a context whose piece is due as ``due`` says."""
    context = contextvars.copy_context()

    def submit() -> Future[Any]:
        piece_due(due)
        return executor.submit(fn)

    return context.run(submit)


def later(at: float, characters: int = 20) -> PieceDue:
    return PieceDue(at, starts_reply=False, characters=characters)


def first(at: float, characters: int = 20) -> PieceDue:
    return PieceDue(at, starts_reply=True, characters=characters)


def run_all(gate: threading.Event, futures: list[Future[Any]]) -> None:
    gate.set()
    for future in futures:
        future.result(GATE_TIMEOUT_S)


def run_order(jobs: list[tuple[str, PieceDue]]) -> list[str]:
    """Queue ``jobs`` (name, due) on a busy one-thread pool, free it: the names as they ran."""
    ran: list[str] = []
    with held_pool() as (executor, gate):
        futures = [submit_due(executor, due, functools.partial(ran.append, n)) for n, due in jobs]
        assert executor.waiting == len(jobs)
        assert executor._work_queue.qsize() == len(jobs)  # one trampoline per job
        run_all(gate, futures)
        assert executor.waiting == 0
    return ran


def test_later_pieces_run_earliest_due_first() -> None:
    now = time.perf_counter()
    jobs = [("in 3 s", later(now + 3.0)), ("in 1 s", later(now + 1.0)), ("in 2 s", later(now + 2))]
    assert run_order(jobs) == ["in 1 s", "in 2 s", "in 3 s"]


def test_a_new_reply_goes_ahead_of_later_pieces_that_can_wait() -> None:
    now = time.perf_counter()
    jobs = [
        ("playing, due in 5 s", later(now + 5.0)),
        ("new reply A", first(now)),
        ("new reply B", first(now + 0.001)),
    ]
    assert run_order(jobs) == ["new reply A", "new reply B", "playing, due in 5 s"]


def test_a_later_piece_about_to_be_late_goes_ahead_of_new_replies() -> None:
    """Under overload, speech that has begun is not interrupted for speech yet to begin; a
    piece keeps a safety margin beyond the new reply's cost (here 0.2 s)."""
    now = time.perf_counter()
    late = 0.2 + SAFETY_MARGIN_S - 0.05
    jobs = [("new reply, waiting 1 s", first(now - 1.0)), ("playing", later(now + late, 1))]
    assert run_order(jobs) == ["playing", "new reply, waiting 1 s"]


def test_slack_counts_the_later_work_queued_before_a_piece() -> None:
    """Each later piece alone could wait, but together they fill the time until the last is due
    (4 pieces of 100 characters ≈ 4 s at the default cost, the last due in 3 s)."""
    assert DeadlineExecutor(1).seconds_per_char == DEFAULT_SECONDS_PER_CHAR
    now = time.perf_counter()
    big = later(now + 3.0, characters=100)
    together = [("new reply", first(now)), *((f"p{n}", big) for n in range(4))]
    assert run_order(together)[0] == "p0"
    # one such piece alone leaves room for the new reply first
    assert run_order([("p", big), ("new reply", first(now))]) == ["new reply", "p"]


def test_work_without_a_due_time_keeps_its_order(
    one_worker: tuple[DeadlineExecutor, threading.Event],
) -> None:
    executor, gate = one_worker
    ran: list[int] = []
    later_piece = submit_due(executor, later(time.perf_counter() + 5.0), lambda: ran.append(99))
    futures = [executor.submit(ran.append, i) for i in range(5)]
    run_all(gate, [*futures, later_piece])
    assert ran == [0, 1, 2, 3, 4, 99]


def test_the_pool_learns_its_cost_per_character(
    one_worker: tuple[DeadlineExecutor, threading.Event],
) -> None:
    executor, gate = one_worker
    # a 1000-character piece that takes next to no time pulls the estimate down
    futures = [submit_due(executor, later(time.perf_counter(), characters=1000), lambda: None)]
    run_all(gate, futures)
    assert 0 < executor.seconds_per_char < DEFAULT_SECONDS_PER_CHAR


def test_results_errors_and_cancellation_reach_the_caller(
    one_worker: tuple[DeadlineExecutor, threading.Event],
) -> None:
    executor, gate = one_worker
    ran: list[str] = []

    def fail() -> None:
        raise ValueError("model exploded")

    value = executor.submit(lambda x, y: x + y, 2, y=3)
    error = executor.submit(fail)
    cancelled = executor.submit(lambda: ran.append("must not run"))
    assert cancelled.cancel()
    gate.set()
    assert value.result(GATE_TIMEOUT_S) == 5
    with pytest.raises(ValueError, match="model exploded"):
        error.result(GATE_TIMEOUT_S)
    executor.submit(lambda: None).result(GATE_TIMEOUT_S)  # the cancelled one was passed over
    assert ran == []


def test_the_pool_counts_what_it_runs_and_what_waits(
    one_worker: tuple[DeadlineExecutor, threading.Event],
) -> None:
    """What an engine reads to tell whether a piece runs alone (Piper then gives it more
    threads)."""
    executor, gate = one_worker
    assert (executor.running, executor.waiting) == (1, 0)  # the held job
    queued = executor.submit(lambda: None)
    assert (executor.running, executor.waiting) == (1, 1)
    gate.set()
    queued.result(GATE_TIMEOUT_S)
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while executor.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (executor.running, executor.waiting) == (0, 0)


def test_shutdown_cancels_waiting_work_and_refuses_more(
    one_worker: tuple[DeadlineExecutor, threading.Event],
) -> None:
    executor, gate = one_worker
    waiting = [executor.submit(time.sleep, 0) for _ in range(3)]
    executor.shutdown(wait=False, cancel_futures=True)
    assert all(future.cancelled() for future in waiting)
    assert executor.waiting == 0
    with pytest.raises(RuntimeError):
        executor.submit(time.sleep, 0)
    gate.set()


async def test_the_due_time_follows_the_task_into_run_in_executor() -> None:
    """Engine streams are tasks created after the pipeline states the due time; the task's copy
    of the context carries it to ``submit``."""
    executor = DeadlineExecutor(1)
    loop = asyncio.get_running_loop()
    try:
        piece_due(first(123.0, characters=7))
        seen = await asyncio.create_task(_due_seen_in(loop, executor))
        assert seen == first(123.0, characters=7)
        piece_due(None)
        before = time.perf_counter()
        assert current_due().at >= before and not current_due().starts_reply
    finally:
        executor.shutdown()


async def _due_seen_in(loop: asyncio.AbstractEventLoop, executor: DeadlineExecutor) -> PieceDue:
    seen: list[PieceDue] = []
    original = executor.submit

    def spy(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        seen.append(current_due())
        return original(fn, *args, **kwargs)

    executor.submit = spy  # type: ignore[method-assign]
    await loop.run_in_executor(executor, time.sleep, 0)
    return seen[0]


class _RecordingExecutor(DeadlineExecutor):
    def __init__(self) -> None:
        super().__init__(1, thread_name_prefix="test-recording")
        self.dues: list[tuple[PieceDue, float]] = []
        """(due, when submitted) per job."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.dues.append((current_due(), time.perf_counter()))
        return super().submit(fn, *args, **kwargs)


async def test_each_piece_is_due_when_the_audio_before_it_has_played(
    synthesizer: SpeechSynthesizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first piece starts the reply and is due at once; piece n is due when pieces 1..n-1
    have played, counted from the first chunk; each carries its size."""
    recording = _RecordingExecutor()
    piper = synthesizer.registry.backend(EngineName.PIPER)
    assert piper is not None
    monkeypatch.setattr(piper, "_executor", recording)
    text = (
        "The quarterly report is ready for review. It covers sales, hiring and the new office, "
        "and it closes with a short list of open questions for the board. The notes go out "
        "tomorrow."
    )
    utterance = synthesizer.synthesize(SynthesisRequest(text, voice_id="en-us-male-premium"))
    requested = time.perf_counter()
    chunks: list[AudioChunk] = []
    first_chunk_at = 0.0
    try:
        async for chunk in utterance:
            if not chunks:
                first_chunk_at = time.perf_counter()
            chunks.append(chunk)
    finally:
        recording.shutdown()
    assert utterance.result.engines == ["piper"]
    # a piece's first chunk carries its text (the first piece streams in several chunks)
    starts = [i for i, chunk in enumerate(chunks) if chunk.text]
    assert len(recording.dues) == len(starts) >= 3
    assert [due.characters for due, _ in recording.dues] == [len(chunks[i].text) for i in starts]
    assert [due.starts_reply for due, _ in recording.dues] == [True] + [False] * (len(starts) - 1)
    first_due, first_submitted = recording.dues[0]
    assert requested <= first_due.at <= first_submitted  # due at once, not later
    for n in range(1, len(starts)):
        due, _ = recording.dues[n]
        played_before = sum(c.duration_s for c in chunks[: starts[n]])
        # playback is counted from the moment the first chunk was handed over
        playback_started = due.at - played_before
        assert first_submitted - 1e-6 <= playback_started <= first_chunk_at + 1e-6
