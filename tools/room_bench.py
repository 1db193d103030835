"""End-to-end benchmark of the LiveKit agent: real server, real worker, real rooms. Prints figures,
asserts nothing.

Run from the repository root::

    .venv/bin/python -m tools.room_bench [--rooms 1,10,40] [--utterances 3] [--json out.json]
                                         [--lk-load-test SECONDS] [--lk-rooms N]
                                         [--join-concurrency K] [--no-warmup]
                                         [--wait-quiet SECONDS]
                                         [--livekit-url URL --api-key KEY --api-secret SECRET
                                          [--metrics-url URL] [--worker-pid PID]]

Without ``--livekit-url`` it starts ``livekit-server --dev`` on free loopback ports and one
``hive-tts agent`` worker (default ``config.yaml``), and warms it with one room speaking one
sentence (discarded). For each room count N, in turn, with fresh rooms: dispatch the agent into
N rooms (one at a time unless ``--join-concurrency``), join each with one participant that both
sends and listens, and wait until every agent is ready (worker RSS before and after: memory per
room).
Then every room speaks ``--utterances`` English sentences one after another (each after the
previous ``finished`` event and a random 0.3-1.0 s pause; rooms start at random within 1 s).
Per utterance:

- **listener TTFA**: ``tts.speak`` sent -> first received frame of ``tts-en`` with a peak above
  300 (int16);
- the agent's ``ttfa_ms`` (packet received -> first audio handed to WebRTC) and
  ``engine_ttfa_ms`` (engine alone) from the ``started`` event;
- **listener underruns**: the listener's stream delivers a 10 ms frame every 10 ms, silence
  included, so a gap of more than 30 ms between consecutive frames while the utterance plays
  (first audible frame -> ``finished`` event) is one.

Per N also: the worker's CPU over the speaking phase (user + system, children included) per
room, its ``tts_playback_underruns_total`` delta, and the cores this process and every other
process used meanwhile (the machine is shared). Afterwards every participant leaves and the tool
waits for the worker's ``tts_rooms_active`` to fall to 0.

``--lk-load-test SECONDS`` then runs ``lk perf agent-load-test`` against the same server and
worker (each of its rooms sets the ``tts.speak`` attribute), polling the worker's metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import sys
import tempfile
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from livekit import api as lkapi
from livekit import rtc
from livekit.rtc._ffi_client import FfiClient

from agent.livekit_server import LK_ENV, DevServer, find_binary
from engines.audio import LIVEKIT_SAMPLE_RATE
from tools.benchkit.machine import cpu_snapshot, wait_for_quiet
from tools.benchkit.probes import LoopLagProbe, WorkerProbe
from tools.benchkit.report import add_report_arguments, fmt, heading, render_table, write_report
from tools.benchkit.rooms import (
    AGENT_NAME,
    ANSI,
    AUDIBLE_PEAK,
    LK_GRACE_S,
    LK_SENTENCE,
    METRIC_REQUESTS,
    METRIC_ROOMS,
    METRIC_UNDERRUNS,
    Participant,
    WorkerProcess,
    dispatch_agent,
    room_name,
    start_server,
    wait_agent_ready,
    wait_rooms_gone,
)
from tools.benchkit.rooms import TRACK as TRACK  # (TRACK and delete_rooms: tools/soak.py)
from tools.benchkit.rooms import delete_rooms as delete_rooms
from tools.benchkit.stats import MS_PER_S, P50, P95, P99, percentile, percentile_or_none

# the workload
DEFAULT_ROOMS = (1, 10, 40)
DEFAULT_UTTERANCES = 3
SEED = 20261125
START_SPREAD_S = 1.0
PAUSE_RANGE_S = (0.3, 1.0)
SENTENCES = (
    "Thanks for calling the front desk. How can I help you this afternoon?",
    "Your order has shipped and should arrive on Thursday before noon.",
    "I'm sorry, I didn't quite catch that. Could you say it once more, a little slower?",
    "The next train to the airport leaves at ten forty from platform three.",
    "I've sent a six digit confirmation code to the phone number on your account.",
    "Your appointment with Doctor Patel is confirmed for Tuesday at three in the afternoon.",
    "Great, I've booked a table for four at seven thirty tonight, near the window.",
    "Your current balance is two hundred and twelve dollars, due on the first of next month.",
    "The weather in Paris is sunny today, with a light breeze from the west and a high of "
    "twenty degrees.",
    "Please hold for a moment while I transfer you to someone who can help with billing.",
    "Is there anything else I can help you with today, or shall I close this ticket?",
    "Turn left at the second light, then the parking garage entrance is on your right.",
)

# listener-side underruns
FRAME_S = 0.010
GAP_LIMIT_S = FRAME_S + 0.020
"""Consecutive 10 ms frames further apart than this while an utterance plays: an underrun."""

# bounds: every wait ends by itself
DISPATCH_WAIT_S = 15.0
DISPATCH_ATTEMPTS = 4
"""A room whose agent has not joined in DISPATCH_WAIT_S is dispatched again (if its dispatch
has no job), up to this many waits in all."""
DEFAULT_JOIN_CONCURRENCY = 1
"""Rooms dispatched at once; more makes the worker refuse dispatches (``--join-concurrency``)."""
SETTLE_S = 2.0
"""Pause before reading the worker's RSS, so memory freed by rooms just closed is gone."""
DEFAULT_UTTERANCE_TIMEOUT_S = 120.0
SEND_TIMEOUT_S = 10.0
LEAVE_TIMEOUT_S = 60.0
LK_POLL_S = 1.0
LK_TAIL_LINES = 40
HUNG_POLL_S = 5.0
HUNG_AFTER_S = 60.0
"""A worker whose ``/metrics`` stays silent this long is hung: the level stops, and so does
the run (a hung worker would only produce timeouts)."""

