"""One speech synthesizer per worker process, on its own event loop thread.

livekit-agents runs each room's job on a loop of its own (thread executor). The engines'
models, thread pools and health probes must exist once per process, so the synthesizer lives
on a dedicated loop here and every room streams from it through :class:`HostedUtterance`:
audio chunks cross from the engine loop to the room's loop through a small bounded queue, so
synthesis runs a little ahead of playback and no further.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from engines.audio import AudioChunk
from engines.config import ServiceConfig
from engines.synthesizer import (
    SpeechSynthesizer,
    SynthesisRequest,
    TextStream,
    Utterance,
    UtteranceResult,
    create_synthesizer,
)

logger = logging.getLogger(__name__)

HANDOFF_CHUNKS = 2
"""Chunks ready on the room's side beyond the one playing (each is one text piece)."""

T = TypeVar("T")

_END = object()


class EngineHost:
    """Owns the process's :class:`SpeechSynthesizer` and the loop it runs on."""

    def __init__(self, synthesizer: SpeechSynthesizer) -> None:
        self.synthesizer = synthesizer
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="engine-host", daemon=True)
        self._closed = False

    @classmethod
    def start(cls, config: ServiceConfig, *, warm_up: bool = True) -> EngineHost:
        """Load every engine (blocking; call before accepting jobs)."""
        host = cls(create_synthesizer(config))
        host._thread.start()
        host.call(host.synthesizer.start(warm_up=warm_up)).result()
        return host

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the engine loop (from any thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def queue_depth(self) -> int:
        """Pieces waiting for an engine thread, over every engine."""
        registry = self.synthesizer.registry
        return sum(backend.queue_depth for backend in registry.backends())

    def engine_threads(self) -> int:
        registry = self.synthesizer.registry
        return max(1, sum(backend.worker_threads for backend in registry.backends()))

    async def speak(self, request: SynthesisRequest) -> HostedUtterance:
        """Validate and plan ``request`` (a typed error at once if invalid); iterate the result
        to synthesize it."""
        utterance = await asyncio.wrap_future(self.call(self._prepare(request)))
        return HostedUtterance(self, utterance, None)

    async def open_text_stream(self, request: SynthesisRequest) -> HostedUtterance:
        """Speak text that arrives bit by bit: ``push_text`` then ``end_input``."""
        stream = await asyncio.wrap_future(self.call(self._open_stream(request)))
        return HostedUtterance(self, stream.utterance, stream)

    async def _prepare(self, request: SynthesisRequest) -> Utterance:
        return self.synthesizer.synthesize(request)

    async def _open_stream(self, request: SynthesisRequest) -> TextStream:
        return self.synthesizer.open_text_stream(request)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self.call(self.synthesizer.aclose()).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


class HostedUtterance:
    """An utterance synthesized on the engine loop, consumed on the caller's loop."""

    def __init__(self, host: EngineHost, utterance: Utterance, stream: TextStream | None) -> None:
        self._host = host
        self._utterance = utterance
        self._stream = stream
        self._pump: concurrent.futures.Future[None] | None = None

    @property
    def result(self) -> UtteranceResult:
        return self._utterance.result

    @property
    def voice_id(self) -> str:
        return self._utterance.prepared.voice.voice_id

    @property
    def language(self) -> str:
        return self._utterance.prepared.voice.language

    def record_span(
        self, name: str, since_s: float, attributes: dict[str, str | float | int]
    ) -> None:
        """A span of the utterance's trace (``Utterance.record_span``); thread-safe."""
        self._utterance.record_span(name, since_s, attributes)

    async def push_text(self, text: str) -> None:
        assert self._stream is not None, "not a text stream"
        await asyncio.wrap_future(self._host.call(_push(self._stream, text)))

    async def end_input(self) -> None:
        if self._stream is not None:
            await asyncio.wrap_future(self._host.call(_end(self._stream)))

    async def __aiter__(self) -> AsyncIterator[AudioChunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue(HANDOFF_CHUNKS)
        self._pump = self._host.call(_pump(self._utterance, loop, queue))
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, AudioChunk)
                yield item
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop synthesis; returns once the engine side has let go."""
        pump, self._pump = self._pump, None
        if pump is not None and not pump.done():
            pump.cancel()
        with contextlib.suppress(concurrent.futures.CancelledError, Exception):
            await asyncio.wrap_future(self._host.call(self._utterance.aclose()))
        if self._stream is not None and not self._stream.ended:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(self._host.call(_end(self._stream)))


async def _push(stream: TextStream, text: str) -> None:
    stream.push_text(text)


async def _end(stream: TextStream) -> None:
    stream.end_input()


async def _pump(
    utterance: Utterance, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object]
) -> None:
    """On the engine loop: hand each chunk to ``queue`` on ``loop``, waiting for room."""

    async def hand_over(item: object) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(queue.put(item), loop))

    try:
        async for chunk in utterance:
            await hand_over(chunk)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # handed to the room's loop, never swallowed
        await hand_over(exc)
        return
    await hand_over(_END)
