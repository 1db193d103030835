"""Text in, streamed speech out: the pipeline every front end (CLI, API, agent) uses.

``SpeechSynthesizer.synthesize(request)`` validates the request at once (so a caller can answer
with a 4xx before any audio), then returns an ``Utterance``: an async iterator of ``AudioChunk``
at the requested rate. Behind it the text is cut into pieces (short first), each piece is
synthesized by the first engine of the router's plan, trimmed, faded and spaced by the pause its
boundary calls for, resampled and handed over while the next piece is synthesized.

When an engine fails, the next one in the plan takes over at the piece that failed; no piece is
spoken twice and none is lost. The utterance's result names every engine that spoke.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
from livekit.agents import APIError, tts
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode

from .audio import (
    LIVEKIT_SAMPLE_RATE,
    SUPPORTED_OUTPUT_RATES,
    AudioChunk,
    FloatAudio,
    JoinPolicy,
    Pcm16,
    PieceStreamer,
    float_to_pcm16,
    pause,
    pcm16_to_float,
    resample,
    shape_piece,
)
from .backend import EngineBackend
from .config import ServiceConfig
from .deadline_executor import PieceDue, piece_due
from .engine_registry import engine_names, engine_specs, find_engine
from .errors import (
    EmptyTextError,
    EngineError,
    EngineUnavailableError,
    InvalidOptionError,
    TextTooLongError,
    UnknownEngineError,
)
from .local_tts import LocalTTS
from .names import QualityTier, SelectionStrategy, primary_language
from .normalization import NormalizedText, SpeechNormalizer, normalizer_for
from .registry import EngineRegistry
from .router import Candidate, EngineRouter, ResolvedVoice
from .segmenter import Boundary, TextPiece, segment_text
from .ssml import is_ssml, parse_ssml
from .text_normalizer import prepare_text
from .text_stream import IncrementalSegmenter
from .tracing import epoch_ns, tracer
from .voice_reference import VoiceReference
from .voices import VoiceCatalog

logger = logging.getLogger(__name__)

ACLOSE_TIMEOUT_S = 10.0
"""How long closing an utterance waits for its synthesis task to stop."""
LOOKAHEAD_CHUNKS = 2
"""Chunks (a piece, or one window of a piece streamed within the model) synthesized ahead of
the consumer; a slow reader holds synthesis back."""
SPEED_RANGE = (0.5, 2.0)


@dataclass(frozen=True)
class SynthesisRequest:
    text: str
    voice_id: str | None = None
    language: str | None = None
    engine: str | None = None
    quality: str | None = None
    strategy: str | None = None
    speed: float = 1.0
    sample_rate: int = LIVEKIT_SAMPLE_RATE
    voice_reference: VoiceReference | None = None
    """Speak in this recording's voice (an engine that clones; see ``decode_voice_reference``)."""
    received_s: float | None = None
    """When the request arrived (``time.perf_counter``), if before it is prepared: its trace
    starts there."""
    normalize: bool = True
    """Speak numbers, dates, money, abbreviations... as words in the voice's language
    (``engines.normalization``); False: only the Unicode clean-up."""


SSML_MARKUP_FACTOR = 4
"""An SSML document may be this many times ``limits.max_text_chars`` long, markup included;
each segment's text is held to the limit itself."""


@dataclass(frozen=True)
class PreparedRequest:
    text: str
    voice: ResolvedVoice
    plan: list[Candidate]
    pieces: list[TextPiece]
    speed: float
    sample_rate: int
    received_s: float = field(default_factory=time.perf_counter)
    """When the request was received (``time.perf_counter``): its trace starts there."""
    routed_s: float = field(default_factory=time.perf_counter)
    """When it was validated and its engines planned."""
    normalizer: SpeechNormalizer | None = None
    """The voice language's normalizer, None when the request turned it off or the language
    has none; streamed text goes through it as it arrives."""