# targets, on this machine
TARGET_ROOMS = 10
TARGET_P50_MS = 150.0
TARGET_P95_MS = 250.0


# ---------------------------------------------------------------------------------------------
# the worker, seen from outside


@dataclass(frozen=True)
class ServerAddress:
    """A LiveKit server given on the command line (the fixtures read only these fields)."""

    url: str
    http_url: str
    api_key: str
    api_secret: str


# ---------------------------------------------------------------------------------------------
# the listener


@dataclass
class Heard:
    """What a listener received on one track: each frame's arrival (``perf_counter``) and
    whether it was audible; compact, so that minutes of 10 ms frames in 40 rooms cost little
    memory and no garbage-collector time."""

    times: array[float] = field(default_factory=lambda: array("d"))
    loud: bytearray = field(default_factory=bytearray)

    def add(self, at: float, pcm: np.ndarray[Any, Any]) -> None:
        self.times.append(at)
        self.loud.append(int(np.max(np.abs(pcm.astype(np.int32)))) > AUDIBLE_PEAK)


class BenchParticipant(Participant):
    """The fixtures' participant, with a listener light enough for 40 rooms in one process.

    ``livekit.rtc`` hands every audio-frame event of the process to every ``AudioStream``, and
    each drops the others' frames in Python: with N listeners that is N squared callbacks a
    second (160 000 at 40 rooms), which saturates this process before the worker. Here each
    stream's subscription is narrowed to its own stream handle, and frames are reduced to
    (arrival, audible) at once instead of being kept."""

    def __init__(self, identity: str) -> None:
        super().__init__(identity)
        self.heard: dict[str, Heard] = {}

    def _on_track(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if not isinstance(track, rtc.RemoteAudioTrack):
            return
        heard = self.heard.setdefault(track.name, Heard())
        self._notify()

        async def read() -> None:
            stream = rtc.AudioStream(track, sample_rate=LIVEKIT_SAMPLE_RATE, num_channels=1)
            _own_frames_only(stream)
            async for event in stream:
                heard.add(time.perf_counter(), np.frombuffer(event.frame.data, dtype=np.int16))

        self._spawn(read())


def _own_frames_only(stream: rtc.AudioStream) -> None:
    """Deliver to ``stream`` only its own events (see :class:`BenchParticipant`)."""
    handle = stream._ffi_handle.handle

    def own(event: Any) -> bool:
        return bool(
            event.WhichOneof("message") == "audio_stream_event"
            and event.audio_stream_event.stream_handle == handle
        )

    queue = FfiClient.instance.queue
    with queue._lock:
        for index, (subscriber, loop, _) in enumerate(queue._subscribers):
            if subscriber is stream._ffi_queue:
                queue._subscribers[index] = (subscriber, loop, own)


# ---------------------------------------------------------------------------------------------
# one utterance


@dataclass
class UtteranceSample:
    room: str
    request_id: str
    characters: int
    listener_ttfa_ms: float | None = None
    agent_ttfa_ms: float | None = None
    engine_ttfa_ms: float | None = None
    audio_duration_s: float | None = None
    listener_underruns: int = 0
    bench_stalled_underruns: int = 0
    """Listener underruns during which this process's own event loop stalled."""
    largest_gap_ms: float = 0.0
    gap_spans: list[tuple[float, float]] = field(default_factory=list)
    error: str | None = None


def listen(
    heard: Heard | None, sent: float, done: float
) -> tuple[float | None, list[tuple[float, float]], float]:
    """(first audible frame since ``sent``, underrun gaps as (from, to), largest gap in s), up
    to ``done``."""
    if heard is None:
        return None, [], 0.0
    count = len(heard.times)  # the stream task appends while we read
    start = bisect_left(heard.times, sent, 0, count)
    first = heard.loud.find(1, start, count)
    if first < 0 or heard.times[first] > done:
        return None, [], 0.0
    end = bisect_right(heard.times, done, first, count)
    times = heard.times[first:end]
    pairs = list(zip(times, times[1:], strict=False))
    spans = [(a, b) for a, b in pairs if b - a > GAP_LIMIT_S]
    return heard.times[first], spans, max((b - a for a, b in pairs), default=0.0)


async def outcome(
    participant: Participant, request_id: str, timeout: float
) -> tuple[float, dict[str, object]] | None:
    """The ``finished`` or ``error`` event of ``request_id`` and when it came, or ``None``."""

    def found() -> tuple[float, dict[str, object]] | None:
        for at, event in participant.events:
            if event.get("id") == request_id and event.get("type") in ("finished", "error"):
                return at, event
        return None

    with contextlib.suppress(AssertionError):
        await participant.wait_for(lambda: found() is not None, timeout, request_id)
    return found()


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


async def speak_once(
    participant: BenchParticipant, room: str, request_id: str, text: str, timeout: float
) -> UtteranceSample:
    sample = UtteranceSample(room, request_id, len(text))
    try:
        body = {"id": request_id, "text": text, "language": "en"}
        sent = await asyncio.wait_for(participant.send(body), SEND_TIMEOUT_S)
    except Exception as exc:  # the room went away under us, or this process is swamped
        sample.error = f"send: {type(exc).__name__} {exc}"
        return sample
    result = await outcome(participant, request_id, timeout)
    if result is None:
        sample.error = "timeout"
        return sample
    done_at, event = result
    if event.get("type") == "error":
        sample.error = f"error event: {event.get('code')}"
        return sample
    started = next(
        (e for e in participant.events_for(request_id) if e.get("type") == "started"), {}
    )
    sample.agent_ttfa_ms = _number(started.get("ttfa_ms"))
    sample.engine_ttfa_ms = _number(started.get("engine_ttfa_ms"))
    sample.audio_duration_s = _number(event.get("audio_duration_s"))
    first, sample.gap_spans, gap = listen(participant.heard.get(TRACK), sent, done_at)
    sample.listener_underruns = len(sample.gap_spans)
    sample.largest_gap_ms = gap * MS_PER_S
    if first is None:
        sample.error = "no audible audio before finished"
    else:
        sample.listener_ttfa_ms = (first - sent) * MS_PER_S
    return sample


async def speak_in_room(
    participant: BenchParticipant,
    room: str,
    count: int,
    seed: int,
    timeout: float,
    samples: list[UtteranceSample],
) -> None:
    """Speak ``count`` sentences one after another, appending to ``samples`` as they end."""
    rng = random.Random(seed)
    await asyncio.sleep(rng.uniform(0.0, START_SPREAD_S))
    for index in range(count):
        text = rng.choice(SENTENCES)
        samples.append(await speak_once(participant, room, f"{room}-{index}", text, timeout))
        await asyncio.sleep(rng.uniform(*PAUSE_RANGE_S))


async def watch_worker(probe: WorkerProbe) -> str:
    """Returns (only) once the worker's ``/metrics`` has not answered for ``HUNG_AFTER_S``."""
    answered = time.monotonic()
    while True:
        await asyncio.sleep(HUNG_POLL_S)
        if await probe.metric(METRIC_ROOMS) is not None:
            answered = time.monotonic()
        elif time.monotonic() - answered > HUNG_AFTER_S:
            return f"worker unresponsive: /metrics did not answer for {HUNG_AFTER_S:.0f} s"


async def speak_everywhere(
    ready: Sequence[tuple[str, BenchParticipant]],
    args: argparse.Namespace,
    seed: int,
    probe: WorkerProbe,
) -> tuple[list[UtteranceSample], str | None]:
    """Every room speaks at once; stops early (with the reason) if the worker stops answering."""
    samples: list[UtteranceSample] = []
    speaking = asyncio.gather(
        *(
            speak_in_room(p, name, args.utterances, seed + index, args.timeout, samples)
            for index, (name, p) in enumerate(ready)
        )
    )
    watch: asyncio.Future[str] = (
        asyncio.ensure_future(watch_worker(probe))
        if probe.metrics_url
        else asyncio.get_running_loop().create_future()  # never done: nothing to watch
    )
    both: list[asyncio.Future[Any]] = [speaking, watch]
    await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
    aborted = watch.result() if watch.done() else None
    for task in both:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return samples, aborted


# ---------------------------------------------------------------------------------------------
# one room count


@dataclass
class LevelResult:
    rooms: int
    rooms_ready: int = 0
    join_s: float = 0.0
    join_errors: list[str] = field(default_factory=list)
    redispatches: int = 0
    """Dispatches the server dropped (no available worker) that had to be sent again."""
    rss_before_mb: float | None = None
    rss_joined_mb: float | None = None
    speak_s: float = 0.0
    worker_cpu_s: float | None = None
    worker_native_cpu_s: float | None = None
    bench_cores: float = 0.0
    other_cores: float = 0.0
    steal_cores: float = 0.0
    bench_lag_p99_ms: float = 0.0
    bench_lag_max_ms: float = 0.0
    worker_underruns: float | None = None
    aborted: str | None = None
    """Why the speaking phase stopped early (a hung worker), if it did."""
    unspoken: int = 0
    """Utterances never sent or never finished because the phase stopped early."""
    rooms_active_after_leave: float | None = None
    leave_s: float = 0.0
    samples: list[UtteranceSample] = field(default_factory=list)

    @property
    def errors(self) -> int:
        failed = sum(s.error is not None for s in self.samples)
        return len(self.join_errors) + failed + self.unspoken

    @property
    def rss_per_room_mb(self) -> float | None:
        if self.rss_before_mb is None or self.rss_joined_mb is None or not self.rooms_ready:
            return None
        return (self.rss_joined_mb - self.rss_before_mb) / self.rooms_ready

    @property
    def worker_cores(self) -> float | None:
        return None if self.worker_cpu_s is None else self.worker_cpu_s / self.speak_s

    @property
    def audio_s(self) -> float:
        return sum(self.values("audio_duration_s"))

    @property
    def cpu_per_audio_s(self) -> float | None:
        """Worker core-seconds per second of audio spoken."""
        cpu = self.worker_cpu_s
        return None if cpu is None or not self.audio_s else cpu / self.audio_s

    @property
    def cpu_percent_per_room(self) -> float | None:
        cores = self.worker_cores
        return None if cores is None or not self.rooms_ready else cores / self.rooms_ready * 100

    def values(self, name: str) -> list[float]:
        return [v for s in self.samples if (v := getattr(s, name)) is not None]

    def transports(self) -> list[float]:
        return [
            s.listener_ttfa_ms - s.agent_ttfa_ms
            for s in self.samples
            if s.listener_ttfa_ms is not None and s.agent_ttfa_ms is not None
        ]

    def summary(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "errors": self.errors,
            "rss_per_room_mb": self.rss_per_room_mb,
            "worker_cores": self.worker_cores,
            "cpu_percent_per_room": self.cpu_percent_per_room,
            "audio_s": self.audio_s,
            "cpu_per_audio_s": self.cpu_per_audio_s,
        }


@dataclass
class OpenedRoom:
    name: str
    participant: BenchParticipant
    error: str | None = None
    redispatches: int = 0


async def dropped_dispatch(server: DevServer, room: str) -> bool:
    """Whether the room's dispatch has no job: the server found no available worker (the
    worker reported itself full) and gave up instead of retrying."""
    async with lkapi.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as client:
        dispatches = await client.agent_dispatch.list_dispatch(room)
        if any(dispatch.state.jobs for dispatch in dispatches):
            return False
        await client.agent_dispatch.create_dispatch(
            lkapi.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=room)
        )
        return True


