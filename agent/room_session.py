"""What the agent does in one room: take ``tts.speak`` text, speak it on per-language tracks.

Text arrives as data packets (a whole request each) or as text streams on the same topic
(options in the stream's attributes, text as it is written: speech starts before the stream
closes). Every request is answered on ``tts.events``; bad input gets an ``error`` event and
never stops the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from livekit import rtc

from agent.engine_host import EngineHost, HostedUtterance
from agent.room_events import EventSender, EventType
from agent.speak_policy import SpeakPolicy
from agent.speak_request import (
    SPEAK_ATTRIBUTE,
    TOPIC_SPEAK,
    TRACK_ATTRIBUTE_PREFIX,
    DrainingError,
    NotAllowedError,
    QueueFullError,
    SenderUnknownError,
    SpeakMode,
    SpeakRequest,
    TooManyTracksError,
    is_server_packet,
    parse_speak_attribute,
    parse_speak_packet,
    parse_stream_attributes,
    with_voice_reference,
)
from agent.speech_journal import PENDING_ATTRIBUTE, PendingSpeech, encode, lost_in
from agent.track_player import QueuedSpeech, TrackPlayer
from api.errors import retry_after
from api.memory_guard import MemoryGuard
from api.rate_limit import RateLimiter
from api.service_metrics import WorkerMetrics
from engines.config import AgentSettings
from engines.errors import HiveTTSError, TextTooLongError

logger = logging.getLogger(__name__)

JOURNAL_INTERVAL_S = 0.25
"""The pending-speech attribute is rewritten at most this often (changes are coalesced)."""
SILENT_TRACK_CHECK_S = 5.0
"""How often tracks are checked for ``agent.idle_track_timeout_s``."""
LOST_CODE = "agent_lost"
SERVER_IDS_KEPT = 512
UNKNOWN_SENDER = "\0unknown participant"
"""Who sent a packet the rtc SDK names no sender for and the server did not sign."""


class RoomSession:
    def __init__(
        self,
        room: rtc.Room,
        host: EngineHost,
        settings: AgentSettings,
        metrics: WorkerMetrics,
        policy: SpeakPolicy,
        max_text_chars: int,
        memory: MemoryGuard | None = None,
        server_secret: str = "",
    ) -> None:
        self.room = room
        self._host = host
        self._settings = settings
        self._metrics = metrics
        self._policy = policy
        self._max_text_chars = max_text_chars
        self._memory = memory
        self._server_secret = server_secret
        """The LiveKit API secret the control API signs its packets with."""
        self._events = EventSender(room)
        self._players: dict[tuple[str, str], TrackPlayer] = {}
        self._publishing = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._arriving = 0
        """Requests past the queue check but not yet queued (their text is being planned)."""
        self.draining = False
        self.retired = False
        """Another agent of ours serves the room too and stays (``retire``)."""
        self.closed = asyncio.Event()
        self._pending: dict[str, PendingSpeech] = {}
        self._server_ids: OrderedDict[str, None] = OrderedDict()
        """Ids of requests the server API sent, so a resent one is spoken once."""
        self._journal_dirty = asyncio.Event()
        self._journal_task: asyncio.Task[None] | None = None
        limit = settings.rate_limit_per_participant
        self._rate = None if limit is None else RateLimiter(limit, "this participant")
        metrics.underruns.labels(room.name).inc(0)  # the series exists before its first underrun

    def attach(self) -> None:
        self.room.on("data_received", self._on_data)
        self.room.on("participant_connected", self._on_participant)
        self.room.on("participant_attributes_changed", self._on_attributes)
        self.room.register_text_stream_handler(TOPIC_SPEAK, self._on_text_stream)
        self._metrics.rooms.inc()
        self._journal_task = asyncio.create_task(self._write_journal(), name="speech-journal")
        if self._settings.idle_track_timeout_s > 0:
            self._spawn(self._retire_silent_tracks(self._settings.idle_track_timeout_s))
        for participant in self.room.remote_participants.values():
            self._on_participant(participant)

    async def report_lost(self, job_metadata: str) -> None:
        """Tell the senders of what a previous agent in this room accepted and never finished
        (handed over in the dispatch metadata) that it was lost."""
        for entry in lost_in(job_metadata):
            said = f"; {entry.spoken} characters had been spoken" if entry.spoken else ""
            await self._events.error(
                entry.id,
                entry.to,
                LOST_CODE,
                f"the agent speaking this request stopped (its worker was lost){said}; "
                "this agent replaced it: send the request again",
            )

    # -- journal: what is accepted and not yet spoken, in the agent's attributes ---------

    def _journal(self, request_id: str, spoken: int | None) -> None:
        current = self._pending.get(request_id)
        if spoken is None:
            if self._pending.pop(request_id, None) is not None:
                self._journal_dirty.set()
        elif current is not None and current.spoken != spoken:
            self._pending[request_id] = PendingSpeech(current.id, current.to, spoken)
            self._journal_dirty.set()

    async def _write_journal(self) -> None:
        while True:
            await self._journal_dirty.wait()
            self._journal_dirty.clear()
            try:
                await self.room.local_participant.set_attributes(
                    {PENDING_ATTRIBUTE: encode(self._pending.values())}
                )
            except Exception as exc:  # the room is closing
                logger.info("journal not written in %s: %s", self.room.name, exc)
            await asyncio.sleep(JOURNAL_INTERVAL_S)

    # -- input --------------------------------------------------------------------------

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic != TOPIC_SPEAK or self.retired:
            return
        self._spawn(self.handle_packet(packet.data, packet.participant))

    def _on_participant(self, participant: rtc.RemoteParticipant) -> None:
        self._on_attributes({SPEAK_ATTRIBUTE: ""}, participant)

    def _on_attributes(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        value = participant.attributes.get(SPEAK_ATTRIBUTE, "")
        if (
            SPEAK_ATTRIBUTE in changed
            and value.strip()
            and participant.identity != (self.room.local_participant.identity)
            and not self.retired
        ):
            self._spawn(self.handle_attribute(value, participant.identity))

    async def handle_attribute(self, value: str, identity: str) -> None:
        """A participant's ``tts.speak`` attribute: spoken like a packet from them."""
        received_at = time.perf_counter()
        request: SpeakRequest | None = None
        try:
            self._check_sender(identity)
            request = parse_speak_attribute(
                value, sender=identity, max_bytes=self._settings.max_packet_bytes
            )
            await self._accept(request, received_at)
        except HiveTTSError as exc:
            await self._refuse(exc, request, identity, value.encode())

    async def _accept(self, request: SpeakRequest, received_at: float) -> None:
        self._check_room_for(request)
        self._arriving += 1
        try:
            request = await with_voice_reference(request)
            synthesis = dataclasses.replace(request.synthesis, received_s=received_at)
            utterance = await self._host.speak(synthesis)
            try:
                await self._enqueue(request, utterance, received_at)
            except BaseException:  # refused (too many tracks) or the room closed: let go
                await utterance.aclose()
                raise
        finally:
            self._arriving -= 1

    def _on_text_stream(self, reader: rtc.TextStreamReader, identity: str) -> None:
        if not self.retired:
            self._spawn(self.handle_text_stream(reader, identity))

    def _sender_attributes(self, identity: str | None) -> dict[str, str]:
        participant = self.room.remote_participants.get(identity or "")
        return dict(participant.attributes) if participant is not None else {}

    async def handle_packet(
        self, payload: bytes, participant: rtc.RemoteParticipant | None
    ) -> None:
        received_at = time.perf_counter()
        identity = participant.identity if participant is not None else None
        request: SpeakRequest | None = None
        try:
            if participant is None and not is_server_packet(
                payload, self._server_secret, self.room.name
            ):
                # no sender and not signed by the server: a participant the rtc SDK has not
                # seen join yet (it names no sender then), checked as someone unknown
                identity = UNKNOWN_SENDER
            self._check_sender(identity)
            request = parse_speak_packet(
                payload,
                # the server's text, or an unknown participant's: reply_to is the body's
                sender=None if identity == UNKNOWN_SENDER else identity,
                max_bytes=self._settings.max_packet_bytes,
            )
            if identity is None:  # the control API sends again until it sees it accepted
                if request.id in self._server_ids:
                    return
                self._server_ids[request.id] = None
                while len(self._server_ids) > SERVER_IDS_KEPT:
                    self._server_ids.popitem(last=False)
            await self._accept(request, received_at)
        except HiveTTSError as exc:
            await self._refuse(exc, request, identity, payload)

    async def handle_text_stream(self, reader: rtc.TextStreamReader, identity: str) -> None:
        received_at = time.perf_counter()
        request: SpeakRequest | None = None
        utterance: HostedUtterance | None = None
        try:
            self._check_sender(identity)
            request = parse_stream_attributes(reader.info.attributes or {}, sender=identity)
            if not reader.info.attributes or "id" not in reader.info.attributes:
                request = dataclasses.replace(request, id=reader.info.stream_id)
            self._check_room_for(request)
            self._arriving += 1
            try:
                request = await with_voice_reference(request)
                synthesis = dataclasses.replace(request.synthesis, received_s=received_at)
                utterance = await self._host.open_text_stream(synthesis)
                try:
                    await self._enqueue(request, utterance, received_at)
                except BaseException:
                    await utterance.aclose()
                    utterance = None
                    raise
            finally:
                self._arriving -= 1
            received = 0
            async for text in reader:
                received += len(text)
                if received > self._max_text_chars:
                    raise TextTooLongError(received, self._max_text_chars)
                await utterance.push_text(text)
        except HiveTTSError as exc:
            await self._refuse(exc, request, identity, b"")
        except Exception as exc:  # the sender vanished mid-stream: speak what arrived
            logger.info("text stream from %s ended early: %s", identity, exc)
        finally:
            if utterance is not None:
                with contextlib.suppress(HiveTTSError):
                    await utterance.end_input()
            with contextlib.suppress(Exception):
                reader.close()

    def _check_sender(self, identity: str | None) -> None:
        if self.draining:
            raise DrainingError("this agent is shutting down and takes no new text")
        refusal = self._policy.refusal(identity, self._sender_attributes(identity))
        if refusal is not None and identity == UNKNOWN_SENDER:
            raise SenderUnknownError(
                "this room limits who may make the agent speak, and the agent did not know the "
                "sender yet (the packet came as they joined): send it again",
                retry_after_s=1,
            )
        if refusal is not None:
            raise NotAllowedError(refusal)
        if self._memory is not None:
            self._memory.check()
        if identity is not None and self._rate is not None:  # the server's text is not limited
            self._rate.take(identity)

    def _check_room_for(self, request: SpeakRequest) -> None:
        if request.mode is SpeakMode.INTERRUPT:
            return
        waiting = self._arriving + sum(player.waiting for player in self._players.values())
        if waiting >= self._settings.max_queue_per_room:
            raise QueueFullError(
                f"{waiting} utterances are already waiting in this room (limit "
                f"{self._settings.max_queue_per_room}); send with mode 'interrupt' or wait for "
                "'finished' events"
            )

    async def _refuse(
        self,
        exc: HiveTTSError,
        request: SpeakRequest | None,
        identity: str | None,
        payload: bytes,
    ) -> None:
        request_id = request.id if request is not None else _id_of(payload)
        reply_to = request.reply_to if request is not None else identity
        if reply_to == UNKNOWN_SENDER:  # whom to tell: only the packet itself can say
            reply_to = _field_of(payload, "reply_to")
        self._metrics.errors.labels(exc.code).inc()
        await self._events.error(request_id, reply_to, exc.code, str(exc), retry_after(exc))

    # -- output -------------------------------------------------------------------------

    async def _enqueue(
        self, request: SpeakRequest, utterance: HostedUtterance, received_at: float
    ) -> None:
        player = await self._player_for(utterance.language, utterance.voice_id)
        if request.mode is SpeakMode.INTERRUPT:
            for dropped in await player.interrupt():
                await self._events.send(
                    EventType.FINISHED,
                    dropped.request.id,
                    dropped.request.reply_to,
                    track=player.name,
                    interrupted=True,
                    audio_duration_s=0.0,
                )
        interrupting = request.mode is SpeakMode.INTERRUPT
        position = player.waiting + (1 if player.busy and not interrupting else 0)
        self._pending[request.id] = PendingSpeech(request.id, request.reply_to)
        self._journal_dirty.set()
        player.enqueue(QueuedSpeech(request, utterance, received_at))
        self._update_gauges()
        await self._events.send(
            EventType.QUEUED,
            request.id,
            request.reply_to,
            track=player.name,
            position=position,
            voice_id=utterance.voice_id,
            language=utterance.language,
        )

    async def _player_for(self, language: str, voice_id: str) -> TrackPlayer:
        async with self._publishing:
            player = self._players.get((language, voice_id))
            if player is not None:
                player.touch()  # not retired for silence between here and its enqueue
                return player
            if len(self._players) >= self._settings.max_tracks_per_room:
                await self._retire_idle_track()
            taken = {p.name for p in self._players.values()}
            name = f"tts-{language}"
            if name in taken:
                name = f"tts-{language}-{voice_id}"
            player = TrackPlayer(
                self.room,
                name,
                language,
                voice_id,
                self._events,
                self._metrics,
                self._journal,
                timed_captions=self._settings.timed_captions,
            )
            await player.publish()
            self._players[(language, voice_id)] = player
            await self.room.local_participant.set_attributes(
                {
                    TRACK_ATTRIBUTE_PREFIX + name: json.dumps(
                        {"language": language, "voice_id": voice_id, "track_sid": player.track_sid}
                    )
                }
            )
            self._metrics.room_tracks.labels(self.room.name).set(len(self._players))
            return player

    async def _retire_idle_track(self) -> None:
        """Unpublish the oldest track that is not speaking, to make room for a new one."""
        idle = [key for key, player in self._players.items() if not player.busy]
        if not idle:
            raise TooManyTracksError(
                f"every one of this room's {len(self._players)} tracks is speaking (limit "
                f"{self._settings.max_tracks_per_room}); wait for one to finish, or send in a "
                "language and voice that already has a track"
            )
        await self._retire(idle[0], "to make room for a new one")

    async def _retire(self, key: tuple[str, str], why: str) -> None:
        player = self._players.pop(key)
        await player.aclose()
        with contextlib.suppress(Exception):
            await self.room.local_participant.unpublish_track(player.track_sid)
        await self.room.local_participant.set_attributes({TRACK_ATTRIBUTE_PREFIX + player.name: ""})
        self._metrics.room_tracks.labels(self.room.name).set(len(self._players))
        logger.info("room %s: retired idle track %s %s", self.room.name, player.name, why)

    async def _retire_silent_tracks(self, timeout_s: float) -> None:
        """Unpublish each track silent for ``timeout_s``: a published track costs CPU even
        while silent, and the next utterance publishes it again."""
        while True:
            await asyncio.sleep(min(timeout_s / 2, SILENT_TRACK_CHECK_S))
            async with self._publishing:
                for key, player in list(self._players.items()):
                    if player.idle_s() >= timeout_s:
                        await self._retire(key, f"(silent for {timeout_s:g} s)")

    def _update_gauges(self) -> None:
        waiting = sum(player.waiting for player in self._players.values())
        self._metrics.room_queue.labels(self.room.name).set(waiting)

    def tracks(self) -> list[dict[str, object]]:
        return [
            {
                "name": p.name,
                "language": p.language,
                "voice_id": p.voice_id,
                "track_sid": p.track_sid,
                "speaking": p.busy,
                "waiting": p.waiting,
            }
            for p in self._players.values()
        ]

    # -- lifecycle ----------------------------------------------------------------------

    async def retire(self) -> None:
        """Another agent of ours serves this room too and stays: take no new text (it hears the
        same and answers it, so this one says nothing), and finish what this one accepted,
        waiting or playing (the other joined after it and never received it)."""
        self.retired = True
        await asyncio.gather(*(player.idle() for player in self._players.values()))

    async def drain(self) -> None:
        """Take no new text, drop what waits, finish what is being spoken."""
        self.draining = True
        for player in self._players.values():
            for dropped in await player.drop_waiting():
                await self._events.error(
                    dropped.request.id,
                    dropped.request.reply_to,
                    DrainingError.code,
                    "this agent is shutting down; the request was not spoken",
                )
        await asyncio.gather(*(player.idle() for player in self._players.values()))

    async def aclose(self, reason: str = "") -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        if self._journal_task is not None:
            self._journal_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        for player in self._players.values():
            with contextlib.suppress(Exception):
                await player.aclose()
        self._metrics.rooms.dec()
        self._metrics.forget_room(self.room.name)


def _id_of(payload: bytes) -> str | None:
    """The request id of a packet that failed validation, if it has a readable one."""
    return _field_of(payload, "id")


def _field_of(payload: bytes, key: str) -> str | None:
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    field = value.get(key) if isinstance(value, dict) else None
    return str(field) if isinstance(field, str | int) else None


SessionCallback = Callable[[RoomSession], None]