@dataclass
class UtteranceResult:
    voice_id: str
    language: str
    engines: list[str] = field(default_factory=list)
    """Every engine that spoke, in order; more than one after a mid-utterance fallback."""
    fallbacks: list[dict[str, str]] = field(default_factory=list)
    ttfa_ms: float | None = None
    audio_duration_s: float = 0.0
    characters: int = 0
    pieces: int = 0
    chunks: int = 0
    """Audio chunks handed over: a piece streamed in windows is several."""
    synthesis_s: float = 0.0

    @property
    def engine(self) -> str | None:
        return self.engines[0] if self.engines else None

    def to_dict(self) -> dict[str, object]:
        return {
            "engine": self.engine,
            "engines": self.engines,
            "voice_id": self.voice_id,
            "language": self.language,
            "ttfa_ms": None if self.ttfa_ms is None else round(self.ttfa_ms, 1),
            "audio_duration_s": round(self.audio_duration_s, 3),
            "characters": self.characters,
            "pieces": self.pieces,
            "chunks": self.chunks,
            "fallbacks": self.fallbacks,
        }


@dataclass(frozen=True)
class SegmentPiece(TextPiece):
    """A piece of one SSML segment, spoken with that segment's plan, language and rate."""

    segment: PreparedRequest | None = None
    pause_before_s: float = 0.0
    """An SSML break before the piece."""


_E = TypeVar("_E", QualityTier, SelectionStrategy)


def _parse_enum(kind: type[_E], value: str | None, key: str) -> _E | None:
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except ValueError:
        allowed = [member.value for member in kind]
        raise InvalidOptionError(f"{key} {value!r} is not one of {', '.join(allowed)}") from None


def _parse_engine(value: str | None) -> str | None:
    """A registered engine's name (``engines.engine_registry``), None for none asked."""
    if value is None or value == "":
        return None
    spec = find_engine(value)
    if spec is None:
        raise UnknownEngineError(value, engine_names())
    return spec.name


def _normalizer(voice: ResolvedVoice) -> SpeechNormalizer | None:
    """The normalizer of the voice's language, in the conventions of its locale (es-MX
    writes $1,234.50 in pesos, es-ES 1.234,50 €)."""
    return normalizer_for(voice.language, voice.voice.locale if voice.voice else None)