async def open_room(server: DevServer, name: str, gate: asyncio.Semaphore) -> OpenedRoom:
    """Dispatch the agent, join, wait for it (dispatching again while the dispatch has no
    job, as a client of a busy worker must)."""
    opened = OpenedRoom(name, BenchParticipant(f"bench-{name}"))
    async with gate:
        try:
            await dispatch_agent(server, name)
            await opened.participant.join(server, name)
            for attempt in range(DISPATCH_ATTEMPTS):
                try:
                    await wait_agent_ready(opened.participant, DISPATCH_WAIT_S)
                    break
                except AssertionError:
                    if attempt + 1 == DISPATCH_ATTEMPTS:
                        raise
                    opened.redispatches += await dropped_dispatch(server, name)
        except Exception as exc:  # a timeout (AssertionError) or a refused dispatch
            opened.error = f"{name}: {type(exc).__name__}: {str(exc)[:200]}"
    return opened


async def run_level(
    server: DevServer, probe: WorkerProbe, rooms: int, args: argparse.Namespace
) -> LevelResult:
    result = LevelResult(rooms)
    print(f"\n-- {rooms} rooms: joining", flush=True)
    await asyncio.sleep(SETTLE_S)
    result.rss_before_mb = await probe.rss_mb()
    names = [room_name(f"bench{rooms}") for _ in range(rooms)]
    gate = asyncio.Semaphore(args.join_concurrency)
    began = time.perf_counter()
    opened = await asyncio.gather(*(open_room(server, name, gate) for name in names))
    result.join_s = time.perf_counter() - began
    result.join_errors = [room.error for room in opened if room.error is not None]
    result.redispatches = sum(room.redispatches for room in opened)
    ready = [(room.name, room.participant) for room in opened if room.error is None]
    result.rooms_ready = len(ready)
    await asyncio.sleep(SETTLE_S)
    result.rss_joined_mb = await probe.rss_mb()
    print(
        f"   {len(ready)}/{rooms} agents ready in {result.join_s:.1f} s, "
        f"{result.redispatches} dispatches dropped by the server and sent again"
        + (
            f"; {len(result.join_errors)} failed, first: {result.join_errors[0]}"
            if result.join_errors
            else ""
        ),
        flush=True,
    )

    underruns_before = await probe.metric(METRIC_UNDERRUNS)
    cpu_before = await probe.cpu_s()
    machine = cpu_snapshot()
    with LoopLagProbe(stall_after_s=GAP_LIMIT_S - FRAME_S) as lag:
        began = time.perf_counter()
        result.samples, result.aborted = await speak_everywhere(ready, args, SEED + rooms, probe)
        result.speak_s = time.perf_counter() - began
    result.unspoken = len(ready) * args.utterances - len(result.samples)
    cpu_after = await probe.cpu_s()
    now = cpu_snapshot()
    underruns_after = await probe.metric(METRIC_UNDERRUNS)
    result.worker_cpu_s = _delta(cpu_before[0], cpu_after[0])
    result.worker_native_cpu_s = _delta(cpu_before[1], cpu_after[1])
    wall = now.wall_s - machine.wall_s
    result.bench_cores = (now.own_s - machine.own_s) / wall
    busy = (now.busy_s - machine.busy_s) / wall
    result.other_cores = max(0.0, busy - result.bench_cores - (result.worker_cores or 0.0))
    result.steal_cores = (now.steal_s - machine.steal_s) / wall
    for sample in result.samples:
        sample.bench_stalled_underruns = sum(lag.stalled(*span) for span in sample.gap_spans)
    if lag.lags_ms:
        result.bench_lag_p99_ms = percentile(lag.lags_ms, P99)
        result.bench_lag_max_ms = max(lag.lags_ms)
    if underruns_before is not None and underruns_after is not None:
        result.worker_underruns = underruns_after - underruns_before
    print(
        f"   spoke {len(result.samples)} utterances in {result.speak_s:.1f} s, "
        f"{sum(s.error is not None for s in result.samples)} errors"
        + (
            f"; stopped early ({result.aborted}), {result.unspoken} unspoken"
            if result.aborted
            else ""
        ),
        flush=True,
    )

    began = time.perf_counter()
    await asyncio.gather(*(room.participant.leave() for room in opened), return_exceptions=True)
    result.rooms_active_after_leave = await wait_rooms_gone(probe, LEAVE_TIMEOUT_S)
    result.leave_s = time.perf_counter() - began
    if result.rooms_active_after_leave:
        print(
            f"   worker still in {result.rooms_active_after_leave:.0f} rooms "
            f"{LEAVE_TIMEOUT_S:.0f} s after everyone left; deleting the rooms",
            flush=True,
        )
        await delete_rooms(server, names)
        await wait_rooms_gone(probe, LEAVE_TIMEOUT_S)
    return result


