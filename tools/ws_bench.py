"""Load test of the control API's WebSocket streaming on this machine: prints figures, asserts
nothing.

Run from the repository root::

    .venv/bin/python -m tools.ws_bench [--sessions 1,10,50,100] [--duration-s N]
                                       [--json out.json] [--url http://127.0.0.1:8003]
                                       [--wait-quiet SECONDS] [--skip-peer]

Without ``--url`` it starts ``hive-tts serve`` (the default ``config.yaml``: quality sampling of
every 50th utterance, at low priority) on a free loopback port and waits for ``/health``.

For each concurrency level N it opens N WebSocket clients on ``/ws/synthesize``; each speaks one
sentence (from a fixed set of voice-agent sentences, voice ``en-us-male-premium``, engine
``piper``), listens to it like a real-time player, then pauses a random 2-4 s (fixed seed) before
the next one, until the level's time is up. First requests are spread over the first few
seconds. Per request it records:

- **client TTFA**: send -> first ``audio`` message received;
- the server's own ``first_chunk_sent_ms`` and ``ttfa_ms`` from the ``final`` message;
- **underruns as the client hears them**: a listener starts playing at the first chunk and plays
  without pause; a chunk that arrives after everything received before it has finished playing
  is an underrun, and its lateness (arrival - end of the audio already received) is the gap.

Per level it also records the server's CPU (whole process, and split into its event-loop thread,
its low-priority quality thread and the rest: engine workers and ONNX Runtime threads), its peak
RSS, this client's own CPU and event-loop lag, and the CPU other processes used meanwhile (the
machine is shared).

Then: a capacity probe (a few sessions speaking back to back, no pauses: the audio seconds per
second the server can produce through the API), and a peer: Piper's own HTTP server
(``python -m piper.http_server``, needs ``piper-tts[http]``) with the same voice file, given the
same sentences one at a time, against our server given the same sentences on one WebSocket,
interleaved. The peer returns the whole WAV at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import math
import os
import random
import statistics
import sys
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from tools.benchkit.machine import (
    BUSY_OTHER_CORES,
    BYTES_PER_MB,
    DEFAULT_WAIT_QUIET_S,
    ThreadCpu,
    cpu_snapshot,
    process_cpu_s,
    thread_cpu,
    wait_for_quiet,
)
from tools.benchkit.probes import LoopLagProbe, PlaybackClock
from tools.benchkit.processes import (
    ServerProcess,
    free_port,
    health,
    hive_tts_serve_command,
    piper_http_command,
    start_process,
    stopping,
    wait_until_up,
)
from tools.benchkit.report import add_report_arguments, fmt, heading, render_table, write_report
from tools.benchkit.stats import MS_PER_S, P50, P99, PERCENT, percentile, summarize
from tools.benchkit.workloads import PCM16_BYTES_PER_SAMPLE as PCM16_BYTES_PER_SAMPLE
from tools.benchkit.workloads import base64_payload_bytes as base64_payload_bytes
from tools.benchkit.workloads import open_ws, post_timed, ws_exchange

# (PCM16_BYTES_PER_SAMPLE, base64_payload_bytes and Listener are read here by tools/soak.py)
Listener = PlaybackClock

# the workload
DEFAULT_SESSIONS = (1, 10, 50, 100)
DEFAULT_DURATION_S: dict[int, float] = {1: 90.0}
"""Seconds each level sends new requests for; levels not listed get FALLBACK_DURATION_S. One
session gets longer because it makes only one request every ~6 s."""
FALLBACK_DURATION_S = 60.0
PAUSE_RANGE_S = (2.0, 4.0)
"""Pause after the listener has finished playing a reply, before the next request."""
START_SPREAD_S = 6.0
"""Each session's first request goes out at a random time within this many seconds."""
SEED = 20261125
VOICE_ID = "en-us-male-premium"
LANGUAGE = "en"
ENGINE = "piper"
SENTENCES = (
    "Thanks for calling, how can I help you today?",
    "Your order has shipped and should arrive on Thursday.",
    "I'm sorry, I didn't catch that. Could you say it again?",
    "Let me check that for you, it will only take a moment.",
    "Your appointment is confirmed for Tuesday at three in the afternoon.",
    "The next train to the airport leaves at ten forty from platform three.",
    "I've sent a confirmation code to the phone number on your account.",
    "Your current balance is two hundred and twelve dollars.",
    "Is there anything else I can help you with today?",
    "Great, I've booked a table for four at seven thirty tonight.",
)
WARMUP_REQUESTS = 3
"""Requests on one connection before the first level, discarded."""
CAPACITY_SESSIONS = 4
"""Sessions speaking back to back in the capacity probe: enough to keep every engine worker
busy (two Piper workers, each utterance synthesizing one piece at a time)."""
CAPACITY_S = 20.0
PEER_PASSES = 2
"""Passes over the sentences for the peer comparison (after PEER_WARMUP discarded requests)."""
PEER_WARMUP = 2

