"""A real LiveKit server, real agent worker processes and real room participants, for the tests
and the tools that measure rooms.

The server is the pinned build ``make`` puts in ``.cache/livekit/bin`` (started with
``--dev`` on free loopback ports); workers are ``hive-tts agent`` child processes; listeners
and senders are ``livekit.rtc`` rooms in the calling process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from livekit import api as lkapi
from livekit import rtc

from agent.livekit_server import (
    BUILD_CACHE,
    DEV_API_KEY,
    DEV_API_SECRET,
    SERVER_ENV,
    DevServer,
)
from agent.speak_request import (
    AGENT_ATTRIBUTE,
    READY_ATTRIBUTE,
    TOPIC_EVENTS,
    TOPIC_SPEAK,
    TOPIC_TRANSCRIPTION,
)
from api.rooms import LiveKitSettings
from engines.audio import LIVEKIT_SAMPLE_RATE, Pcm16
from hive_tts.paths import PROJECT_ROOT

from .probes import WorkerProbe

logger = logging.getLogger(__name__)

WORKER_START_TIMEOUT_S = 180.0
PROBE_PREFIX = "known-probe-"
AGENT_JOIN_TIMEOUT_S = 60.0
EVENT_TIMEOUT_S = 60.0
LEAVE_TIMEOUT_S = 15.0
AUDIBLE_PEAK = 300
"""A received frame whose peak passes this (int16) is sound, not silence or dither."""
AGENT_NAME = "hive-tts"
TRACK = "tts-en"
"""The agent's English track."""
METRIC_ROOMS = "tts_rooms_active"
METRIC_UNDERRUNS = "tts_playback_underruns_total"
METRIC_REQUESTS = "tts_synthesis_requests_total"
METRICS_POLL_S = 0.5
LK_SENTENCE = "Hello, this is the load test speaking. Thanks for joining the room."
"""What ``lk perf agent-load-test``'s rooms ask the agent to say (the ``tts.speak`` attribute)."""
LK_GRACE_S = 90.0
"""``lk perf`` gets this long beyond its ``--duration`` before it is killed."""
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
"""Terminal escapes in ``lk``'s output."""


def start_server(log_dir: Path) -> DevServer:
    os.environ.setdefault(SERVER_ENV, str(BUILD_CACHE / "livekit-server"))
    return DevServer.start(log_dir=log_dir)


IDLE_LOAD = 0.3


