"""One published audio track (a language/voice) and its FIFO of utterances.

Audio goes out as the engines make it, in frames of 10 to 100 ms at 48 kHz: nothing is written
to a file, no utterance is buffered whole, and nothing is sent while the track is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc

from agent.captions import CaptionSegment
from agent.engine_host import HostedUtterance
from agent.read_ahead import read_ahead
from agent.room_events import EventSender, EventType
from agent.speak_request import SpeakRequest
from api.service_metrics import WorkerMetrics
from engines.audio import LIVEKIT_SAMPLE_RATE, AudioChunk, Pcm16
from engines.errors import HiveTTSError
from engines.word_timings import WordTimeline, WordTiming

logger = logging.getLogger(__name__)

FRAME_MS = 10
FRAME_SAMPLES = LIVEKIT_SAMPLE_RATE * FRAME_MS // 1000
"""The unit audio is handed to WebRTC in (what WebRTC itself consumes)."""
MAX_FRAME_MS = 100
"""The most handed over in one call. Each ``capture_frame`` is an FFI round trip whose
completion event wakes the event loop of every room in the worker waiting on one of its own,
so 20 ms frames cost a worker with 8 rooms speaking 8 x 50 x 8 wakeups a second."""
MAX_FRAME_SAMPLES = LIVEKIT_SAMPLE_RATE * MAX_FRAME_MS // 1000
SOURCE_QUEUE_MS = 200
"""Audio handed to WebRTC ahead of playout: room for the loop to stall without a gap."""
INTERRUPT_FADE_MS = 5
"""An interrupted utterance fades out over this long from the sample being played."""
SUBSCRIPTION_WAIT_S = 3.0
"""A new track's first utterance waits this long at most for a listener's subscription (when
someone is in the room): audio sent before the subscriber's path is up is never heard."""


@dataclass
class QueuedSpeech:
    request: SpeakRequest
    utterance: HostedUtterance
    received_at: float
    """``time.perf_counter()`` when the request arrived."""
    done: asyncio.Event = field(default_factory=asyncio.Event)


class _FrameWriter:
    """Hands chunks over in whole 10 ms units, up to 100 ms a call (carrying a remainder under
    10 ms over), and remembers what went out, so an interruption can fade from the sample
    actually playing."""

    def __init__(self, source: rtc.AudioSource) -> None:
        self._source = source
        self._carry = np.zeros(0, dtype=np.int16)
        self._recent: deque[Pcm16] = deque()
        self._recent_samples = 0
        self.samples_out = 0

    async def write(self, pcm: Pcm16) -> None:
        data = np.concatenate([self._carry, pcm]) if self._carry.size else pcm
        whole = data.size - data.size % FRAME_SAMPLES
        self._carry = data[whole:].copy()
        for start in range(0, whole, MAX_FRAME_SAMPLES):
            await self.capture(data[start : min(whole, start + MAX_FRAME_SAMPLES)])

    async def finish(self) -> None:
        """Send the remainder, padded to a whole frame (utterances end on a fade)."""
        if self._carry.size:
            frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
            frame[: self._carry.size] = self._carry
            self._carry = np.zeros(0, dtype=np.int16)
            await self.capture(frame)

    async def capture(self, frame: Pcm16) -> None:
        await self._source.capture_frame(
            rtc.AudioFrame(frame.tobytes(), LIVEKIT_SAMPLE_RATE, 1, frame.size)
        )
        self.samples_out += frame.size
        self._recent.append(frame)
        self._recent_samples += frame.size
        keep = LIVEKIT_SAMPLE_RATE * (SOURCE_QUEUE_MS + 2 * MAX_FRAME_MS) // 1000
        while self._recent_samples - self._recent[0].size > keep:
            self._recent_samples -= self._recent.popleft().size

    def fade_out(self) -> Pcm16:
        """The next few ms of what is playing now, faded to zero (after the queue is cleared)."""
        queued = round(self._source.queued_duration * LIVEKIT_SAMPLE_RATE)
        recent = np.concatenate(list(self._recent)) if self._recent else np.zeros(0, np.int16)
        playing_at = max(0, recent.size - queued)
        fade = LIVEKIT_SAMPLE_RATE * INTERRUPT_FADE_MS // 1000
        tail = recent[playing_at : playing_at + fade].astype(np.float32)
        out = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        out[: tail.size] = (tail * np.linspace(1.0, 0.0, tail.size, dtype=np.float32)).astype(
            np.int16
        )
        self._carry = np.zeros(0, dtype=np.int16)
        self._recent.clear()
        self._recent_samples = 0
        return out