# bounds: every wait ends by itself
HEALTH_POLL_S = 0.25
CONNECT_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 60.0
"""Longest wait for one reply to finish; longer counts as an error (``timeout``)."""
SESSIONS_DRAIN_TIMEOUT_S = 15.0
"""Longest wait for the server to report no active sessions before a level starts."""
RSS_POLL_S = 0.25
QUEUE_POLL_S = 1.0

# targets (issue 4), on this machine
TARGET_ONE_SESSION_P50_MS = 70.0
TARGET_ONE_SESSION_P95_MS = 120.0
TARGET_LOADED_SESSIONS = 100
TARGET_LOADED_P95_MS = 250.0
TARGET_LOADED_UNDERRUNS = 0


# ---------------------------------------------------------------------------------------------
# samples


@dataclass
class RequestSample:
    sessions: int
    sentence: int
    client_ttfa_ms: float | None = None
    """Send -> first audio message received, as the client sees it."""
    total_ms: float | None = None
    """Send -> final message received."""
    server_first_chunk_sent_ms: float | None = None
    server_ttfa_ms: float | None = None
    server_underruns: int | None = None
    audio_s: float = 0.0
    chunks: int = 0
    underruns: int = 0
    """Chunks that arrived after the audio received before them had finished playing."""
    largest_gap_ms: float = 0.0
    listener_end: float | None = None
    """perf_counter() when a real-time listener has played everything (gaps included)."""
    sent_at: float = 0.0
    """perf_counter() at sending; seconds since the level started once the level is over."""
    in_flight_at_send: int = 0
    """Other replies of the level still arriving (sent, final not yet received) at sending."""
    error: str | None = None


def request_message(text: str, request_id: str) -> dict[str, Any]:
    return {
        "text": text,
        "voice_id": VOICE_ID,
        "language": LANGUAGE,
        "engine": ENGINE,
        "stream": True,
        "request_id": request_id,
    }


async def speak_once(
    ws: aiohttp.ClientWebSocketResponse, sample: RequestSample, request_id: str
) -> RequestSample:
    """Send one request and read its reply to the final message; fills ``sample``."""
    message = request_message(SENTENCES[sample.sentence], request_id)
    reply = await ws_exchange(ws, [message], request_id, timeout_s=REQUEST_TIMEOUT_S)
    sample.sent_at = reply.sent_at
    sample.client_ttfa_ms = reply.ttfa_ms
    sample.total_ms = reply.total_ms
    sample.server_first_chunk_sent_ms = reply.final.get("first_chunk_sent_ms")
    sample.server_ttfa_ms = reply.final.get("ttfa_ms")
    sample.server_underruns = reply.final.get("underruns")
    sample.audio_s = reply.audio_s
    sample.chunks = reply.chunks
    sample.underruns = reply.underruns
    sample.largest_gap_ms = reply.largest_gap_ms
    sample.listener_end = reply.playback_end
    sample.error = reply.error
    return sample


# ---------------------------------------------------------------------------------------------
# CPU and memory of the server, this client and everyone else


@dataclass(frozen=True)
class Snapshot:
    wall: float
    machine_busy_s: float
    steal_s: float
    client_s: float
    server_s: float
    server_threads: dict[int, ThreadCpu]


def snapshot(server: psutil.Process | None) -> Snapshot:
    machine = cpu_snapshot()  # the whole machine (all processes) and this process
    return Snapshot(
        wall=machine.wall_s,
        machine_busy_s=machine.busy_s,
        steal_s=machine.steal_s,
        client_s=machine.own_s,
        server_s=process_cpu_s(server),
        server_threads={} if server is None else thread_cpu(server.pid),
    )


def cpu_between(start: Snapshot, end: Snapshot, server_pid: int | None) -> dict[str, float]:
    """Average cores used between two snapshots, by whom."""
    wall = max(end.wall - start.wall, 1e-9)
    server = (end.server_s - start.server_s) / wall
    client = (end.client_s - start.client_s) / wall
    groups = {"event_loop": 0.0, "low_priority": 0.0, "workers": 0.0}
    for tid, now in end.server_threads.items():
        before = start.server_threads.get(tid)
        used = (now.cpu_s - (before.cpu_s if before else 0.0)) / wall
        if tid == server_pid:
            groups["event_loop"] += used
        elif now.nice > 0:
            groups["low_priority"] += used
        else:
            groups["workers"] += used
    return {
        "wall_s": wall,
        "server_cores": server,
        "server_event_loop_cores": groups["event_loop"],
        "server_low_priority_cores": groups["low_priority"],
        "server_worker_cores": groups["workers"],
        "client_cores": client,
        "other_cores": max(
            0.0, (end.machine_busy_s - start.machine_busy_s) / wall - server - client
        ),
        "steal_cores": (end.steal_s - start.steal_s) / wall,
    }