# ---------------------------------------------------------------------------------------------
# lk perf agent-load-test


@dataclass
class LkResult:
    command: list[str]
    returncode: int | None
    wall_s: float
    output_tail: str
    rooms_active_peak: float | None
    synthesis_requests: float | None
    worker_underruns: float | None


async def lk_load_test(server: DevServer, probe: WorkerProbe, rooms: int, seconds: int) -> LkResult:
    command = [
        str(find_binary("lk", LK_ENV)),
        "perf",
        "agent-load-test",
        "--rooms",
        str(rooms),
        "--agent-name",
        AGENT_NAME,
        "--duration",
        f"{seconds}s",
        "--echo-speech-delay",
        "2s",
        "--attribute",
        f"tts.speak={LK_SENTENCE}",
        "--url",
        server.http_url,
        "--api-key",
        server.api_key,
        "--api-secret",
        server.api_secret,
    ]
    print(f"\n-- lk perf agent-load-test: {rooms} rooms for {seconds} s", flush=True)
    requests_before = await probe.metric(METRIC_REQUESTS)
    underruns_before = await probe.metric(METRIC_UNDERRUNS)
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    output = asyncio.create_task(process.communicate())
    peak: float | None = None
    deadline = time.monotonic() + seconds + LK_GRACE_S
    while not output.done() and time.monotonic() < deadline:
        active = await probe.metric(METRIC_ROOMS)
        if active is not None:
            peak = max(peak or 0.0, active)
        await asyncio.wait({output}, timeout=LK_POLL_S)
    if not output.done():
        process.kill()
    stdout, _ = await output
    wall = time.perf_counter() - began
    await wait_rooms_gone(probe, LEAVE_TIMEOUT_S)
    requests_after = await probe.metric(METRIC_REQUESTS)
    underruns_after = await probe.metric(METRIC_UNDERRUNS)
    lines = ANSI.sub("", (stdout or b"").decode(errors="replace")).splitlines()
    return LkResult(
        command=command,
        returncode=process.returncode,
        wall_s=wall,
        output_tail="\n".join(lines[-LK_TAIL_LINES:]),
        rooms_active_peak=peak,
        synthesis_requests=_delta(requests_before, requests_after),
        worker_underruns=_delta(underruns_before, underruns_after),
    )


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _per_s(value: float | None, seconds: float) -> float | None:
    return None if value is None or not seconds else value / seconds


