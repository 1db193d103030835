"""Base class for engines whose model runs in this process.

A ``LocalTTS`` is a ``livekit.agents.tts.TTS``: it declares its native sample rate and pushes
audio through the output emitter as each sentence is ready. The model call itself is blocking,
so it runs in the engine's bounded thread pool and hands its audio back to the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import Any, TypeVar

from livekit.agents import APIConnectOptions, APIError, tts, utils

from .audio import FloatAudio, float_to_pcm16
from .errors import EngineError
from .segmenter import split_sentences

logger = logging.getLogger(__name__)

NO_RETRY = APIConnectOptions(max_retry=0, timeout=30.0)
"""Retries and failover live in the router, never inside an engine."""

EMITTER_FRAME_MS = 200
"""Frames as the engine hands them over; the pipeline joins them per piece anyway (20 ms
frames cost ~5 ms per second of audio), and the LiveKit track re-frames to 20 ms."""


T = TypeVar("T")


async def iterate_in_thread(
    executor: Executor, make_iterator: Callable[[threading.Event], Iterator[T]]
) -> AsyncIterator[T]:
    """Run a blocking iterator in ``executor`` and yield its items on the event loop.

    The iterator gets a ``threading.Event`` that is set when the consumer stops early, so a
    cancelled synthesis stops at its next item instead of running to the end.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
    stop = threading.Event()

    def deliver(kind: str, value: object) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop closed while the thread was finishing
            pass

    def work() -> None:
        try:
            for item in make_iterator(stop):
                if stop.is_set():
                    return
                deliver("item", item)
        except BaseException as exc:  # handed to the consumer, never swallowed
            deliver("error", exc)
        else:
            deliver("done", None)

    future = loop.run_in_executor(executor, work)
    try:
        while True:
            kind, value = await queue.get()
            if kind == "done":
                return
            if kind == "error":
                assert isinstance(value, BaseException)
                raise value
            yield value  # type: ignore[misc]
    finally:
        stop.set()
        if future.done():
            future.exception()  # already reported through the queue


class LocalTTS(tts.TTS[Any], ABC):
    """A LiveKit TTS backed by a model in this process (see module doc)."""

    def __init__(
        self,
        *,
        engine: str,
        sample_rate: int,
        executor: Executor,
        language: str,
    ) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=sample_rate,
            num_channels=1,
        )
        self._engine = engine
        self._executor = executor
        self._language = language
        self.word_weights: list[float] | None = None
        """How long each word of the text last rendered took, in the engine's own units (a
        duration predictor's frames), where the engine knows (``engines.word_timings``)."""

    @property
    def provider(self) -> str:
        return "hive-tts"

    @property
    def model(self) -> str:
        return self._engine

    @property
    def engine(self) -> str:
        return self._engine

    @property
    def executor(self) -> Executor:
        """Where this voice's syntheses run: its engine's pool."""
        return self._executor

    @property
    def language(self) -> str:
        """The language its sentences are cut in."""
        return self._language

    def render(self, text: str, stop: threading.Event | None = None) -> Iterator[FloatAudio]:
        """Blocking, in the caller's thread: ``text`` as float audio at ``sample_rate``, as it
        is made, sentence by sentence. For warming an engine up and for measuring it; a
        session's synthesis goes through ``synthesize``, which runs this on ``executor``.
        Setting ``stop`` ends it at the next block."""
        return self._render_text(text, stop if stop is not None else threading.Event())

    @abstractmethod
    def _render(self, text: str, stop: threading.Event) -> Iterator[FloatAudio]:
        """Blocking: synthesize one sentence (or less), yielding float audio as it is made."""

    def _word_weights_start(self) -> list[float] | None:
        """An empty list where this engine reports how long each word takes (``_render``
        extends it, sentence by sentence), else None."""
        return None

    def _render_text(self, text: str, stop: threading.Event) -> Iterator[FloatAudio]:
        self.word_weights = self._word_weights_start()
        for sentence in split_sentences(text, self._language):
            if stop.is_set():
                return
            yield from self._render(sentence, stop)

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = NO_RETRY
    ) -> LocalChunkedStream:
        return LocalChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class LocalChunkedStream(tts.ChunkedStream):
    def __init__(self, *, tts: LocalTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._local = tts

    def _pcm_blocks(self, stop: threading.Event) -> Iterator[bytes]:
        """In the engine's thread: synthesis and the conversion to 16-bit PCM, so the event
        loop only hands bytes on."""
        for block in self._local.render(self.input_text, stop):
            yield float_to_pcm16(block).tobytes()

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        local = self._local
        output_emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=local.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
            frame_size_ms=EMITTER_FRAME_MS,
        )
        try:
            async for pcm in iterate_in_thread(local.executor, self._pcm_blocks):
                output_emitter.push(pcm)
                # each block (a windowed engine's window) goes on at once, in frames of up to
                # 200 ms: the emitter would otherwise hold a partial frame until more came
                output_emitter.flush()
        except APIError:
            raise
        except Exception as exc:
            logger.exception("engine failed", extra={"engine": local.engine})
            raise EngineError(local.engine, f"{type(exc).__name__}: {exc}") from exc
        output_emitter.flush()