class Sampler:
    """Peak RSS of the server, its engine queue (``/health`` ``queue_depth``: syntheses waiting
    for an engine thread) and the client's event-loop lag, sampled while a level runs."""

    def __init__(
        self, server: psutil.Process | None, http: aiohttp.ClientSession, health_url: str
    ) -> None:
        self._server = server
        self._http = http
        self._health_url = health_url
        self.peak_rss_mb = 0.0
        self.queue_depths: list[int] = []
        self._lag = LoopLagProbe()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def lags_ms(self) -> list[float]:
        return self._lag.lags_ms

    async def _queue(self) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with self._http.get(self._health_url) as response:
                    body = await response.json()
                    self.queue_depths.append(int(body.get("queue_depth") or 0))
            await asyncio.sleep(QUEUE_POLL_S)

    async def _rss(self) -> None:
        if self._server is None:
            return
        while True:
            with contextlib.suppress(psutil.Error):
                rss = float(self._server.memory_info().rss) / BYTES_PER_MB
                self.peak_rss_mb = max(self.peak_rss_mb, rss)
            await asyncio.sleep(RSS_POLL_S)

    def __enter__(self) -> Sampler:
        self._lag.start()
        self._tasks = [asyncio.create_task(self._rss()), asyncio.create_task(self._queue())]
        return self

    def __exit__(self, *exc: object) -> None:
        self._lag.stop()
        for task in self._tasks:
            task.cancel()


# ---------------------------------------------------------------------------------------------
# servers


async def wait_sessions_closed(http: aiohttp.ClientSession, server: ServerProcess) -> int:
    """Wait (bounded) until the server reports no active sessions; the count left."""
    deadline = time.perf_counter() + SESSIONS_DRAIN_TIMEOUT_S
    active = -1
    while time.perf_counter() < deadline:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            active = int((await health(http, server.url)).get("active_sessions", 0))
            if active == 0:
                return 0
        await asyncio.sleep(HEALTH_POLL_S)
    return active


# ---------------------------------------------------------------------------------------------
# one concurrency level


@dataclass
class LevelReport:
    sessions: int
    duration_s: float
    connected: int
    requests: int
    errors: int
    error_kinds: dict[str, int]
    client_ttfa_ms: dict[str, float]
    server_first_chunk_sent_ms: dict[str, float]
    server_ttfa_ms: dict[str, float]
    underruns: int
    requests_with_underrun_pct: float
    largest_gap_ms: float
    server_underruns: int
    audio_s_mean: float
    delivered_audio_s_per_s: float
    offered_audio_s_per_s: float
    """N x mean audio / (mean audio + mean pause): what the sessions ask for if every reply
    came at once and played without gaps (an upper bound of the closed-loop demand)."""
    server_peak_rss_mb: float
    queue_depth: dict[str, float]
    """``/health`` queue_depth sampled once a second: pieces waiting for an engine thread."""
    client_loop_lag_ms: dict[str, float]
    cpu: dict[str, float]
    cpu_before: dict[str, float] = field(default_factory=dict)
    """Other processes' CPU just before the level (after waiting for quiet)."""
    raw: list[dict[str, Any]] = field(default_factory=list)


async def connect(
    http: aiohttp.ClientSession, server: ServerProcess
) -> aiohttp.ClientWebSocketResponse | str:
    try:
        return await open_ws(http, server.url, close_timeout_s=CONNECT_TIMEOUT_S)
    except (aiohttp.ClientError, TimeoutError) as exc:
        status = getattr(exc, "status", None)
        return f"connect_{status}" if status else f"connect_{type(exc).__name__}"


async def session_loop(
    ws: aiohttp.ClientWebSocketResponse,
    index: int,
    sessions: int,
    rng: random.Random,
    deadline: float,
    pause: bool,
    out: list[RequestSample],
) -> None:
    """One client: requests until ``deadline``, with a listener's pause between them."""
    if pause:
        await asyncio.sleep(rng.uniform(0.0, START_SPREAD_S))
    number = 0
    while time.perf_counter() < deadline:
        sample = RequestSample(sessions=sessions, sentence=rng.randrange(len(SENTENCES)))
        number += 1
        await speak_once(ws, sample, f"s{index}-r{number}")
        out.append(sample)
        if sample.error is not None and ws.closed:
            return
        if not pause:
            continue
        played = sample.listener_end or time.perf_counter()
        wake = max(played, time.perf_counter()) + rng.uniform(*PAUSE_RANGE_S)
        if wake >= deadline:
            return
        await asyncio.sleep(wake - time.perf_counter())


