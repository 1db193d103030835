"""``WS /ws/synthesize``: the design's streaming protocol, plus what pipelines need.

Client -> server (JSON text frames):

- ``{"text", "voice_id", "language", "engine", "stream": true, ...}``: speak this text (the
  design's request; optional ``request_id``, ``sample_rate``, ``format``, ``quality``, ``speed``).
  Requests on one connection are spoken one after another.
- ``{"type": "text", "text": "...", ...}``: incremental text; the first one opens a stream
  (with the same options as a request) and audio starts as soon as a piece is complete.
  ``{"type": "flush"}`` ends that stream's input.
- ``{"type": "cancel"}``: stop the current request at once.

Server -> client: ``{"type": "audio", "audio_chunk": base64, "sequence", "sample_rate",
"format", "request_id"}`` ... then exactly one ``{"type": "final", "is_final": true, ...}``
with the engine and voice that spoke, ``ttfa_ms``, ``audio_duration_s`` and ``characters``.
An error that ends a request is ``{"type": "error", "code", "message", "is_final": true}``.
With ``"timings": true`` in the request, each piece's audio is followed by
``{"type": "words", "request_id", "words": [{"word", "start", "end"}]}`` (seconds from the start
of the reply's audio; ``engines.word_timings``).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from engines.errors import HiveTTSError, InvalidOptionError
from engines.synthesizer import TextStream, Utterance
from engines.word_timings import WordTimeline, WordTiming

from .encoders import AudioFormat, create_encoder
from .errors import QueueFullError, retry_after, ws_error
from .playback import PlaybackTracker
from .redaction import scrubbed_dict
from .request_parsing import (
    ParsedRequest,
    parse_json_object,
    parse_synthesis,
    with_voice_reference,
)
from .services import ApiServices, encode_chunk, finish_encoding

logger = logging.getLogger(__name__)

WS_DEFAULT_FORMAT = AudioFormat.PCM
WIRE_FORMAT_NAMES = {AudioFormat.PCM: "pcm16"}


class MessageTooLargeError(HiveTTSError):
    code = "message_too_large"
    http_status = 413


class ProtocolError(HiveTTSError):
    code = "protocol_error"


@dataclass
class _Job:
    request: ParsedRequest
    utterance: Utterance
    request_id: str
    received_at: float
    text_stream: TextStream | None = None
    cancelled: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    answered: bool = False
    """Its ``is_final`` message went out."""


class WebSocketSession:
    def __init__(self, ws: web.WebSocketResponse, services: ApiServices, caller: str) -> None:
        self._ws = ws
        self._services = services
        self._caller = caller
        """Whom the connection's requests count against (``api.rate_limit``)."""
        self._jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self._current: _Job | None = None
        self._open_stream: _Job | None = None
        self._send_lock = asyncio.Lock()
        self._ids = itertools.count(1)

    @property
    def idle(self) -> bool:
        """Nothing being spoken, queued or streaming in."""
        return self._current is None and self._jobs.empty() and self._open_stream is None

    async def close(self) -> None:
        """The server is going away (1001)."""
        await self._ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")

    async def run(self) -> None:
        worker = asyncio.create_task(self._work(), name="ws-worker")
        self._services.sessions.add(self)
        try:
            async for message in self._ws:
                if message.type is WSMsgType.TEXT:
                    await self._on_text(message.data)
                elif message.type is WSMsgType.BINARY:
                    await self._send(
                        ws_error(
                            "binary_frame",
                            "send JSON text frames; binary frames are not part of the protocol",
                        )
                        | {"is_final": True}
                    )
                elif message.type is WSMsgType.ERROR:
                    break
        finally:
            self._services.sessions.discard(self)
            worker.cancel()
            await asyncio.wait({worker})
            for job in self._pending_jobs():
                await job.utterance.aclose()

    def _pending_jobs(self) -> list[_Job]:
        jobs = [self._current] if self._current else []
        while not self._jobs.empty():
            jobs.append(self._jobs.get_nowait())
        return jobs

    async def _send(self, message: dict[str, Any]) -> bool:
        if self._ws.closed:
            return False
        async with self._send_lock:
            try:
                await self._ws.send_json(message)
            except (ConnectionResetError, RuntimeError):
                return False
        return True

    async def _on_text(self, data: str) -> None:
        request_id: str | None = None
        try:
            if len(data.encode()) > self._services.settings.max_ws_message_bytes:
                raise MessageTooLargeError(
                    f"message is larger than {self._services.settings.max_ws_message_bytes} bytes"
                )
            message = parse_json_object(data)
            raw_id = message.get("request_id")
            request_id = None if raw_id is None else str(raw_id)
            kind = message.get("type")
            if kind == "cancel":
                await self._cancel()
            elif kind == "text":
                await self._push_text(message)
            elif kind == "flush":
                self._flush()
            elif kind in (None, "synthesize"):
                parsed = parse_synthesis(_without_type(message))
                self._services.count_request(self._caller)
                self._check_room_in_queue()  # before a cloning reference is decoded
                parsed = await with_voice_reference(parsed)
                self._enqueue(parsed, stream=None)
            else:
                raise ProtocolError(
                    f"unknown message type {kind!r}; use a request object, 'text', 'flush' "
                    "or 'cancel'"
                )
        except HiveTTSError as exc:
            reply = ws_error(exc.code, exc.message, request_id, retry_after(exc))
            reply |= {"is_final": True}
            await self._send(reply)
            self._services.metrics.errors.labels(exc.code).inc()
        except Exception:  # one bad message never ends the connection
            logger.exception("unexpected error handling a WebSocket message")
            self._services.metrics.errors.labels("internal_error").inc()
            reply = ws_error("internal_error", "the server failed; the error was logged")
            await self._send(reply | {"is_final": True})

    def _check_room_in_queue(self) -> None:
        settings = self._services.settings
        if self._jobs.qsize() >= settings.max_queued_per_connection:
            raise QueueFullError(
                f"this connection already has {settings.max_queued_per_connection} requests "
                "waiting (its limit); send more when one has finished",
                settings.retry_after_s,
            )

    def _enqueue(self, request: ParsedRequest, stream: TextStream | None) -> _Job:
        received_at = time.perf_counter()  # validation and planning count toward first audio
        self._check_room_in_queue()
        synthesizer = self._services.synthesizer
        if stream is None:
            utterance = synthesizer.synthesize(request.synthesis)
        else:
            utterance = stream.utterance
        self._services.admit(utterance)
        job = _Job(
            request=request,
            utterance=utterance,
            request_id=request.request_id or f"req-{next(self._ids)}",
            received_at=received_at,
            text_stream=stream,
        )
        self._jobs.put_nowait(job)
        return job

    async def _push_text(self, message: dict[str, Any]) -> None:
        text = message.get("text")
        if not isinstance(text, str):
            raise InvalidOptionError("'text' must be a string")
        if self._open_stream is None or self._open_stream.cancelled:
            request = parse_synthesis(_without_type(message), require_text=False)
            self._services.count_request(self._caller)
            self._check_room_in_queue()
            request = await with_voice_reference(request)
            # the first text goes in before the stream is queued: text refused there (too
            # long) is this message's one error, with no queued stream to end it a second time
            stream = self._services.synthesizer.open_text_stream(
                dataclasses.replace(request.synthesis, text=text)
            )
            self._open_stream = self._enqueue(request, stream)
            return
        assert self._open_stream.text_stream is not None
        try:
            self._open_stream.text_stream.push_text(text)
        except HiveTTSError:
            self._open_stream.text_stream.end_input()
            self._open_stream.cancelled = True
            self._open_stream = None
            raise

    def _flush(self) -> None:
        if self._open_stream is None or self._open_stream.text_stream is None:
            raise ProtocolError("'flush' without an open text stream; send 'text' first")
        self._open_stream.text_stream.end_input()
        self._open_stream = None

    async def _cancel(self) -> None:
        stream, self._open_stream = self._open_stream, None
        if stream is not None:
            stream.cancelled = True
            if stream.text_stream is not None:
                stream.text_stream.end_input()
        job = self._current
        if job is not None:
            job.cancelled = True
            if job.task is not None:
                job.task.cancel()

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            self._current = job
            if job.cancelled:
                await job.utterance.aclose()
                await self._send_final(job, 0, None, cancelled=True)
                self._current = None
                continue
            job.task = asyncio.create_task(self._speak(job), name=f"ws-{job.request_id}")
            try:
                # a cancelled request ends its own task; only the worker's cancel propagates
                await asyncio.wait({job.task})
            except asyncio.CancelledError:
                job.task.cancel()
                raise
            if job.task.cancelled() and not job.answered:
                # cancelled before its task began to run, so it never said so itself
                await job.utterance.aclose()
                await self._send_final(job, 0, None, cancelled=True)
            self._current = None

    async def _speak(self, job: _Job) -> None:
        request = job.request
        encoder = create_encoder(request.audio_format, request.synthesis.sample_rate)
        fmt = WIRE_FORMAT_NAMES.get(request.audio_format, request.audio_format.value)
        tracker = PlaybackTracker()
        sequence = 0
        first_sent_ms: float | None = None
        held: list[bytes] = []

        async def send_audio(payload: bytes) -> None:
            nonlocal sequence, first_sent_ms
            if not payload:
                return
            await self._send(
                {
                    "type": "audio",
                    "audio_chunk": base64.b64encode(payload).decode("ascii"),
                    "sequence": sequence,
                    "sample_rate": encoder.sample_rate,
                    "format": fmt,
                    "request_id": job.request_id,
                }
            )
            if first_sent_ms is None:
                first_sent_ms = (time.perf_counter() - job.received_at) * 1000
            sequence += 1

        timeline = WordTimeline() if request.timings else None
        held_words: list[WordTiming] = []

        async def send_words(words: list[WordTiming]) -> None:
            if words:
                await self._send(
                    {
                        "type": "words",
                        "request_id": job.request_id,
                        "words": [word.to_dict() for word in words],
                    }
                )

        try:
            async for chunk in self._services.stream(job.utterance, tracker):
                payload = await encode_chunk(encoder, request.audio_format, chunk.pcm)
                words = [] if timeline is None else await timeline.push(chunk)
                if request.stream:  # a piece's words right after its audio
                    await send_audio(payload)
                    await send_words(words)
                else:
                    held.append(payload)
                    held_words.extend(words)
            tail = await finish_encoding(encoder, request.audio_format)
            last_words = [] if timeline is None else await timeline.finish()
            if request.stream:
                await send_audio(tail)
                await send_words(last_words)
            else:  # one reply: its audio, then all its words
                await send_audio(b"".join([*held, tail]))
                await send_words([*held_words, *last_words])
        except asyncio.CancelledError:
            await job.utterance.aclose()
            await self._send_final(job, sequence, first_sent_ms, cancelled=True, tracker=tracker)
            return
        except HiveTTSError as exc:
            job.answered = True
            reply = ws_error(exc.code, exc.message, job.request_id, retry_after(exc))
            await self._send(reply | {"is_final": True})
            return
        await self._send_final(job, sequence, first_sent_ms, cancelled=False, tracker=tracker)

    async def _send_final(
        self,
        job: _Job,
        chunks: int,
        first_sent_ms: float | None,
        *,
        cancelled: bool,
        tracker: PlaybackTracker | None = None,
    ) -> None:
        job.answered = True
        summary = scrubbed_dict(job.utterance.result.to_dict())
        await self._send(
            {
                "type": "final",
                "is_final": True,
                "request_id": job.request_id,
                "cancelled": cancelled,
                **summary,
                "first_chunk_sent_ms": None if first_sent_ms is None else round(first_sent_ms, 1),
                "chunks": chunks,
                "underruns": 0 if tracker is None else tracker.underruns,
            }
        )


def _without_type(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "type"}
