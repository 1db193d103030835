"""What every route shares: the synthesizer, limits, metrics and quality sampling."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from aiohttp import web

from engines.audio import AudioChunk, Pcm16
from engines.config import ApiSettings
from engines.errors import HiveTTSError
from engines.synthesizer import SpeechSynthesizer, Utterance

from .encoders import AudioFormat, StreamEncoder
from .errors import EngineBusyError, ServerDrainingError
from .memory_guard import MemoryGuard
from .playback import PlaybackTracker
from .quality import QualitySampler, QualityScore
from .rate_limit import RateLimiter
from .service_metrics import ServiceMetrics
from .session_limits import SessionLimiter

logger = logging.getLogger(__name__)


class Drainable(Protocol):
    """A session the server waits for when it shuts down."""

    @property
    def idle(self) -> bool: ...

    async def close(self) -> None: ...


CHEAP_FORMATS = frozenset({AudioFormat.PCM, AudioFormat.WAV})


async def encode_chunk(encoder: StreamEncoder, fmt: AudioFormat, pcm: Pcm16) -> bytes:
    """Encode off the event loop unless the format is a plain copy (PCM, WAV)."""
    if fmt in CHEAP_FORMATS:
        return encoder.encode(pcm)
    return await asyncio.to_thread(encoder.encode, pcm)


async def finish_encoding(encoder: StreamEncoder, fmt: AudioFormat) -> bytes:
    if fmt in CHEAP_FORMATS:
        return encoder.finish()
    return await asyncio.to_thread(encoder.finish)


@dataclass
class ApiServices:
    synthesizer: SpeechSynthesizer
    settings: ApiSettings
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    sampler: QualitySampler | None = None
    started_at: float = field(default_factory=time.monotonic)
    limiter: SessionLimiter = field(init=False)
    rate: RateLimiter | None = None
    """Synthesis requests per key (``api.rate_limit``), shared with the room routes."""
    memory: MemoryGuard | None = None
    """Refuses new requests while memory is short (``limits``)."""
    draining: bool = False
    """Shutting down: accepted requests finish, new ones are refused (``draining``)."""
    sessions: set[Drainable] = field(default_factory=set)
    """Open WebSocket sessions, waited for when the server drains."""
    _utterance_count: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        s = self.settings
        self.limiter = SessionLimiter(s.max_sessions_total, s.max_sessions_per_key, s.retry_after_s)

    def count_request(self, caller: str) -> None:
        """One new synthesis request of ``caller``: ``MemoryPressureError`` while memory is
        short, ``RateLimitedError`` over the caller's rate."""
        if self.draining:
            raise ServerDrainingError(
                "the server is shutting down and takes no new requests; use another instance",
                self.settings.retry_after_s,
            )
        if self.memory is not None:
            self.memory.check()
        if self.rate is not None:
            self.rate.take(caller)

    def admit(self, utterance: Utterance) -> Utterance:
        """``utterance``, unless it would wait longer than ``max_engine_wait_s`` for the engine
        that would speak it: then ``EngineBusyError`` (429 with Retry-After), so the caller can
        go elsewhere instead of hearing its reply start seconds late."""
        limit = self.settings.max_engine_wait_s
        plan = utterance.prepared.plan
        if limit is None or not plan:
            return utterance
        wait = plan[0].backend.expected_wait_s
        if wait > limit:
            raise EngineBusyError(
                f"engine {str(plan[0].engine)!r} is saturated: a new reply would wait about "
                f"{wait:.1f} s for it (limit {limit:g} s); retry later",
                max(1, math.ceil(wait - limit)),
            )
        return utterance

    def record_quality(self, engine: str, score: QualityScore) -> None:
        self.metrics.quality.labels(engine).set(score.overall)

    def _sample_due(self) -> bool:
        every = self.settings.quality_sample_every
        return self.sampler is not None and every > 0 and next(self._utterance_count) % every == 0

    async def stream(
        self, utterance: Utterance, tracker: PlaybackTracker | None = None
    ) -> AsyncIterator[AudioChunk]:
        """The utterance's chunks, with metrics, underrun tracking and quality sampling."""
        metrics = self.metrics
        tracker = tracker or PlaybackTracker()
        keep: list[np.ndarray] | None = [] if self._sample_due() else None
        started = time.perf_counter()
        outcome = "error"
        metrics.active_sessions.inc()
        try:
            async for chunk in utterance:
                engine = utterance.result.engines[-1] if utterance.result.engines else "none"
                metrics.chunk_gap.labels(engine).observe(tracker.on_chunk(chunk.duration_s))
                if keep is not None:
                    keep.append(chunk.pcm)
                yield chunk
            outcome = "ok"
        except (GeneratorExit, asyncio.CancelledError):
            outcome = "cancelled"
            raise
        except HiveTTSError as exc:
            outcome = exc.code
            metrics.errors.labels(exc.code).inc()
            raise
        finally:
            metrics.active_sessions.dec()
            metrics.observe_utterance(utterance.result, outcome, time.perf_counter() - started)
            if outcome == "ok" and keep and self.sampler is not None and utterance.result.engine:
                self.sampler.offer(
                    utterance.result.engine, np.concatenate(keep), utterance.prepared.sample_rate
                )


SERVICES = web.AppKey("services", ApiServices)
"""The app's shared services (engines, limits, metrics), set when the app starts."""