async def run_level(
    http: aiohttp.ClientSession,
    server: ServerProcess,
    sessions: int,
    duration_s: float,
    rng: random.Random,
    *,
    pause: bool = True,
) -> tuple[list[RequestSample], dict[str, float], Sampler, int, dict[str, int]]:
    """Run ``sessions`` clients for ``duration_s``; samples, CPU use, sampler, connected."""
    attempts = await asyncio.gather(*(connect(http, server) for _ in range(sessions)))
    sockets = [a for a in attempts if not isinstance(a, str)]
    connect_errors: dict[str, int] = {}
    for attempt in attempts:
        if isinstance(attempt, str):
            connect_errors[attempt] = connect_errors.get(attempt, 0) + 1
    samples: list[RequestSample] = []
    server_ps = server.ps
    start = snapshot(server_ps)
    deadline = time.perf_counter() + duration_s
    try:
        with Sampler(server_ps, http, server.url + "/health") as sampler:
            rngs = [random.Random(rng.random()) for _ in sockets]
            await asyncio.gather(
                *(
                    session_loop(ws, i, sessions, rngs[i], deadline, pause, samples)
                    for i, ws in enumerate(sockets)
                )
            )
        end = snapshot(server_ps)
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    cpu = cpu_between(start, end, None if server_ps is None else server_ps.pid)
    mark_in_flight(samples, start.wall)
    return samples, cpu, sampler, len(sockets), connect_errors


def mark_in_flight(samples: list[RequestSample], level_start: float) -> None:
    """Fill ``in_flight_at_send`` and make ``sent_at`` relative to the level's start."""
    spans = [
        (s.sent_at, s.sent_at + (s.total_ms if s.total_ms is not None else math.inf) / MS_PER_S)
        for s in samples
    ]
    for i, sample in enumerate(samples):
        sample.in_flight_at_send = sum(
            1 for j, (begin, end) in enumerate(spans) if j != i and begin < sample.sent_at < end
        )
    for sample in samples:
        sample.sent_at -= level_start


IN_FLIGHT_BUCKETS = ((0, 0), (1, 1), (2, 2), (3, 5), (6, 20), (21, 10**9))
"""Buckets of other replies in flight at sending, for the TTFA-by-contention table."""


def print_in_flight(levels: Sequence[LevelReport]) -> None:
    heading("Client TTFA (ms) by how many other replies were still arriving when it was sent")
    rows: list[list[str]] = []
    for level in levels:
        for low, high in IN_FLIGHT_BUCKETS:
            values = [
                float(s["client_ttfa_ms"])
                for s in level.raw
                if s["error"] is None and low <= s["in_flight_at_send"] <= high
            ]
            if not values:
                continue
            label = str(low) if low == high else f"{low}+" if high >= 10**9 else f"{low}-{high}"
            summary = summarize(values)
            rows.append(
                [
                    str(level.sessions),
                    label,
                    str(len(values)),
                    fmt(summary["p50"]),
                    fmt(summary["p95"]),
                    fmt(summary["max"]),
                ]
            )
    print(render_table(["sessions", "others in flight", "n", "p50", "p95", "max"], rows))


def summarize_level(
    sessions: int,
    duration_s: float,
    samples: list[RequestSample],
    cpu: dict[str, float],
    sampler: Sampler,
    connected: int,
    connect_errors: dict[str, int],
) -> LevelReport:
    ok = [s for s in samples if s.error is None]
    kinds = dict(connect_errors)
    for s in samples:
        if s.error is not None:
            kinds[s.error] = kinds.get(s.error, 0) + 1
    audio = [s.audio_s for s in ok]
    audio_mean = statistics.fmean(audio) if audio else math.nan
    pause_mean = statistics.fmean(PAUSE_RANGE_S)
    return LevelReport(
        sessions=sessions,
        duration_s=duration_s,
        connected=connected,
        requests=len(samples),
        errors=sum(kinds.values()),
        error_kinds=kinds,
        client_ttfa_ms=summarize([s.client_ttfa_ms for s in ok if s.client_ttfa_ms is not None]),
        server_first_chunk_sent_ms=summarize(
            [s.server_first_chunk_sent_ms for s in ok if s.server_first_chunk_sent_ms is not None]
        ),
        server_ttfa_ms=summarize([s.server_ttfa_ms for s in ok if s.server_ttfa_ms is not None]),
        underruns=sum(s.underruns for s in ok),
        requests_with_underrun_pct=(
            sum(1 for s in ok if s.underruns) / len(ok) * PERCENT if ok else math.nan
        ),
        largest_gap_ms=max((s.largest_gap_ms for s in ok), default=0.0),
        server_underruns=sum(s.server_underruns or 0 for s in ok),
        audio_s_mean=audio_mean,
        delivered_audio_s_per_s=sum(audio) / cpu["wall_s"],
        offered_audio_s_per_s=sessions * audio_mean / (audio_mean + pause_mean),
        server_peak_rss_mb=sampler.peak_rss_mb,
        queue_depth={
            "mean": statistics.fmean(sampler.queue_depths) if sampler.queue_depths else math.nan,
            "max": max(sampler.queue_depths, default=0),
        },
        client_loop_lag_ms={
            "p50": percentile(sampler.lags_ms, P50) if sampler.lags_ms else math.nan,
            "p99": percentile(sampler.lags_ms, P99) if sampler.lags_ms else math.nan,
            "max": max(sampler.lags_ms, default=math.nan),
        },
        cpu=cpu,
        raw=[asdict(s) for s in samples],
    )