# ---------------------------------------------------------------------------------------------
# report


def print_levels(levels: Sequence[LevelResult]) -> None:
    heading("Rooms: latency and underruns (ms; listener = tts.speak sent -> first audible frame)")
    headers = [
        "rooms", "ready", "utts", "listener p50", "p95", "max", "agent ttfa p50",
        "engine ttfa p50", "transport p50", "listener underruns", "(bench stalled)",
        "worker underruns", "largest gap", "CPU %core/room", "RSS MB/room", "errors",
    ]  # fmt: skip
    rows = []
    for level in levels:
        listener = level.values("listener_ttfa_ms")
        rows.append(
            [
                str(level.rooms),
                str(level.rooms_ready),
                str(len(listener)),
                fmt(percentile_or_none(listener, P50)),
                fmt(percentile_or_none(listener, P95)),
                fmt(max(listener, default=None)),
                fmt(percentile_or_none(level.values("agent_ttfa_ms"), P50)),
                fmt(percentile_or_none(level.values("engine_ttfa_ms"), P50)),
                fmt(percentile_or_none(level.transports(), P50)),
                str(sum(s.listener_underruns for s in level.samples)),
                str(sum(s.bench_stalled_underruns for s in level.samples)),
                fmt(level.worker_underruns, 0),
                fmt(max(level.values("largest_gap_ms"), default=None)),
                fmt(level.cpu_percent_per_room),
                fmt(level.rss_per_room_mb),
                str(level.errors),
            ]
        )
    print(render_table(headers, rows))
    gap_ms = GAP_LIMIT_S * MS_PER_S
    print(
        "agent ttfa = started.ttfa_ms (packet received -> first audio handed to WebRTC); "
        "engine ttfa = started.engine_ttfa_ms;\n"
        "transport = listener - agent ttfa per utterance (data packet to the agent, audio to "
        "the listener, jitter buffer);\n"
        f"listener underruns = gaps > {gap_ms:.0f} ms between received frames while an "
        "utterance played (bench stalled: while this process's own event loop stalled "
        f"> {gap_ms - FRAME_S * MS_PER_S:.0f} ms);\n"
        "worker underruns = tts_playback_underruns_total delta"
    )

    heading("Rooms: conditions (cores averaged over the speaking phase; the machine has 2)")
    headers = [
        "rooms", "join s", "re-dispatched", "speak s", "audio s/s", "worker cores", "(native)",
        "core-s/audio s", "bench cores", "bench lag p99/max ms", "other procs", "steal",
        "RSS before MB", "RSS joined MB", "rooms left", "leave s",
    ]  # fmt: skip
    rows = [
        [
            str(level.rooms),
            fmt(level.join_s),
            str(level.redispatches),
            fmt(level.speak_s),
            fmt(level.audio_s / level.speak_s if level.speak_s else None, 2),
            fmt(level.worker_cores, 2),
            fmt(_per_s(level.worker_native_cpu_s, level.speak_s), 2),
            fmt(level.cpu_per_audio_s, 3),
            fmt(level.bench_cores, 2),
            f"{level.bench_lag_p99_ms:.0f}/{level.bench_lag_max_ms:.0f}",
            fmt(level.other_cores, 2),
            fmt(level.steal_cores, 2),
            fmt(level.rss_before_mb, 0),
            fmt(level.rss_joined_mb, 0),
            fmt(level.rooms_active_after_leave, 0),
            fmt(level.leave_s),
        ]
        for level in levels
    ]
    print(render_table(headers, rows))
    print(
        "audio s/s = audio seconds finished / speak s; native = the worker's WebRTC/FFI threads "
        "(the rest: Python threads and ONNX Runtime);\ncore-s/audio s = worker CPU per second of "
        "audio spoken; bench = this process (every participant, listener and sender);\n"
        f"rooms left = the worker's {METRIC_ROOMS} once everyone had left (waited up to "
        f"{LEAVE_TIMEOUT_S:.0f} s)"
    )
    errors = [s for level in levels for s in level.samples if s.error is not None]
    for sample in errors[:10]:
        print(f"   error: {sample.request_id}: {sample.error}")
    for level in levels:
        for error in level.join_errors[:5]:
            print(f"   join error: {error}")
        if level.aborted:
            print(
                f"   {level.rooms} rooms stopped early: {level.aborted}; {level.unspoken} unspoken"
            )