Progress = Callable[[str, int | None], None]
"""Told ``(request id, characters of the pieces already played)`` as each piece starts, and
``(request id, None)`` when the utterance is over (spoken, interrupted or failed)."""


def _no_progress(request_id: str, spoken: int | None) -> None:
    return None


class TrackPlayer:
    """A mono 48 kHz track and the utterances waiting to be spoken on it, in order."""

    def __init__(
        self,
        room: rtc.Room,
        name: str,
        language: str,
        voice_id: str,
        events: EventSender,
        metrics: WorkerMetrics,
        progress: Progress = _no_progress,
        *,
        timed_captions: bool = False,
    ) -> None:
        self.name = name
        self.language = language
        self.voice_id = voice_id
        self._timed_captions = timed_captions
        self._room = room
        self._events = events
        self._metrics = metrics
        self._progress = progress
        self._source = rtc.AudioSource(LIVEKIT_SAMPLE_RATE, 1, queue_size_ms=SOURCE_QUEUE_MS)
        self._track = rtc.LocalAudioTrack.create_audio_track(name, self._source)
        self._queue: deque[QueuedSpeech] = deque()
        self._wakeup = asyncio.Event()
        self._current: QueuedSpeech | None = None
        self._play_task: asyncio.Task[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._writer = _FrameWriter(self._source)
        self._publication: rtc.LocalTrackPublication | None = None
        self.track_sid = ""
        self._last_active = time.monotonic()

    async def publish(self) -> None:
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        publication = await self._room.local_participant.publish_track(self._track, options)
        self._publication = publication
        self.track_sid = publication.sid
        self._runner = asyncio.create_task(self._run(), name=f"player-{self.name}")

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._queue)

    def touch(self) -> None:
        """About to be given text: not idle, whatever the queue says yet."""
        self._last_active = time.monotonic()

    def idle_s(self) -> float:
        """Seconds since this track last spoke or was given text (0 while it is busy)."""
        return 0.0 if self.busy else time.monotonic() - self._last_active

    def enqueue(self, item: QueuedSpeech) -> None:
        self.touch()
        self._queue.append(item)
        self._wakeup.set()

    async def drop_waiting(self) -> list[QueuedSpeech]:
        """Empty the queue (the utterance playing goes on); returns what was dropped."""
        dropped = list(self._queue)
        self._queue.clear()
        for item in dropped:
            await item.utterance.aclose()
            self._progress(item.request.id, None)
            item.done.set()
        return dropped

    async def interrupt(self) -> list[QueuedSpeech]:
        """Stop the utterance playing (fading out within one frame) and empty the queue;
        returns the queued utterances dropped (the playing one reports itself)."""
        dropped = await self.drop_waiting()
        task = self._play_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return dropped

    async def idle(self) -> None:
        """Wait until everything queued has been spoken."""
        while self.busy:
            item = self._current or self._queue[-1]
            await item.done.wait()

    async def aclose(self) -> None:
        await self.interrupt()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        await self._source.aclose()

    async def _run(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            item = self._queue.popleft()
            self._current = item
            task = asyncio.create_task(self._play(item), name=f"speak-{item.request.id}")
            self._play_task = task
            try:
                # wait() never raises for the task: a CancelledError here is always the
                # runner's own (interrupt() cancels only the play task)
                await asyncio.wait({task})
            except asyncio.CancelledError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise
            finally:
                item.done.set()
                self._current = None
                self._play_task = None
                self.touch()

    async def _first_listener(self) -> None:
        """Until someone has subscribed once, wait (bounded) for them, if anyone is here."""
        publication = self._publication
        if publication is None or not self._room.remote_participants:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(publication.wait_for_subscription(), SUBSCRIPTION_WAIT_S)
        self._publication = None  # subscribed, or nobody came: never wait again

    async def _play(self, item: QueuedSpeech) -> None:
        request = item.request
        segment = CaptionSegment(
            self._room, request.id, self.track_sid, timed_json=self._timed_captions
        )
        captions: asyncio.Task[None] | None = None
        timeline = WordTimeline()
        playback: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        first = True
        outcome = "ok"
        spoken = 0
        piece_chars = 0

        def on_chunk(chunk: AudioChunk) -> None:
            # as soon as a piece's audio is made (not when it plays): its words are placed (in
            # a thread) and each is captioned as it starts being heard
            nonlocal captions
            captions = _chain(captions, lambda: _caption(segment, timeline.push(chunk), playback))

        chunks = read_ahead(item.utterance, on_chunk)
        try:
            async for chunk in chunks:
                if chunk.text:  # a new piece starts playing: the ones before it were heard
                    spoken += piece_chars
                    piece_chars = len(chunk.text)
                    self._progress(request.id, spoken)
                if first:
                    first = False
                    await self._first_listener()
                    ttfa_ms = (time.perf_counter() - item.received_at) * 1000
                    # the first frame goes out before anything else is awaited
                    await self._writer.write(chunk.pcm[:FRAME_SAMPLES])
                    playback.set_result(time.perf_counter())
                    item.utterance.record_span(
                        "tts.first_frame_published",
                        item.received_at,
                        {
                            "tts.room": self._room.name,
                            "tts.track": self.name,
                            "tts.ttfa_ms": ttfa_ms,
                        },
                    )
                    asyncio.create_task(
                        self._events.send(
                            EventType.STARTED,
                            request.id,
                            request.reply_to,
                            track=self.name,
                            ttfa_ms=round(ttfa_ms, 1),
                            engine_ttfa_ms=_rounded(item.utterance.result.ttfa_ms),
                            engine=item.utterance.result.engine,
                            voice_id=self.voice_id,
                            language=self.language,
                        )
                    )
                    self._metrics.room_speaking.labels(self._room.name).inc()
                    rest = chunk.pcm[FRAME_SAMPLES:]
                else:
                    rest = chunk.pcm
                    if self._source.queued_duration == 0:  # the listener heard a gap
                        self._metrics.underruns.labels(self._room.name).inc()
                await self._writer.write(rest)
            captions = _chain(captions, lambda: _caption(segment, timeline.finish(), playback))
            await self._writer.finish()
            await self._source.wait_for_playout()
        except asyncio.CancelledError:
            outcome = "interrupted"
            fade = self._writer.fade_out()  # taken from the queue before it is emptied
            self._source.clear_queue()
            with contextlib.suppress(Exception):
                await self._writer.capture(fade)
            raise
        except HiveTTSError as exc:
            outcome = "error"
            await self._writer.finish()
            await self._events.error(request.id, request.reply_to, exc.code, str(exc))
        except Exception as exc:
            outcome = "error"
            logger.exception("utterance %s failed", request.id)
            await self._events.error(request.id, request.reply_to, "internal_error", str(exc))
        finally:
            self._progress(request.id, None)
            if not first:
                self._metrics.room_speaking.labels(self._room.name).dec()
            await chunks.aclose()  # stops reading ahead
            await item.utterance.aclose()
            if captions is not None:
                if outcome != "ok":  # words never heard are never captioned
                    captions.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await captions
            await segment.close()
            result = item.utterance.result
            self._metrics.observe_utterance(result, outcome, time.perf_counter() - started)
            if outcome != "error":
                await self._events.send(
                    EventType.FINISHED,
                    request.id,
                    request.reply_to,
                    track=self.name,
                    interrupted=outcome == "interrupted",
                    engine=result.engine,
                    engines=result.engines,
                    voice_id=self.voice_id,
                    audio_duration_s=round(result.audio_duration_s, 3),
                    characters=result.characters,
                )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


async def _caption(
    segment: CaptionSegment, placing: Awaitable[list[WordTiming]], playback: Awaitable[float]
) -> None:
    """Caption the words ``placing`` gives, each as it starts being heard (``playback``: when
    the utterance's first audio went out)."""
    for word in await placing:
        await segment.write_word(word, await playback)


def _chain(
    previous: asyncio.Task[None] | None, step: Callable[[], Awaitable[None]]
) -> asyncio.Task[None]:
    """Run caption writes one after another without holding up the audio. ``step`` makes its
    coroutine only when its turn comes: a chain cancelled before then (an interrupt) leaves no
    coroutine that was never awaited."""

    async def run() -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        await step()

    return asyncio.create_task(run())