def print_levels(levels: Sequence[LevelReport]) -> None:
    heading("Latency and underruns per level (ms; client = send -> first audio message received)")
    print(
        render_table(
            [
                "sessions",
                "requests",
                "errors",
                "client p50",
                "client p95",
                "client max",
                "srv sent p50",
                "srv sent p95",
                "srv ttfa p50",
                "underruns",
                "req w/ underrun",
                "largest gap",
                "srv-counted underruns",
            ],
            [
                [
                    str(r.sessions),
                    str(r.requests),
                    str(r.errors),
                    fmt(r.client_ttfa_ms["p50"]),
                    fmt(r.client_ttfa_ms["p95"]),
                    fmt(r.client_ttfa_ms["max"]),
                    fmt(r.server_first_chunk_sent_ms["p50"]),
                    fmt(r.server_first_chunk_sent_ms["p95"]),
                    fmt(r.server_ttfa_ms["p50"]),
                    str(r.underruns),
                    f"{fmt(r.requests_with_underrun_pct)}%",
                    fmt(r.largest_gap_ms),
                    str(r.server_underruns),
                ]
                for r in levels
            ],
        )
    )
    print(
        "srv sent = the final message's first_chunk_sent_ms (request received -> first audio "
        "message written); srv ttfa = its ttfa_ms\n(first chunk ready). largest gap = the "
        "latest a chunk came after the audio received before it had finished playing."
    )
    errors = {r.sessions: r.error_kinds for r in levels if r.error_kinds}
    if errors:
        print(f"errors by kind: {errors}")
    heading(
        "Load and resources per level (average cores over the level; the machine has "
        f"{psutil.cpu_count()} logical CPUs)"
    )
    print(
        render_table(
            [
                "sessions",
                "wall s",
                "audio s/req",
                "offered audio s/s",
                "delivered audio s/s",
                "engine queue mean/max",
                "server cores",
                "event loop",
                "workers",
                "low-prio",
                "server peak RSS MB",
                "client cores",
                "client lag p99 ms",
                "other procs",
                "steal",
            ],
            [
                [
                    str(r.sessions),
                    fmt(r.cpu["wall_s"]),
                    fmt(r.audio_s_mean, 2),
                    fmt(r.offered_audio_s_per_s),
                    fmt(r.delivered_audio_s_per_s),
                    f"{fmt(r.queue_depth['mean'])}/{r.queue_depth['max']:.0f}",
                    fmt(r.cpu["server_cores"], 2),
                    fmt(r.cpu["server_event_loop_cores"], 2),
                    fmt(r.cpu["server_worker_cores"], 2),
                    fmt(r.cpu["server_low_priority_cores"], 2),
                    fmt(r.server_peak_rss_mb, 0),
                    fmt(r.cpu["client_cores"], 2),
                    fmt(r.client_loop_lag_ms["p99"]),
                    fmt(r.cpu["other_cores"], 2)
                    + (" <-- contended" if r.cpu["other_cores"] > BUSY_OTHER_CORES else ""),
                    fmt(r.cpu["steal_cores"], 2),
                ]
                for r in levels
            ],
        )
    )
    print(
        "offered = sessions x audio per reply / (audio per reply + mean pause "
        f"{statistics.fmean(PAUSE_RANGE_S):.1f} s): the demand if replies came instantly;\n"
        "delivered = audio seconds received / wall s. engine queue = /health queue_depth "
        "(pieces waiting for an engine thread), polled once a second.\n"
        "event loop = the server's main thread; low-prio = its niced threads (quality scoring); "
        "workers = every other server thread\n(engine workers, ONNX Runtime). client = this "
        "load generator (same machine)."
    )


# ---------------------------------------------------------------------------------------------
# the peer: Piper's own HTTP server


@dataclass(frozen=True)
class PeerSample:
    sentence: int
    first_byte_ms: float
    full_ms: float
    audio_s: float


async def peer_request(
    http: aiohttp.ClientSession, peer: ServerProcess, sentence: int
) -> PeerSample:
    body = {"text": SENTENCES[sentence]}
    reply = await post_timed(http, peer.url + "/synthesize", body, timeout_s=REQUEST_TIMEOUT_S)
    with wave.open(io.BytesIO(reply.body), "rb") as wav:
        audio_s = wav.getnframes() / wav.getframerate()
    return PeerSample(sentence, reply.first_byte_ms, reply.total_ms, audio_s)