def print_targets(levels: Sequence[LevelResult]) -> None:
    heading(f"Against the targets (at {TARGET_ROOMS} rooms; zero underruns at every level)")
    for level in levels:
        listener = level.values("listener_ttfa_ms")
        p50, p95 = percentile_or_none(listener, P50), percentile_or_none(listener, P95)
        underruns = sum(s.listener_underruns for s in level.samples)
        worker = level.worker_underruns or 0
        line = f"{level.rooms} rooms: underruns listener {underruns}, worker {worker:.0f}"
        line += " (target 0) " + ("met" if underruns == 0 and worker == 0 else "MISSED")
        if level.rooms == TARGET_ROOMS:
            line += (
                f"; listener TTFA p50 {fmt(p50)} ms (target <= {TARGET_P50_MS:.0f}) "
                + ("met" if p50 is not None and p50 <= TARGET_P50_MS else "MISSED")
                + f", p95 {fmt(p95)} ms (target <= {TARGET_P95_MS:.0f}) "
                + ("met" if p95 is not None and p95 <= TARGET_P95_MS else "MISSED")
            )
        print(f"{line}; errors {level.errors}")


def print_lk(result: LkResult) -> None:
    heading("lk perf agent-load-test")
    print("$ " + " ".join(result.command))
    print(result.output_tail)
    print(
        f"exit {result.returncode} after {result.wall_s:.1f} s; worker: rooms_active peak "
        f"{fmt(result.rooms_active_peak, 0)}, synthesis requests "
        f"{fmt(result.synthesis_requests, 0)}, playback underruns "
        f"{fmt(result.worker_underruns, 0)}"
    )


