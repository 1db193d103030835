"""Engine pools run the most urgent piece first: a new reply's first piece goes ahead of the later
pieces of replies already playing, and each piece of an utterance is due when the audio before
it has played."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from engines.deadline_executor import DeadlineExecutor, current_deadline, piece_deadline
from engines.names import EngineName
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest

GATE_TIMEOUT_S = 10.0


@pytest.fixture
def one_worker() -> Iterator[tuple[DeadlineExecutor, threading.Event]]:
    """A one-thread pool held busy until the returned event is set."""
    executor = DeadlineExecutor(1, thread_name_prefix="test-deadline")
    gate = threading.Event()
    started = threading.Event()

    def hold() -> None:
        started.set()
        gate.wait(GATE_TIMEOUT_S)

    executor.submit(hold)
    assert started.wait(GATE_TIMEOUT_S)
    yield executor, gate
    gate.set()
    executor.shutdown(wait=True, cancel_futures=True)


def submit_due(executor: DeadlineExecutor, deadline: float | None, fn: Callable[[], Any]) -> Any:
    """Submit ``fn`` from a context whose piece deadline is ``deadline``."""
    context = contextvars.copy_context()

    def submit() -> Future[Any]:
        piece_deadline(deadline)
        return executor.submit(fn)

    return context.run(submit)


def test_waiting_work_runs_earliest_deadline_first(
    one_worker: tuple[DeadlineExecutor, threading.Event],
) -> None:
    executor, gate = one_worker
    ran: list[str] = []
    now = time.perf_counter()
    futures = [
        submit_due(executor, now + 3.0, lambda: ran.append("third piece, due in 3 s")),
        submit_due(executor, now + 1.0, lambda: ran.append("second piece, due in 1 s")),
        submit_due(executor, now, lambda: ran.append("new reply, due now")),
    ]
    assert executor.waiting == 3
    assert executor._work_queue.qsize() == 3  # what /health reports as queue_depth
    gate.set()
    for future in futures:
        future.result(GATE_TIMEOUT_S)
    assert ran == ["new reply, due now", "second piece, due in 1 s", "third piece, due in 3 s"]
    assert executor.waiting == 0


def test_work_without_a_deadline_is_due_when_submitted_and_keeps_its_order(
    one_worker: tuple[DeadlineExecutor, threading.Event],
) -> None:
    executor, gate = one_worker
    ran: list[int] = []
    later_piece = submit_due(executor, time.perf_counter() + 5.0, lambda: ran.append(99))
    futures = [executor.submit(ran.append, i) for i in range(5)]
    gate.set()
    for future in [*futures, later_piece]:
        future.result(GATE_TIMEOUT_S)
    assert ran == [0, 1, 2, 3, 4, 99]


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


async def test_the_deadline_follows_the_task_into_run_in_executor() -> None:
    """Engine streams are tasks created after the pipeline sets the deadline; the task's copy of
    the context carries it to ``submit``."""
    executor = DeadlineExecutor(1)
    loop = asyncio.get_running_loop()
    try:
        piece_deadline(123.0)
        seen = await asyncio.create_task(_deadline_seen_in(loop, executor))
        assert seen == 123.0
        piece_deadline(None)
        before = time.perf_counter()
        assert current_deadline() >= before
    finally:
        executor.shutdown()


async def _deadline_seen_in(loop: asyncio.AbstractEventLoop, executor: DeadlineExecutor) -> float:
    seen: list[float] = []
    original = executor.submit

    def spy(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        seen.append(current_deadline())
        return original(fn, *args, **kwargs)

    executor.submit = spy  # type: ignore[method-assign]
    await loop.run_in_executor(executor, time.sleep, 0)
    return seen[0]


class _RecordingExecutor(DeadlineExecutor):
    def __init__(self) -> None:
        super().__init__(1, thread_name_prefix="test-recording")
        self.deadlines: list[tuple[float, float]] = []
        """(deadline, when submitted) per job."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.deadlines.append((current_deadline(), time.perf_counter()))
        return super().submit(fn, *args, **kwargs)


async def test_each_piece_is_due_when_the_audio_before_it_has_played(
    synthesizer: SpeechSynthesizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first piece is due at once; piece n when pieces 1..n-1 have played, counted from the
    first chunk."""
    recording = _RecordingExecutor()
    piper = synthesizer.registry.backend(EngineName.PIPER)
    assert piper is not None
    monkeypatch.setattr(piper, "_executor", recording)
    text = (
        "The quarterly report is ready for review. It covers sales, hiring and the new office, "
        "and it closes with a short list of open questions for the board."
    )
    utterance = synthesizer.synthesize(SynthesisRequest(text, voice_id="en-us-male-premium"))
    requested = time.perf_counter()
    durations: list[float] = []
    first_chunk_at = 0.0
    try:
        async for chunk in utterance:
            if not durations:
                first_chunk_at = time.perf_counter()
            durations.append(chunk.duration_s)
    finally:
        recording.shutdown()
    assert utterance.result.engines == ["piper"]
    pieces = len(recording.deadlines)
    assert pieces == len(durations) >= 3
    first_deadline, first_submitted = recording.deadlines[0]
    assert requested <= first_deadline <= first_submitted  # due at once, not later
    for n in range(1, pieces):
        deadline, _ = recording.deadlines[n]
        played_before = sum(durations[:n])
        # playback is counted from the moment the first chunk was handed over
        playback_started = deadline - played_before
        assert first_submitted - 1e-6 <= playback_started <= first_chunk_at + 1e-6
    deadlines = [d for d, _ in recording.deadlines]
    assert deadlines == sorted(deadlines)