async def run_peer(
    http: aiohttp.ClientSession, ours: ServerProcess, peer: ServerProcess
) -> dict[str, Any]:
    """The sentences one at a time to the peer and to us (one WebSocket), interleaved."""
    peer_samples: list[PeerSample] = []
    our_samples: list[RequestSample] = []
    ws = await open_ws(http, ours.url)
    try:
        for i in range(PEER_WARMUP):
            await peer_request(http, peer, i)
            await speak_once(ws, RequestSample(sessions=1, sentence=i), f"peer-warm-{i}")
        for n in range(PEER_PASSES):
            for i in range(len(SENTENCES)):
                peer_samples.append(await peer_request(http, peer, i))
                our_samples.append(
                    await speak_once(ws, RequestSample(sessions=1, sentence=i), f"peer-{n}-{i}")
                )
    finally:
        await ws.close()
    ok = [s for s in our_samples if s.error is None]
    return {
        "peer_first_byte_ms": summarize([s.first_byte_ms for s in peer_samples]),
        "peer_full_ms": summarize([s.full_ms for s in peer_samples]),
        "peer_audio_s_mean": statistics.fmean(s.audio_s for s in peer_samples),
        "ours_client_ttfa_ms": summarize([s.client_ttfa_ms for s in ok if s.client_ttfa_ms]),
        "ours_full_ms": summarize([s.total_ms for s in ok if s.total_ms]),
        "ours_audio_s_mean": statistics.fmean(s.audio_s for s in ok) if ok else math.nan,
        "ours_errors": len(our_samples) - len(ok),
        "raw_peer": [asdict(s) for s in peer_samples],
        "raw_ours": [asdict(s) for s in our_samples],
    }


def print_peer(peer: dict[str, Any], one_session: LevelReport | None) -> None:
    heading(
        f"Peer: Piper's own HTTP server, same voice file, same {len(SENTENCES)} sentences, "
        f"one at a time x{PEER_PASSES} (ms)"
    )
    rows = [
        [
            "piper.http_server POST /synthesize (whole WAV)",
            str(peer["peer_first_byte_ms"]["n"]),
            fmt(peer["peer_first_byte_ms"]["p50"]),
            fmt(peer["peer_first_byte_ms"]["p95"]),
            fmt(peer["peer_full_ms"]["p50"]),
            fmt(peer["peer_full_ms"]["p95"]),
            fmt(peer["peer_audio_s_mean"], 2),
        ],
        [
            "hive-tts WS, back to back (first audio message)",
            str(peer["ours_client_ttfa_ms"]["n"]),
            fmt(peer["ours_client_ttfa_ms"]["p50"]),
            fmt(peer["ours_client_ttfa_ms"]["p95"]),
            fmt(peer["ours_full_ms"]["p50"]),
            fmt(peer["ours_full_ms"]["p95"]),
            fmt(peer["ours_audio_s_mean"], 2),
        ],
    ]
    if one_session is not None:
        rows.append(
            [
                "hive-tts WS, 1-session level (with pauses)",
                str(one_session.client_ttfa_ms["n"]),
                fmt(one_session.client_ttfa_ms["p50"]),
                fmt(one_session.client_ttfa_ms["p95"]),
                "-",
                "-",
                fmt(one_session.audio_s_mean, 2),
            ]
        )
    print(
        render_table(
            ["server", "n", "first byte/audio p50", "p95", "full reply p50", "p95", "audio s"], rows
        )
    )
    peer_p50 = peer["peer_first_byte_ms"]["p50"]
    ratios = [f"vs back to back {peer_p50 / peer['ours_client_ttfa_ms']['p50']:.2f}x"]
    if one_session is not None:
        ours_p50 = one_session.client_ttfa_ms["p50"]
        ratios.insert(0, f"vs the 1-session level {peer_p50 / ours_p50:.2f}x")
    print(
        "peer first-byte p50 / our client TTFA p50: "
        + ", ".join(ratios)
        + f"\n(the peer answers at its model's {peer['peer_audio_s_mean']:.2f} s of 22.05 kHz "
        "audio in one body, so its first byte comes when synthesis is complete; ours is the "
        "first piece at 48 kHz)"
    )


# ---------------------------------------------------------------------------------------------