# ---------------------------------------------------------------------------------------------
# main


async def run(args: argparse.Namespace, server: DevServer, probe: WorkerProbe) -> dict[str, Any]:
    levels = []
    if args.warmup:
        warm = argparse.Namespace(**{**vars(args), "utterances": 1})
        warmup = await run_level(server, probe, 1, warm)
        ttfa = warmup.values("listener_ttfa_ms")
        print(f"   warm-up (discarded): listener TTFA {fmt(ttfa[0] if ttfa else None)} ms")
    for rooms in args.rooms:
        if args.wait_quiet > 0:
            await asyncio.to_thread(wait_for_quiet, args.wait_quiet)
        levels.append(await run_level(server, probe, rooms, args))
        if levels[-1].aborted:
            print(f"   stopping: {levels[-1].aborted}", flush=True)
            break
    print_levels(levels)
    print_targets(levels)
    lk: LkResult | None = None
    if args.lk_load_test > 0 and not levels[-1].aborted:
        lk = await lk_load_test(server, probe, args.lk_rooms, args.lk_load_test)
        print_lk(lk)
    return {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "levels": [level.summary() for level in levels],
        "lk_load_test": asdict(lk) if lk is not None else None,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.room_bench", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--rooms",
        default=",".join(map(str, DEFAULT_ROOMS)),
        help="comma-separated room counts, run one after another (default %(default)s)",
    )
    parser.add_argument("--utterances", type=int, default=DEFAULT_UTTERANCES)
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_UTTERANCE_TIMEOUT_S,
        help="longest wait for one utterance's finished event (default %(default)s s)",
    )
    parser.add_argument(
        "--join-concurrency",
        type=int,
        default=DEFAULT_JOIN_CONCURRENCY,
        help="rooms dispatched at once (default %(default)s: one after another). A worker "
        "refuses dispatches while it accepts another or reports itself full, and the server "
        "then drops them; the tool dispatches those rooms again and counts it",
    )
    parser.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="skip the discarded 1-room, 1-utterance warm-up",
    )
    parser.add_argument("--lk-load-test", type=int, default=0, metavar="SECONDS")
    parser.add_argument("--lk-rooms", type=int, default=5)
    add_report_arguments(
        parser,
        wait_quiet_s=0.0,
        wait_quiet_help="before each room count, wait up to this long for other processes to "
        "leave the CPU idle",
    )
    parser.add_argument("--livekit-url", default=None, help="a running server (ws://...)")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--api-secret", default=None)
    parser.add_argument("--metrics-url", default=None, help="the running worker's /metrics")
    parser.add_argument("--worker-pid", type=int, default=None, help="for its CPU and RSS")
    args = parser.parse_args(argv)
    try:
        args.rooms = [int(r) for r in args.rooms.split(",") if r.strip()]
    except ValueError:
        parser.error("--rooms: comma-separated whole numbers")
    if not args.rooms or min(args.rooms) < 1 or args.utterances < 1:
        parser.error("--rooms and --utterances: at least 1")
    if args.livekit_url and not (args.api_key and args.api_secret):
        parser.error("--livekit-url needs --api-key and --api-secret")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    log_dir = Path(tempfile.mkdtemp(prefix="room-bench-"))
    dev: DevServer | None = None
    worker: WorkerProcess | None = None
    try:
        if args.livekit_url:
            http_url = re.sub(r"^ws", "http", args.livekit_url)
            address = ServerAddress(args.livekit_url, http_url, args.api_key, args.api_secret)
            server = cast(DevServer, address)  # the fixtures read only ServerAddress's fields
            probe = WorkerProbe(args.worker_pid, args.metrics_url)
        else:
            dev = server = start_server(log_dir)
            worker = WorkerProcess(server, None, log_dir / "worker.log")
            worker.wait_registered()
            probe = WorkerProbe(worker.process.pid, worker.metrics_url)
            print(f"server {server.url}, worker pid {worker.process.pid}, logs in {log_dir}")
        report = asyncio.run(run(args, server, probe))
    finally:
        if worker is not None:
            worker.stop()
        if dev is not None:
            dev.stop()
    report["total_s"] = time.perf_counter() - began
    print(f"\ntotal {report['total_s']:.0f} s; logs in {log_dir}")
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