class SpeechSynthesizer:
    """The engines, the voice library and the router of one process (see module doc)."""

    def __init__(
        self,
        config: ServiceConfig,
        catalog: VoiceCatalog,
        backends: Iterable[EngineBackend],
        *,
        join_policy: JoinPolicy | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.registry = EngineRegistry(backends, catalog, config.engines.health, clock)
        self.router = EngineRouter(config.engines, catalog, self.registry)
        self.join_policy = join_policy or JoinPolicy()
        self.tracer = tracer()
        """Where utterances' spans go (``engines.tracing``); a no-op unless tracing is on."""
        self.active_utterances = 0

    async def start(self, *, warm_up: bool = True) -> None:
        await self.registry.start(warm_up=warm_up)

    async def aclose(self) -> None:
        await self.registry.aclose()

    def prepare(self, request: SynthesisRequest, *, whole_text: bool = True) -> PreparedRequest:
        """Validate ``request`` and plan it; raises a ``RequestError`` or 503 error at once.

        With ``whole_text=False`` the text is left for a ``TextStream`` to cut as it arrives."""
        received = time.perf_counter() if request.received_s is None else request.received_s
        engine = _parse_engine(request.engine)
        quality = _parse_enum(QualityTier, request.quality, "quality")
        strategy = _parse_enum(SelectionStrategy, request.strategy, "strategy")
        low, high = SPEED_RANGE
        if not low <= request.speed <= high:
            raise InvalidOptionError(f"speed {request.speed} is outside {low}..{high}")
        if request.sample_rate not in SUPPORTED_OUTPUT_RATES:
            raise InvalidOptionError(
                f"sample_rate {request.sample_rate} is not one of "
                f"{', '.join(map(str, SUPPORTED_OUTPUT_RATES))}"
            )
        text = (
            prepare_text(request.text, max_chars=self.config.limits.max_text_chars)
            if whole_text
            else ""
        )
        reference = request.voice_reference
        if reference is not None:
            voice = self.router.resolve_clone(request.voice_id, request.language, reference)
            plan = self.router.plan_clone(voice, reference, engine=engine)
        else:
            voice = self.router.resolve_voice(request.voice_id, request.language)
            plan = self.router.plan(voice, engine=engine, quality=quality, strategy=strategy)
        normalizer = _normalizer(voice) if request.normalize else None
        spoken = normalizer.normalize(text) if normalizer else NormalizedText.unchanged(text)
        pieces = [
            p
            for p in segment_text(spoken.text, voice.language, keep_together=spoken.keep_together)
            if any(c.isalnum() for c in p.text)
        ]
        return PreparedRequest(
            text,
            voice,
            plan,
            pieces,
            request.speed,
            request.sample_rate,
            received_s=received,
            normalizer=normalizer,
        )

    def synthesize(self, request: SynthesisRequest) -> Utterance:
        if is_ssml(request.text):
            return self._synthesize_ssml(request)
        return Utterance(self, self.prepare(request))

    def _synthesize_ssml(self, request: SynthesisRequest) -> Utterance:
        """An SSML document: each segment planned for its own language and rate (a voice of
        the segment's language when it differs from the request's voice), spoken in order as
        one utterance. Invalid SSML or a segment that cannot be spoken is refused at once."""
        limit = self.config.limits.max_text_chars * SSML_MARKUP_FACTOR
        if len(request.text) > limit:
            raise TextTooLongError(len(request.text), limit)
        base = self.router.resolve_voice(request.voice_id, request.language)
        low, high = SPEED_RANGE
        segments: list[PreparedRequest] = []
        pieces: list[TextPiece] = []
        for segment in parse_ssml(request.text, base.language):
            language = segment.language or request.language
            same = language is None or primary_language(language) == primary_language(base.language)
            prepared = self.prepare(
                replace(
                    request,
                    text=segment.text,
                    language=language,
                    voice_id=request.voice_id if same else None,
                    speed=min(high, max(low, request.speed * segment.rate)),
                )
            )
            segments.append(prepared)
            pieces += [
                SegmentPiece(p.text, p.boundary, p.start, p.end, prepared, segment.pause_before_s)
                if index == 0
                else SegmentPiece(p.text, p.boundary, p.start, p.end, prepared)
                for index, p in enumerate(prepared.pieces)
            ]
        whole = replace(
            segments[0],
            text=" ".join(s.text for s in segments),
            pieces=pieces,
            plan=segments[0].plan,
        )
        return Utterance(self, whole)

    def open_text_stream(self, request: SynthesisRequest) -> TextStream:
        """Speak text pushed bit by bit (``request.text`` is the first bit, possibly empty)."""
        stream = TextStream(self, self.prepare(request, whole_text=False))
        if request.text:
            stream.push_text(request.text)
        return stream


class Utterance:
    """One request being spoken: iterate for audio, then read ``result``."""

    def __init__(
        self,
        synthesizer: SpeechSynthesizer,
        prepared: PreparedRequest,
        source: AsyncIterator[TextPiece] | None = None,
    ) -> None:
        self._synthesizer = synthesizer
        self._prepared = prepared
        self._source = source if source is not None else _pieces_of(prepared.pieces)
        self.result = UtteranceResult(
            voice_id=prepared.voice.voice_id,
            language=prepared.voice.language,
            characters=len(prepared.text),
        )
        self._started = time.perf_counter()
        self._queue: asyncio.Queue[AudioChunk | BaseException | None] = asyncio.Queue(
            LOOKAHEAD_CHUNKS
        )
        self._task: asyncio.Task[None] | None = None
        self._finished = False
        self._playback_started: float | None = None
        self._streamed_audio = False
        """Whether part of the piece being streamed (see ``_stream_piece``) went out."""
        self._span: Span = trace.INVALID_SPAN

    @property
    def prepared(self) -> PreparedRequest:
        return self._prepared

    @property
    def held_back(self) -> bool:
        """Synthesis waits for the reader (its look-ahead is full), or has ended."""
        return self._queue.full() or self._task is None or self._task.done()

    @property
    def trace_context(self) -> Context:
        """The utterance's span as a parent, for spans of those who play its audio."""
        return trace.set_span_in_context(self._span)

    def record_span(
        self, name: str, since_s: float, attributes: dict[str, str | float | int]
    ) -> None:
        """A span of the utterance's trace from ``since_s`` (``time.perf_counter``) to now:
        what its player did with the audio (``tts.first_frame_published``)."""
        span = self._synthesizer.tracer.start_span(
            name, context=self.trace_context, start_time=epoch_ns(since_s), attributes=attributes
        )
        span.end()

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[AudioChunk]:
        if self._task is None:
            self._synthesizer.active_utterances += 1
            self._task = asyncio.create_task(self._produce(), name="utterance")
        try:
            while True:
                item = await self._queue.get()
                if item is None:
                    self._finished = True
                    return
                if isinstance(item, BaseException):
                    self._finished = True
                    raise item
                yield item
        finally:
            await self.aclose()

    async def collect(self) -> AudioChunk:
        """All the audio at once (for files and batch replies)."""
        chunks = [chunk.pcm async for chunk in self]
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return AudioChunk(pcm, self._prepared.sample_rate)

    async def aclose(self) -> None:
        """Stop synthesis (the current piece's thread stops at its next step)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._synthesizer.active_utterances -= 1
        if not task.done():
            task.cancel()
        # bounded: a task that swallowed its cancel must not hold its caller (and the
        # caller's connection) forever
        done, _ = await asyncio.wait({task}, timeout=ACLOSE_TIMEOUT_S)
        if not done:
            logger.error(
                "an utterance did not stop within %.0f s of being closed", ACLOSE_TIMEOUT_S
            )
        elif not task.cancelled() and task.exception() is not None:
            logger.debug("utterance ended with %r while closed", task.exception())

    async def __aenter__(self) -> Utterance:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _produce(self) -> None:
        prepared = self._prepared
        span_tracer = self._synthesizer.tracer
        received = epoch_ns(prepared.received_s)
        self._span = span = span_tracer.start_span(
            "tts.utterance",
            start_time=received,
            attributes={
                "tts.voice_id": prepared.voice.voice_id,
                "tts.language": prepared.voice.language,
                "tts.characters": len(prepared.text),
                "tts.streamed_text": prepared.text == "",
            },
        )
        route = span_tracer.start_span(
            "tts.route",
            context=self.trace_context,
            start_time=received,
            attributes={
                "tts.plan": [str(candidate.engine) for candidate in prepared.plan],
                "tts.pieces": len(prepared.pieces),
            },
        )
        route.end(end_time=epoch_ns(prepared.routed_s))
        outcome = "ok"
        try:
            await self._speak_pieces()
        except asyncio.CancelledError:
            outcome = "interrupted"
            raise
        except BaseException as exc:
            outcome = "error"
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            await self._queue.put(exc)
        else:
            await self._queue.put(None)
        finally:
            result = self.result
            span.set_attributes(
                {
                    "tts.outcome": outcome,
                    "tts.engines": result.engines,
                    "tts.fallbacks": len(result.fallbacks),
                    "tts.pieces": result.pieces,
                    "tts.audio_s": round(result.audio_duration_s, 3),
                    "tts.characters": result.characters,
                }
            )
            span.end()

    def _piece_span(self, candidate: Candidate, piece: TextPiece, first: bool) -> Span:
        return self._synthesizer.tracer.start_span(
            "tts.piece",
            context=self.trace_context,
            attributes={
                "tts.engine": str(candidate.engine),
                "tts.piece.index": self.result.pieces,
                "tts.piece.characters": len(piece.text),
                "tts.piece.first": first,
            },
        )

    async def _speak_pieces(self) -> None:
        prepared = self._prepared
        synthesizer = self._synthesizer
        registry = synthesizer.registry
        policy = synthesizer.join_policy
        plan = list(prepared.plan)
        voices: dict[tuple[str, bool], tts.TTS[Any]] = {}
        after: Boundary | None = None
        async for piece in self._source:
            if self._prepared.text == "":  # streamed text is counted as it arrives
                self.result.characters += len(piece.text)
            segment = piece.segment if isinstance(piece, SegmentPiece) else None
            if segment is not None and segment is not prepared:
                # an SSML segment in another language or at another rate: its own plan
                prepared, plan, voices = segment, list(segment.plan), {}
            if isinstance(piece, SegmentPiece) and piece.pause_before_s > 0:
                await self._emit_silence(piece.pause_before_s)
                after = None
            while True:
                if not plan:
                    raise EngineUnavailableError(
                        "every engine failed for this utterance: "
                        + "; ".join(f"{f['engine']}: {f['error']}" for f in self.result.fallbacks)
                    )
                candidate = plan[0]
                piece_started = time.perf_counter()
                # until the first audio is out, time to first audio is what matters
                first = self.result.ttfa_ms is None
                piece_due(PieceDue(self._deadline(piece_started), first, len(piece.text)))
                streamed = first and candidate.backend.streams_within_piece
                self._streamed_audio = False
                piece_span = self._piece_span(candidate, piece, first)
                try:
                    key = (candidate.engine, first)
                    voice = voices.get(key)
                    if voice is None:
                        voice = candidate.create_tts(
                            language=prepared.voice.language,
                            speed=prepared.speed,
                            latency_critical=first,
                        )
                        voices[key] = voice
                    stall = self._stall_timeout(candidate)
                    # the engine's own spans (livekit-agents' tts_request) nest in the piece's
                    with trace.use_span(piece_span, end_on_exit=False):
                        if streamed:
                            await self._stream_piece(voice, piece, candidate, piece_started, stall)
                        else:
                            text = _spoken_text(piece)
                            audio = await _render_piece(voice, text, stall, str(candidate.engine))
                except (APIError, EngineError) as exc:
                    piece_span.record_exception(exc)
                    piece_span.set_status(Status(StatusCode.ERROR, str(exc)))
                    piece_span.end()
                    registry.record_failure(candidate.engine, exc)
                    self.result.fallbacks.append(
                        {
                            "engine": str(candidate.engine),
                            "error": str(exc),
                            "piece": str(self.result.pieces),
                        }
                    )
                    plan.pop(0)
                    if self._streamed_audio:  # part of it was heard: the next engine goes on
                        break  # with the next piece, so nothing is spoken twice
                    continue
                except BaseException:
                    piece_span.end()
                    raise
                break
            if streamed:
                if piece_span.is_recording():  # not ended by an engine failing mid-piece
                    piece_span.set_attribute("tts.piece.streamed", True)
                    piece_span.end()
                after = piece.boundary
                continue
            assert voice is not None
            if str(candidate.engine) not in self.result.engines:
                self.result.engines.append(str(candidate.engine))
            # trimming, spacing and resampling a whole piece is milliseconds of work: off the
            # event loop, which other sessions' audio goes through
            pcm = await asyncio.get_running_loop().run_in_executor(
                None, _finish_piece, audio, voice.sample_rate, prepared.sample_rate, after, policy
            )
            del audio  # a session waiting on a slow reader holds PCM only
            piece_span.set_attribute("tts.piece.audio_s", round(pcm.size / prepared.sample_rate, 3))
            piece_span.end()
            if pcm.size == 0:
                continue
            chunk = AudioChunk(pcm, prepared.sample_rate, piece.text, True, _word_weights_of(voice))
            await self._emit(chunk, candidate, piece_started)
            self.result.pieces += 1
            after = piece.boundary
        if self.result.ttfa_ms is None:
            raise EngineError(self.result.engine or "none", "no audio was produced")

    async def _emit_silence(self, seconds: float) -> None:
        """An SSML break: silence of its length, as audio like any other."""
        rate = self._prepared.sample_rate
        chunk = AudioChunk(np.zeros(round(seconds * rate), dtype=np.int16), rate, "")
        self.result.audio_duration_s += chunk.duration_s
        self.result.chunks += 1
        await self._queue.put(chunk)

    def _stall_timeout(self, candidate: Candidate) -> float:
        """How long the engine may give no audio before it is taken as stalled."""
        health = self._synthesizer.config.engines.health
        return health.stall_timeout_s + candidate.backend.expected_wait_s

    def _deadline(self, now: float) -> float:
        """When the listener needs the next piece: at once before the first audio, later when
        the audio sent so far has played (as if playback began with the first chunk). Engine
        pools order waiting pieces by it (``DeadlineExecutor``)."""
        if self._playback_started is None:
            return now
        return self._playback_started + self.result.audio_duration_s

    async def _emit(self, chunk: AudioChunk, candidate: Candidate, piece_started: float) -> None:
        first = self.result.ttfa_ms is None
        if first:
            self._playback_started = time.perf_counter()
            self.result.ttfa_ms = (self._playback_started - self._started) * 1000
            self._span.add_event(
                "first_audio",
                {"tts.engine": str(candidate.engine), "tts.ttfa_ms": self.result.ttfa_ms},
            )
        self._synthesizer.registry.record_success(
            candidate.engine, (time.perf_counter() - piece_started) * 1000 if first else None
        )
        self.result.audio_duration_s += chunk.duration_s
        self.result.chunks += 1
        self.result.synthesis_s = time.perf_counter() - self._started
        await self._queue.put(chunk)

    async def _stream_piece(
        self,
        voice: tts.TTS[Any],
        piece: TextPiece,
        candidate: Candidate,
        started: float,
        stall_s: float,
    ) -> None:
        """The first piece from an engine that streams within a piece: each part goes out as
        it arrives, shaped by ``PieceStreamer``. ``_streamed_audio`` tells whether any did; an
        engine error is raised either way (after a fade-out of what was heard)."""
        rate = self._prepared.sample_rate
        streamer = PieceStreamer(voice.sample_rate, rate, self._synthesizer.join_policy)
        caption = piece.text

        async def send(audio: FloatAudio, last: bool = False) -> None:
            nonlocal caption
            if audio.size == 0:
                return
            if str(candidate.engine) not in self.result.engines:
                self.result.engines.append(str(candidate.engine))
            weights = _word_weights_of(voice) if last else None
            chunk = AudioChunk(float_to_pcm16(audio), rate, caption, last, weights)
            await self._emit(chunk, candidate, started)
            if caption:
                self.result.pieces += 1
            caption, self._streamed_audio = "", True

        try:
            async with voice.synthesize(_spoken_text(piece)) as stream:
                async for event in _within(stream, stall_s, str(candidate.engine)):
                    block = pcm16_to_float(np.frombuffer(event.frame.data, dtype=np.int16))
                    await send(streamer.push(block))
        except (APIError, EngineError):
            if self._streamed_audio:
                await send(streamer.finish(), last=True)  # it ends with a fade, not a click
            raise
        await send(streamer.finish(), last=True)


def _word_weights_of(voice: tts.TTS[Any]) -> tuple[float, ...] | None:
    """What the engine measured of the words of the piece it last rendered, if anything."""
    weights = voice.word_weights if isinstance(voice, LocalTTS) else None
    return tuple(weights) if weights else None


def _finish_piece(
    audio: FloatAudio, rate: int, out_rate: int, after: Boundary | None, policy: JoinPolicy
) -> Pcm16:
    """A piece's audio trimmed, faded, after the pause its predecessor's boundary calls for,
    at the output rate (empty when the piece was silent)."""
    shaped = shape_piece(audio, rate, policy)
    if shaped.size == 0:
        return np.zeros(0, dtype=np.int16)
    joined = np.concatenate([pause(after, rate, policy), shaped])
    return float_to_pcm16(resample(joined, rate, out_rate))


async def _pieces_of(pieces: list[TextPiece]) -> AsyncIterator[TextPiece]:
    for piece in pieces:
        yield piece


class TextStream:
    """An utterance whose text arrives in bits: ``push_text()`` then ``end_input()``.

    Complete pieces are spoken while more text is still coming (see ``text_stream``)."""

    def __init__(self, synthesizer: SpeechSynthesizer, prepared: PreparedRequest) -> None:
        self._segmenter = IncrementalSegmenter(
            prepared.voice.language, synthesizer.config.limits.max_text_chars, prepared.normalizer
        )
        self._pieces: asyncio.Queue[TextPiece | None] = asyncio.Queue()
        self._ended = False
        self.utterance = Utterance(synthesizer, prepared, source=self._drain())

    @property
    def ended(self) -> bool:
        return self._ended

    def push_text(self, text: str) -> None:
        if self._ended:
            raise InvalidOptionError("text arrived after the end of input")
        for piece in self._segmenter.push(text):
            self._pieces.put_nowait(piece)

    def end_input(self) -> None:
        if self._ended:
            return
        self._ended = True
        for piece in self._segmenter.flush():
            self._pieces.put_nowait(piece)
        self._pieces.put_nowait(None)

    async def _drain(self) -> AsyncIterator[TextPiece]:
        spoken = 0
        while (piece := await self._pieces.get()) is not None:
            spoken += 1
            yield piece
        if spoken == 0:
            raise EmptyTextError("the text stream ended with nothing speakable")


CJK_FIRST_CODE_POINT = 0x2E80
CONTINUATION_MARK = ","
"""Appended to a piece cut between words, so the engine gives it the rising, unfinished
intonation of a clause instead of the falling one of a sentence end. Not for Japanese or
Chinese, where the pause it adds breaks the phrase."""


def _spoken_text(piece: TextPiece) -> str:
    last = piece.text[-1:]
    if piece.boundary is Boundary.WORD and last.isalnum() and ord(last) < CJK_FIRST_CODE_POINT:
        return piece.text + CONTINUATION_MARK
    return piece.text


async def _within(
    stream: AsyncIterator[tts.SynthesizedAudio], stall_s: float, engine: str
) -> AsyncIterator[tts.SynthesizedAudio]:
    """``stream``'s events, each within ``stall_s`` of the one before (of the start, for the
    first); an engine that stalls longer is an ``EngineError`` (the caller closes the stream,
    which tells the engine's thread to stop)."""
    events = aiter(stream)
    while True:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
        # arrives as the event completes, and the utterance would go on with no one listening
        try:
            async with asyncio.timeout(stall_s):
                event = await anext(events)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise EngineError(engine, f"no audio for {stall_s:.1f} s: the engine stalled") from None
        yield event


async def _render_piece(voice: tts.TTS[Any], text: str, stall_s: float, engine: str) -> FloatAudio:
    async with voice.synthesize(text) as stream:  # closed (thread told to stop) on cancel
        frames = [event.frame async for event in _within(stream, stall_s, engine)]
    if not frames:
        return np.zeros(0, dtype=np.float32)
    pcm = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    return pcm16_to_float(pcm)


def build_backends(config: ServiceConfig, *, deterministic: bool = False) -> list[EngineBackend]:
    """Every registered engine not in ``disabled_engines``, configured (not yet loaded)."""
    disabled = set(config.disabled_engines)
    return [
        spec.build(config, deterministic=deterministic)
        for spec in engine_specs()
        if spec.name not in disabled
    ]


def create_synthesizer(
    config: ServiceConfig, *, deterministic: bool = False, voices_file: Path | None = None
) -> SpeechSynthesizer:
    catalog = VoiceCatalog.load(voices_file or config.voices_file)
    return SpeechSynthesizer(config, catalog, build_backends(config, deterministic=deterministic))