def print_targets(levels: Sequence[LevelReport]) -> dict[str, Any]:
    verdicts: dict[str, Any] = {}
    by_n = {r.sessions: r for r in levels}
    heading("Against the targets")
    one = by_n.get(1)
    if one is not None:
        p50, p95 = one.client_ttfa_ms["p50"], one.client_ttfa_ms["p95"]
        verdicts["one_session_p50"] = p50 <= TARGET_ONE_SESSION_P50_MS
        verdicts["one_session_p95"] = p95 <= TARGET_ONE_SESSION_P95_MS
        print(
            f"1 session: client TTFA p50 {p50:.1f} ms (target <= {TARGET_ONE_SESSION_P50_MS:.0f})"
            f" {'met' if verdicts['one_session_p50'] else 'MISSED'}; p95 {p95:.1f} ms "
            f"(target <= {TARGET_ONE_SESSION_P95_MS:.0f}) "
            f"{'met' if verdicts['one_session_p95'] else 'MISSED'}"
        )
    loaded = by_n.get(TARGET_LOADED_SESSIONS)
    if loaded is not None:
        p95 = loaded.client_ttfa_ms["p95"]
        verdicts["loaded_p95"] = p95 <= TARGET_LOADED_P95_MS
        verdicts["loaded_underruns"] = loaded.underruns <= TARGET_LOADED_UNDERRUNS
        print(
            f"{TARGET_LOADED_SESSIONS} sessions: client TTFA p95 {p95:.1f} ms (target <= "
            f"{TARGET_LOADED_P95_MS:.0f}) {'met' if verdicts['loaded_p95'] else 'MISSED'}; "
            f"underruns {loaded.underruns} in {loaded.requests_with_underrun_pct:.1f}% of "
            f"requests (target {TARGET_LOADED_UNDERRUNS}) "
            f"{'met' if verdicts['loaded_underruns'] else 'MISSED'}; errors {loaded.errors}"
        )
    return verdicts


async def warm_up(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    ws = await open_ws(http, server.url)
    try:
        for i in range(WARMUP_REQUESTS):
            sample = await speak_once(ws, RequestSample(sessions=1, sentence=i), f"warm-{i}")
            if sample.error is not None:
                raise RuntimeError(f"warm-up request failed: {sample.error}")
    finally:
        await ws.close()


@contextlib.asynccontextmanager
async def client_session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)  # no pool cap: each WebSocket is a connection
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S)
    ) as http:
        yield http