class WorkerProcess:
    """``hive-tts agent`` as a child process, its output watched for readiness."""

    def __init__(
        self,
        server: DevServer,
        config: Path | None,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        command = [sys.executable, "-m", "hive_tts.cli", "-v"]
        if config is not None:
            command += ["--config", str(config)]
        command += ["agent", "--metrics-port", "0", "--health-port", "0"]
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env={**os.environ, **server.env(), **(env or {}), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.metrics_url: str | None = None
        self.worker_id: str | None = None
        self.lines: list[str] = []
        self._registered = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("metrics: "):
                self.metrics_url = line.split(" ", 1)[1].strip()
            if line.startswith("registered worker "):
                self.worker_id = line.split()[-1]
                self._registered.set()
        self._registered.set()

    def wait_registered(self, timeout: float = WORKER_START_TIMEOUT_S) -> None:
        if not self._registered.wait(timeout) or self.worker_id is None:
            raise RuntimeError(f"worker did not register: {self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-3000:]
        return ""

    def signal(self, sig: signal.Signals) -> None:
        """Signal ``hive-tts agent`` itself (the supervisor, which passes SIGTERM on)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def status(self) -> dict[str, object]:
        """The worker's ``/worker`` status (503 until it registers; the body says why)."""
        assert self.metrics_url is not None
        url = self.metrics_url.replace("/metrics", "/worker")
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                body = json.load(reply)
        except urllib.error.HTTPError as error:
            body = json.load(error)
        assert isinstance(body, dict)
        return body

    def wait_idle(self, below: float = IDLE_LOAD, timeout: float = WORKER_START_TIMEOUT_S) -> None:
        """Until the load the worker reports to LiveKit is below ``below``: a worker that has
        just registered may still be warming up, and LiveKit gives a busy worker no rooms."""
        deadline = time.monotonic() + timeout
        while True:
            load = self.status().get("load")
            if isinstance(load, int | float) and load < below:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker still at load {load} after {timeout} s")
            time.sleep(0.5)

    def served(self) -> list[dict[str, object]]:
        """The rooms the worker serves (its ``/rooms``): room, agent identity, tracks."""
        assert self.metrics_url is not None
        url = self.metrics_url.replace("/metrics", "/rooms")
        with urllib.request.urlopen(url, timeout=5) as reply:
            rooms = json.load(reply)["rooms"]
        assert isinstance(rooms, list)
        return rooms

    def rooms(self) -> list[str]:
        return [str(room["room"]) for room in self.served()]

    def identities_in(self, room: str) -> set[str]:
        """The worker's agent identities in ``room`` (empty when it does not serve it)."""
        return {str(r.get("identity", "")) for r in self.served() if r["room"] == room}

    def kill_worker(self) -> int:
        """SIGKILL the process that serves the rooms (not its supervisor); returns its pid."""
        pid = int(str(self.status()["pid"]))
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@asynccontextmanager
async def running_workers(
    nodes: Sequence[DevServer], config: Path | None, log_dir: Path
) -> AsyncIterator[list[WorkerProcess]]:
    """A ``hive-tts agent`` per node, registered; stopped (drained) afterwards."""
    workers: list[WorkerProcess] = []
    try:
        for n, node in enumerate(nodes):
            workers.append(WorkerProcess(node, config, log_dir / f"worker-{n}.log"))
        for worker in workers:
            await asyncio.to_thread(worker.wait_registered)
        yield workers
    finally:
        for worker in workers:
            await asyncio.to_thread(worker.stop)


def settings_for(server: DevServer) -> LiveKitSettings:
    return LiveKitSettings(server.http_url, server.api_key, server.api_secret, "hive-tts")


def room_name(prefix: str = "room") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class LiveKitEndpoint(Protocol):
    """Where participants connect: a :class:`DevServer`, or any server with dev keys."""

    @property
    def url(self) -> str: ...

    @property
    def api_key(self) -> str: ...

    @property
    def api_secret(self) -> str: ...


@dataclass(frozen=True)
class Endpoint:
    url: str
    api_key: str = DEV_API_KEY
    api_secret: str = DEV_API_SECRET


def token(
    server: LiveKitEndpoint, room: str, identity: str, attributes: Mapping[str, str] = {}
) -> str:
    grants = lkapi.VideoGrants(
        room_join=True, room=room, can_publish_data=True, can_update_own_metadata=True
    )
    builder = (
        lkapi.AccessToken(server.api_key, server.api_secret)
        .with_identity(identity)
        .with_grants(grants)
    )
    if attributes:
        builder = builder.with_attributes(dict(attributes))
    return builder.to_jwt()


@dataclass
class ReceivedTrack:
    name: str
    sid: str
    frames: list[tuple[float, Pcm16]] = field(default_factory=list)
    sample_rates: set[int] = field(default_factory=set)

    def audio(self, since: float = 0.0) -> Pcm16:
        pcms = [pcm for at, pcm in self.frames if at >= since]
        return np.concatenate(pcms) if pcms else np.zeros(0, dtype=np.int16)

    def first_audible(self, since: float) -> float | None:
        for at, pcm in self.frames:
            if at >= since and int(np.max(np.abs(pcm.astype(np.int32)))) > AUDIBLE_PEAK:
                return at
        return None

    def audible_seconds(self, since: float, until: float = float("inf")) -> float:
        return sum(
            pcm.size / LIVEKIT_SAMPLE_RATE
            for at, pcm in self.frames
            if since <= at < until and int(np.max(np.abs(pcm.astype(np.int32)))) > AUDIBLE_PEAK
        )


@dataclass
class Caption:
    text: str
    attributes: dict[str, str]
    final_attributes: dict[str, str]
    arrivals: list[tuple[float, str]] = field(default_factory=list)
    """Each write as it came (``perf_counter``, text): the agent writes a word as it is heard."""


class Participant:
    """A person or pipeline in a room: hears the agent's tracks, sends text, reads events."""

    def __init__(self, identity: str, *, subscribe: bool = True) -> None:
        """``subscribe=False``: hears nothing (a pipeline that only sends text and reads events)."""
        self.identity = identity
        self.subscribe = subscribe
        self.room = rtc.Room()
        self.tracks: dict[str, ReceivedTrack] = {}
        self.events: list[tuple[float, dict[str, object]]] = []
        self.captions: list[Caption] = []
        self.probes_answered: set[str] = set()
        """``wait_known_by_agent``'s probes that were answered (kept out of ``events``)."""
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.room.on("track_subscribed", self._on_track)
        self.room.on("data_received", self._on_data)
        self.room.register_text_stream_handler(TOPIC_TRANSCRIPTION, self._on_caption)

    async def join(
        self, server: LiveKitEndpoint, room: str, attributes: Mapping[str, str] = {}
    ) -> Participant:
        await self.room.connect(
            server.url,
            token(server, room, self.identity, attributes),
            rtc.RoomOptions(auto_subscribe=self.subscribe),
        )
        return self

    async def leave(self) -> None:
        """Stop reading, then disconnect. Bounded: with 32 rooms joined in this process, the rtc
        SDK's disconnect of some never returned (the server drops them when they time out)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(self.room.disconnect(), LEAVE_TIMEOUT_S)
        except TimeoutError:
            logger.warning(
                "%s: disconnect still pending after %.0f s", self.identity, LEAVE_TIMEOUT_S
            )

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _notify(self) -> None:
        self._changed.set()

    def _on_track(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if not isinstance(track, rtc.RemoteAudioTrack):
            return
        received = ReceivedTrack(track.name, publication.sid)
        self.tracks[track.name] = received
        self._notify()

        # opened here, not in the task: frames that arrive before the stream exists are lost,
        # and on a busy test loop the task may start a second later
        stream = rtc.AudioStream(track, sample_rate=LIVEKIT_SAMPLE_RATE, num_channels=1)

        async def read() -> None:
            try:
                async for event in stream:
                    frame = event.frame
                    received.sample_rates.add(frame.sample_rate)
                    pcm = np.frombuffer(frame.data, dtype=np.int16).copy()
                    received.frames.append((time.perf_counter(), pcm))
            finally:  # a left room's stream stops sending frames into this loop
                await stream.aclose()

        self._spawn(read())

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic == TOPIC_EVENTS:
            event = json.loads(packet.data)
            if str(event.get("id", "")).startswith(PROBE_PREFIX):  # wait_known_by_agent's
                self.probes_answered.add(str(event["id"]))
            else:
                self.events.append((time.perf_counter(), event))
            self._notify()

    def _on_caption(self, reader: rtc.TextStreamReader, identity: str) -> None:
        async def read() -> None:
            attributes = dict(reader.info.attributes or {})
            chunks: list[str] = []
            arrivals: list[tuple[float, str]] = []
            try:
                async for chunk in reader:
                    chunks.append(chunk)
                    arrivals.append((time.perf_counter(), chunk))
            except rtc.StreamError:  # the agent went away mid-caption (a killed worker)
                attributes["interrupted"] = "true"
            text = "".join(chunks)
            final = dict(reader.info.attributes or {})
            self.captions.append(Caption(text, attributes, final, arrivals))
            self._notify()

        self._spawn(read())

    async def send(self, body: Mapping[str, object] | bytes, to: str = TOPIC_SPEAK) -> float:
        """Publish a ``tts.speak`` packet; returns when it was sent (``perf_counter``).

        A JSON body names this participant in ``reply_to`` unless it names someone, as a client
        should: a packet sent as it joins can reach the agent before its join does, with no
        sender, and then only ``reply_to`` says where the events go."""
        if not isinstance(body, bytes) and "reply_to" not in body:
            body = {**body, "reply_to": self.identity}
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = time.perf_counter()
        await self.room.local_participant.publish_data(payload, topic=to, reliable=True)
        return sent

    async def wait_known_by_agent(self, attempts: int = 20, each_s: float = 1.0) -> None:
        """Until the agent knows this participant: a packet sent as it joins can reach the agent
        before its join does, and then names no sender. A probe without ``reply_to`` is answered
        (with an error) only once the agent knows who sent it."""
        for attempt in range(attempts):
            probe = f"{PROBE_PREFIX}{self.identity}-{attempt}"
            # refused as it is read (no such mode), so nothing is queued or spoken
            await self.send(json.dumps({"id": probe, "text": ".", "mode": "probe"}).encode())
            with contextlib.suppress(AssertionError):
                await self.wait_for(lambda: bool(self.probes_answered), each_s, "a probe's answer")
                return
        raise AssertionError(f"the agent never knew {self.identity}")

    async def send_until_known(
        self, body: Mapping[str, object], attempts: int = 10, timeout: float = EVENT_TIMEOUT_S
    ) -> float:
        """Send ``body``, and again while the agent answers ``sender_unknown`` (it had not seen
        this participant join yet, in a room that limits who may speak); when it was last sent."""
        request_id = str(body["id"])
        for _ in range(attempts):
            before = len(self.events_for(request_id))
            sent = await self.send(body)
            await self.wait_for(
                functools.partial(self.answered_after, request_id, before),
                timeout,
                f"an answer to {request_id}",
            )
            answer = self.events_for(request_id)[before]
            if answer.get("type") != "error" or answer.get("code") != "sender_unknown":
                return sent
            await asyncio.sleep(float(str(answer.get("retry_after_s", 1))))
        raise AssertionError(f"the agent never knew {self.identity}: {self.events_for(request_id)}")

    def describe(self) -> str:
        """The connection and what each track brought, for a failure's message."""
        tracks = ", ".join(
            f"{name}: {len(track.frames)} frames, {track.audible_seconds(0.0):.2f} s audible"
            for name, track in self.tracks.items()
        )
        return f"connection {self.room.connection_state}, tracks [{tracks}]"

    def errors(self, code: str | None = None) -> list[dict[str, object]]:
        return [
            event
            for _, event in self.events
            if event.get("type") == "error" and code in (None, event.get("code"))
        ]

    def events_for(self, request_id: str | None) -> list[dict[str, object]]:
        return [event for _, event in self.events if event.get("id") == request_id]

    def answered_after(self, request_id: str, count: int) -> bool:
        """Whether more than ``count`` events came for ``request_id``."""
        return len(self.events_for(request_id)) > count

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float = EVENT_TIMEOUT_S, what: str = "?"
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out waiting for {what}; {self.describe()}; events: {self.events}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))

    async def wait_event(
        self, request_id: str | None, kind: str, timeout: float = EVENT_TIMEOUT_S
    ) -> dict[str, object]:
        def found() -> bool:
            return any(e.get("type") == kind for e in self.events_for(request_id))

        await self.wait_for(found, timeout, f"{kind} event of {request_id}")
        return next(e for e in self.events_for(request_id) if e.get("type") == kind)


async def dispatch_agent(
    server: DevServer, room: str, metadata: str = "", agent_name: str = AGENT_NAME
) -> None:
    """Create ``room`` (with ``metadata``) and dispatch the agent into it."""
    async with lkapi.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as client:
        await client.room.create_room(lkapi.CreateRoomRequest(name=room, metadata=metadata))
        await client.agent_dispatch.create_dispatch(
            lkapi.CreateAgentDispatchRequest(agent_name=agent_name, room=room)
        )


async def wait_agent_ready(participant: Participant, timeout: float = AGENT_JOIN_TIMEOUT_S) -> str:
    """The agent's identity, once it listens in the participant's room."""

    def agent() -> rtc.RemoteParticipant | None:
        for p in participant.room.remote_participants.values():
            if p.attributes.get(AGENT_ATTRIBUTE) and p.attributes.get(READY_ATTRIBUTE):
                return p
        return None

    await participant.wait_for(lambda: agent() is not None, timeout, "the agent to join")
    found = agent()
    assert found is not None
    return found.identity


async def delete_rooms(server: LiveKitEndpoint, names: Sequence[str]) -> None:
    """Delete ``names`` (each one that exists) through the server's API."""
    async with lkapi.LiveKitAPI(http_url(server), server.api_key, server.api_secret) as client:
        for name in names:
            with contextlib.suppress(Exception):
                await client.room.delete_room(lkapi.DeleteRoomRequest(room=name))


async def wait_rooms_gone(probe: WorkerProbe, timeout: float) -> float | None:
    """Until the worker's ``tts_rooms_active`` is 0 (at most ``timeout`` s); the count left."""
    deadline = time.monotonic() + timeout
    active = await probe.metric(METRIC_ROOMS)
    while active and time.monotonic() < deadline:
        await asyncio.sleep(METRICS_POLL_S)
        active = await probe.metric(METRIC_ROOMS)
    return active


def http_url(server: LiveKitEndpoint) -> str:
    """The server's API address (``http(s)://``) for its ``ws(s)://`` one."""
    return re.sub(r"^ws", "http", server.url)