async def run(args: argparse.Namespace) -> dict[str, Any]:
    began = time.perf_counter()
    report: dict[str, Any] = {
        "sessions": args.sessions,
        "pause_range_s": PAUSE_RANGE_S,
        "voice_id": VOICE_ID,
        "engine": ENGINE,
        "sentences": SENTENCES,
        "seed": SEED,
        "load_average_at_start": os.getloadavg(),
    }
    rng = random.Random(SEED)
    servers: list[ServerProcess] = []
    log_dir = Path(tempfile.mkdtemp(prefix="ws-bench-"))
    with stopping(servers):
        async with client_session() as http:
            quiet = wait_for_quiet(args.wait_quiet, [])
            report["cpu_before_start"] = quiet
            print(
                f"before starting, other processes used {quiet['other_cores']:.2f} cores "
                f"(host steal {quiet['steal_cores']:.2f}, load average "
                f"{quiet['load_average_1min']:.2f})",
                flush=True,
            )
            if args.url:
                ours = ServerProcess("hive-tts", args.url.rstrip("/"), None, None)
                print(f"using the running server at {ours.url} (its CPU is not measured)")
            else:
                port = free_port()
                command = hive_tts_serve_command(port)
                ours = start_process("hive-tts", command, log_dir, port)
                servers.append(ours)
                print(f"started: {' '.join(command)} (log {ours.log_path})", flush=True)
            up_s = await wait_until_up(http, ours, "/health")
            info = await health(http, ours.url)
            report["server_health"] = {k: info.get(k) for k in ("status", "problems", "engines")}
            print(
                f"/health answered after {up_s:.1f} s: status {info.get('status')}, "
                f"problems {info.get('problems')}",
                flush=True,
            )
            await warm_up(http, ours)
            levels: list[LevelReport] = []
            for n in args.sessions:
                duration = args.duration_s or DEFAULT_DURATION_S.get(n, FALLBACK_DURATION_S)
                left = await wait_sessions_closed(http, ours)
                quiet = wait_for_quiet(args.wait_quiet, [p for p in [ours.ps] if p])
                print(
                    f"\n-- {n} sessions for {duration:.0f} s (server sessions still open "
                    f"before: {left}; other processes {quiet['other_cores']:.2f} cores)",
                    flush=True,
                )
                result = await run_level(http, ours, n, duration, rng)
                level = summarize_level(n, duration, *result)
                level.cpu_before = quiet
                levels.append(level)
                print(
                    f"   {level.requests} requests, {level.errors} errors, client TTFA p50 "
                    f"{fmt(level.client_ttfa_ms['p50'])} p95 {fmt(level.client_ttfa_ms['p95'])}"
                    f" ms, underruns {level.underruns}; server {level.cpu['server_cores']:.2f}"
                    f" cores, other processes {level.cpu['other_cores']:.2f}",
                    flush=True,
                )
            report["levels"] = [asdict(r) for r in levels]
            print_levels(levels)
            print_in_flight(levels)

            await wait_sessions_closed(http, ours)
            wait_for_quiet(args.wait_quiet, [p for p in [ours.ps] if p])
            samples, cpu, _, _, _ = await run_level(
                http, ours, CAPACITY_SESSIONS, CAPACITY_S, rng, pause=False
            )
            ok = [s for s in samples if s.error is None]
            capacity: dict[str, Any] = {
                "sessions": CAPACITY_SESSIONS,
                "requests": len(samples),
                "errors": len(samples) - len(ok),
                "audio_s_per_s": sum(s.audio_s for s in ok) / cpu["wall_s"],
                "client_ttfa_ms": summarize([s.client_ttfa_ms for s in ok if s.client_ttfa_ms]),
                "cpu": cpu,
            }
            report["capacity"] = capacity
            heading(
                f"Capacity: {CAPACITY_SESSIONS} sessions back to back (no pauses) for "
                f"{CAPACITY_S:.0f} s"
            )
            print(
                f"{capacity['audio_s_per_s']:.2f} audio s per wall s over {len(ok)} replies "
                f"({capacity['errors']} errors); client TTFA p50 "
                f"{fmt(capacity['client_ttfa_ms']['p50'])} ms; server "
                f"{cpu['server_cores']:.2f} cores (event loop "
                f"{cpu['server_event_loop_cores']:.2f}), client {cpu['client_cores']:.2f}, "
                f"other processes {cpu['other_cores']:.2f}"
            )
            for level in levels:
                print(
                    f"  {level.sessions} sessions offered {level.offered_audio_s_per_s:.1f} "
                    f"audio s/s = {level.offered_audio_s_per_s / capacity['audio_s_per_s']:.2f}"
                    "x capacity"
                )

            one = next((r for r in levels if r.sessions == 1), None)
            peer: ServerProcess | None = None
            if not args.skip_peer:
                port = free_port()
                command = piper_http_command(port)
                peer = start_process("piper-http", command, log_dir, port)
                servers.append(peer)
                try:
                    await wait_until_up(http, peer, "/info")
                except RuntimeError as exc:  # e.g. piper-tts[http] (Flask) not installed
                    print(
                        f"\npeer skipped: {exc}\n(install it with: .venv/bin/pip install "
                        "'piper-tts[http]')",
                        flush=True,
                    )
                    report["peer"] = {"skipped": str(exc)}
                    peer = None
            if peer is not None:
                await wait_sessions_closed(http, ours)
                wait_for_quiet(args.wait_quiet, [p for p in [ours.ps, peer.ps] if p])
                peer_ps, ours_ps = peer.ps, ours.ps
                start, ours_start = snapshot(peer_ps), process_cpu_s(ours_ps)
                report["peer"] = await run_peer(http, ours, peer)
                end, ours_end = snapshot(peer_ps), process_cpu_s(ours_ps)
                cpu = cpu_between(start, end, None)
                ours_cores = (ours_end - ours_start) / cpu["wall_s"]
                cpu["other_cores"] = max(0.0, cpu["other_cores"] - ours_cores)
                cpu["hive_tts_server_cores"] = ours_cores
                report["peer"]["cpu"] = cpu
                print_peer(report["peer"], one)
                print(
                    f"during the comparison: peer {cpu['server_cores']:.2f} cores, hive-tts "
                    f"{ours_cores:.2f}, other processes {cpu['other_cores']:.2f}"
                )
            report["targets"] = print_targets(levels)
    report["total_s"] = time.perf_counter() - began
    print(f"\ntotal {report['total_s']:.0f} s; server logs in {log_dir}")
    return report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.ws_bench", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--sessions",
        default=",".join(map(str, DEFAULT_SESSIONS)),
        help="comma-separated concurrency levels (default %(default)s)",
    )
    parser.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help="seconds each level sends requests for (default: 1 session "
        f"{DEFAULT_DURATION_S[1]:.0f}, others {FALLBACK_DURATION_S:.0f})",
    )
    parser.add_argument(
        "--url", default=None, help="use this running server instead of starting one"
    )
    parser.add_argument("--skip-peer", action="store_true", help="skip Piper's HTTP server")
    add_report_arguments(
        parser,
        wait_quiet_s=DEFAULT_WAIT_QUIET_S,
        wait_quiet_help="before starting and before each phase, wait up to this long for other "
        "processes to leave the CPU idle",
    )
    args = parser.parse_args(argv)
    try:
        args.sessions = [int(s) for s in args.sessions.split(",") if s.strip()]
    except ValueError:
        parser.error("--sessions: comma-separated whole numbers")
    if not args.sessions or min(args.sessions) < 1:
        parser.error("--sessions: at least one level, each at least 1")
    if args.duration_s is not None and args.duration_s <= 0:
        parser.error("--duration-s must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = asyncio.run(run(args))
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
