"""The design's command-line test tool: time to first audio, whole replies, load with real
pauses, quality and rooms, against any running HIVE TTS service, local or remote.

Run from the repository root::

    .venv/bin/python -m tools.test_tts [--url http://127.0.0.1:8003] [--api-key KEY]
        [--benchmark] [--iterations N] [--stress] [--connections N[,N...]] [--duration S]
        [--quality] [--rooms N] [--all] [--compare URL]
        [--engines piper,espeak-ng] [--languages en,ja]
        [--json FILE] [--plot DIR] [--fail-over NAME=VALUE ...] [--fail-under NAME=VALUE ...]

- ``--benchmark``: per engine and language (from ``GET /voices``: the first voice each engine can
  speak now in each language), ``--iterations`` replies over each of ``WS /ws/synthesize``,
  ``POST /synthesize`` (WAV) and ``POST /v1/audio/speech`` (pcm; its engine is the router's
  choice for the voice), interleaved, after one discarded warm-up reply each. Time to first
  audio (the first audio message, or the first bytes of the body) and to the whole reply, with
  p50, p95 and p99.
- ``--stress``: ``--connections`` WebSocket sessions for ``--duration`` seconds each level; every
  session speaks a reply, listens to it like a real-time player (a playback clock per session:
  audio that arrives after what came before it has finished playing is an underrun), then
  thinks for a random ``--think-time`` before the next. Refusals (429 at the handshake, or an
  error message with ``retry_after_s``) are counted apart from errors, with their
  ``Retry-After``, and the session tries again when told to.
- ``--quality``: DNSMOS (the service's own ``api.quality.QualityScorer``) and a whisper round
  trip (word error rate; character error rate for Japanese) per engine and language, for the
  whole text sent in one request against the same text streamed in word by word
  (``{"type": "text"}`` messages, then ``flush``), as a translator or an LLM sends it.
- ``--rooms N``: with a LiveKit server (``--livekit-url``, ``--livekit-api-key``,
  ``--livekit-api-secret``, or ``LIVEKIT_URL`` / ``LIVEKIT_API_KEY`` / ``LIVEKIT_API_SECRET``):
  N rooms with a listener each, ``POST /rooms/{room}/speak`` to all of them at once,
  ``--iterations`` times; time from the POST to the first audible frame at the listener.
- ``--compare URL``: the same texts, interleaved, against a peer in the same run: Piper's own
  HTTP server (``POST /synthesize``, the whole WAV), an OpenAI-compatible server such as
  loudness-tts (``POST /v1/audio/speech``), or another HIVE TTS (all three protocols). Prints
  ours / peer ratios.
- ``--all``: benchmark, stress, quality, and rooms when a LiveKit server is given.

A progress bar runs on stderr; tables come at the end. The exit status is 0 whatever the figures,
unless a threshold is given and crossed (1): ``--fail-over ws_ttfa_p95_ms=300 --fail-over
errors=0 --fail-under dnsmos_min=3``. A threshold on a figure this run did not measure fails too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import math
import os
import random
import signal
import sys
import time
import uuid
import wave
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np
from tqdm import tqdm

from tools.benchkit.probes import LoopLagProbe
from tools.benchkit.report import fmt, heading, render_table, write_report
from tools.benchkit.stats import MS_PER_S, P50, P99, percentile, summarize
from tools.benchkit.workloads import (
    PCM16_BYTES_PER_SAMPLE,
    REPLIES,
    HttpReply,
    WsReply,
    open_ws,
    post_timed,
    ws_exchange,
)

DEFAULT_URL = "http://127.0.0.1:8003"
DEFAULT_ITERATIONS = 10
DEFAULT_CONNECTIONS = (10,)
DEFAULT_DURATION_S = 30.0
DEFAULT_THINK_S = (2.0, 4.0)
"""Pause after a reply has finished playing, before the session's next request."""
START_SPREAD_S = 6.0
"""Each stress session's first request goes out at a random time within this many seconds (at
most half the level's duration)."""
WARMUP_REPLIES = 1
"""Discarded replies per protocol and case before measuring."""
DEFAULT_QUALITY_TEXTS = 2
SEED = 20261202
OPENAI_SAMPLE_RATE_HZ = 24_000
"""``POST /v1/audio/speech`` pcm is 24 kHz mono int16, as OpenAI's."""
OPENAI_MODEL = "tts-1"
DEFAULT_PEER_VOICE = "alloy"
REQUEST_TIMEOUT_S = 60.0
IDLE_RECONNECT_S = 10.0
ROOM_TAIL_S = 0.5
"""After a room's reply has finished, the time its last frames take to reach the listener."""
BROKEN_CONNECTION = frozenset(
    {
        "timeout",
        "ClientConnectionResetError",
        "ClientConnectionError",
        "ConnectionResetError",
        "ServerDisconnectedError",
        "RuntimeError",
    }
)
"""A WebSocket left unread longer than this is replaced before use: the service pings every
20 s, and an unread aiohttp socket never answers, so the service closes it."""
CONNECT_TIMEOUT_S = 30.0
ROOM_SPEECH_TIMEOUT_S = 60.0
ROOM_POLL_S = 0.02
ROOM_JOIN_CONCURRENCY = 8
CHARACTER_LANGUAGES = frozenset({"ja", "zh"})
"""Scored by character error rate, and streamed in characters: no spaces between words."""
CHARACTERS_PER_TOKEN = 2
"""Streamed text in those languages comes this many characters at a time (an LLM's token)."""
REFUSED_STATUS = HTTPStatus.TOO_MANY_REQUESTS
EXIT_OK = 0
EXIT_THRESHOLD_CROSSED = 1
EXIT_INTERRUPTED = 130
"""As a shell reports a command ended by SIGINT."""
PROGRESS_TICK_S = 0.5

_T = TypeVar("_T")


class Protocol(StrEnum):
    WS = "ws"
    HTTP = "http"
    OPENAI = "openai"
    ROOM = "room"


class PeerKind(StrEnum):
    AUTO = "auto"
    PIPER = "piper"
    """Piper's own HTTP server: ``GET /info``, ``POST /synthesize`` answers with a WAV."""
    OPENAI = "openai"
    """An OpenAI-compatible speech server: ``POST /v1/audio/speech``."""
    HIVE = "hive"
    """Another HIVE TTS: every protocol."""


PEER_PROTOCOLS: dict[PeerKind, tuple[Protocol, ...]] = {
    PeerKind.PIPER: (Protocol.HTTP,),
    PeerKind.OPENAI: (Protocol.OPENAI,),
    PeerKind.HIVE: (Protocol.WS, Protocol.HTTP, Protocol.OPENAI),
}


# ---------------------------------------------------------------------------------------------
# what is measured


@dataclass(frozen=True)
class Case:
    """One engine speaking one language, with the voice the service offers for it."""

    engine: str
    language: str
    voice_id: str

    @property
    def label(self) -> str:
        return f"{self.engine}/{self.language}"

    @property
    def texts(self) -> tuple[str, ...]:
        return REPLIES[self.language]

    def ws_request(self, text: str, request_id: str) -> dict[str, Any]:
        return {
            "text": text,
            "voice_id": self.voice_id,
            "language": self.language,
            "engine": self.engine,
            "stream": True,
            "request_id": request_id,
        }


@dataclass
class Sample:
    """One reply, timed by this client."""

    mode: str
    """benchmark, compare, stress or rooms."""
    protocol: str
    server: str
    """``service``, or ``peer`` in a comparison."""
    engine: str
    language: str
    voice_id: str
    text: int
    """Index into the language's texts."""
    connections: int = 1
    ttfa_ms: float | None = None
    """Sent -> first audio message (WS), first bytes of the body (HTTP), first audible frame
    at the listener (rooms)."""
    total_ms: float | None = None
    """Sent -> the final message, the whole body, or the speak request's 202 (rooms)."""
    audio_s: float = 0.0
    underruns: int = 0
    largest_gap_ms: float = 0.0
    error: str | None = None
    refused: bool = False
    """429: the server said to retry later (not counted as an error)."""
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.refused


def latency_summary(samples: Sequence[Sample]) -> dict[str, Any]:
    ok = [s for s in samples if s.ok]
    return {
        "requests": len(samples),
        "errors": sum(s.error is not None for s in samples),
        "refused": sum(s.refused for s in samples),
        "ttfa_ms": summarize([s.ttfa_ms for s in ok if s.ttfa_ms is not None]),
        "total_ms": summarize([s.total_ms for s in ok if s.total_ms is not None]),
        "audio_s_mean": float(np.mean([s.audio_s for s in ok])) if ok else math.nan,
        "underruns": sum(s.underruns for s in ok),
    }


# ---------------------------------------------------------------------------------------------
# the service, seen from a client


@dataclass
class Client:
    """Where the service is and how to talk to it."""

    http: aiohttp.ClientSession
    url: str
    api_key: str | None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def get_json(self, path: str) -> Any:
        async with self.http.get(self.url + path, headers=self.headers) as response:
            response.raise_for_status()
            return await response.json()


def retry_after_header(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def error_code(reply: HttpReply) -> str:
    """The ``{"error": {"code"}}`` of an error reply, else ``HTTP <status>``."""
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(json.loads(reply.body)["error"]["code"])
    return f"HTTP {reply.status}"


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


def http_sample(sample: Sample, reply: HttpReply, audio_s: Callable[[bytes], float]) -> Sample:
    if reply.status == REFUSED_STATUS:
        sample.refused = True
        sample.retry_after_s = retry_after_header(reply.headers)
        return sample
    if not reply.ok:
        sample.error = error_code(reply)
        return sample
    sample.ttfa_ms, sample.total_ms = reply.first_byte_ms, reply.total_ms
    try:
        sample.audio_s = audio_s(reply.body)
    except (wave.Error, EOFError) as exc:
        sample.error = f"bad audio: {exc}"
    return sample


def ws_sample(sample: Sample, reply: WsReply) -> Sample:
    if reply.retry_after_s is not None:
        sample.refused = True
        sample.retry_after_s = reply.retry_after_s
    else:
        sample.error = reply.error
    sample.ttfa_ms, sample.total_ms = reply.ttfa_ms, reply.total_ms
    sample.audio_s = reply.audio_s
    sample.underruns = reply.underruns
    sample.largest_gap_ms = reply.largest_gap_ms
    return sample


async def post_sample(
    client: Client, path: str, body: Mapping[str, Any], sample: Sample, accept: str | None
) -> HttpReply | None:
    headers = dict(client.headers)
    if accept is not None:
        headers["Accept"] = accept
    try:
        return await post_timed(
            client.http,
            client.url + path,
            body,
            headers=headers,
            timeout_s=REQUEST_TIMEOUT_S,
            raise_for_status=False,
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        sample.error = type(exc).__name__
        return None


async def http_synthesize(client: Client, case: Case, text: int, sample: Sample) -> Sample:
    """``POST /synthesize`` for a WAV (Piper's own server takes the same body and ignores what
    it does not know)."""
    body = {
        "text": case.texts[text],
        "voice_id": case.voice_id,
        "language": case.language,
        "engine": case.engine,
    }
    reply = await post_sample(client, "/synthesize", body, sample, "audio/wav")
    return sample if reply is None else http_sample(sample, reply, wav_seconds)


async def openai_speech(client: Client, voice: str, text: str, sample: Sample) -> Sample:
    """``POST /v1/audio/speech``, 24 kHz pcm."""
    body = {"model": OPENAI_MODEL, "input": text, "voice": voice, "response_format": "pcm"}
    reply = await post_sample(client, "/v1/audio/speech", body, sample, None)

    def seconds(data: bytes) -> float:
        return len(data) / PCM16_BYTES_PER_SAMPLE / OPENAI_SAMPLE_RATE_HZ

    return sample if reply is None else http_sample(sample, reply, seconds)


class Connection:
    """One WebSocket session, opened on first use and again after it breaks."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._used_at = 0.0

    async def socket(self) -> aiohttp.ClientWebSocketResponse:
        # a socket no one read for a while missed the server's heartbeat pings (aiohttp answers
        # them only while reading) and the server closed it: open a fresh one
        idle = time.monotonic() - self._used_at > IDLE_RECONNECT_S
        if self._ws is not None and not self._ws.closed and idle:
            await self.close()
        if self._ws is None or self._ws.closed:
            self._ws = await open_ws(
                self._client.http,
                self._client.url,
                self._client.headers,
                close_timeout_s=CONNECT_TIMEOUT_S,
            )
        return self._ws

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await self._ws.close()
            self._ws = None

    async def speak(
        self, messages: Sequence[Mapping[str, Any]], request_id: str, sample: Sample
    ) -> tuple[Sample, WsReply | None]:
        """Send one request; a refused handshake is a refusal, a failed one an error."""
        try:
            ws = await self.socket()
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == REFUSED_STATUS:
                sample.refused = True
                sample.retry_after_s = retry_after_header(exc.headers or {})
            else:
                sample.error = f"connect {exc.status}"
            return sample, None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            sample.error = f"connect {type(exc).__name__}"
            return sample, None
        reply = await ws_exchange(ws, messages, request_id, timeout_s=REQUEST_TIMEOUT_S)
        self._used_at = time.monotonic()
        if reply.error in BROKEN_CONNECTION:  # the next request opens a new one
            await self.close()
        return ws_sample(sample, reply), reply


async def ws_speak(connection: Connection, case: Case, text: int, sample: Sample) -> Sample:
    request_id = f"t-{uuid.uuid4().hex[:10]}"
    spoken, _ = await connection.speak(
        [case.ws_request(case.texts[text], request_id)], request_id, sample
    )
    return spoken


# ---------------------------------------------------------------------------------------------
# which engines and languages


async def discover_cases(
    client: Client, engines: Sequence[str] | None, languages: Sequence[str] | None
) -> tuple[list[Case], list[str]]:
    """From ``GET /voices``: the first voice each engine can speak now, per language that has
    texts here; and notes on what was left out."""
    listing = await client.get_json("/voices")
    voices = listing.get("voices", [])

    def speakers(voice: Mapping[str, Any]) -> int:
        return sum(bool(row.get("available")) for row in voice.get("engines", []))

    # a voice more engines can speak first: engines of one language then share a voice
    voices = sorted(voices, key=lambda voice: -speakers(voice))
    cases: dict[tuple[str, str], Case] = {}
    notes: list[str] = []
    for voice in voices:
        language = str(voice.get("language"))
        for row in voice.get("engines", []):
            engine = str(row.get("engine"))
            if not row.get("available") or (engine, language) in cases:
                continue
            if engines is not None and engine not in engines:
                continue
            if languages is not None and language not in languages:
                continue
            if language not in REPLIES:
                notes.append(f"{engine}/{language}: no texts for {language!r} here")
                continue
            cases[(engine, language)] = Case(engine, language, str(voice["id"]))
    ordered = sorted(cases.values(), key=lambda case: (case.language, case.engine))
    for engine in engines or ():
        if not any(case.engine == engine for case in ordered):
            notes.append(f"{engine}: speaks none of the asked languages now")
    return ordered, notes


# ---------------------------------------------------------------------------------------------
# progress


SECONDS_BAR = "{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"
"""A bar that counts seconds of a timed phase (whole ones)."""


@contextlib.contextmanager
def progress(
    total: float, description: str, enabled: bool, unit: str = "req", bar_format: str | None = None
) -> Iterator[tqdm]:
    bar = tqdm(
        total=total,
        desc=description,
        unit=unit,
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
        leave=True,
        bar_format=bar_format,
    )
    try:
        yield bar
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------------
# benchmark and comparison


def benchmark_plan(cases: Sequence[Case]) -> list[tuple[Protocol, Case]]:
    """WS and HTTP per case; OpenAI once per voice (the router picks its engine)."""
    plan: list[tuple[Protocol, Case]] = []
    voices: set[str] = set()
    for case in cases:
        plan += [(Protocol.WS, case), (Protocol.HTTP, case)]
        if case.voice_id not in voices:
            voices.add(case.voice_id)
            plan.append((Protocol.OPENAI, case))
    return plan


async def run_benchmark(
    client: Client, cases: Sequence[Case], iterations: int, show: bool, out: list[Sample]
) -> None:
    """Each protocol of each case in turn, ``iterations`` times; measured replies into ``out``."""
    plan = benchmark_plan(cases)
    connections = {case: Connection(client) for case in cases}
    total = len(plan) * (WARMUP_REPLIES + iterations)
    try:
        with progress(total, "benchmark", show) as bar:
            for round_ in range(WARMUP_REPLIES + iterations):
                for protocol, case in plan:  # interleaved, so drift hits every protocol alike
                    text = round_ % len(case.texts)
                    engine = "auto" if protocol is Protocol.OPENAI else case.engine
                    sample = Sample(
                        "benchmark", protocol, "service", engine, case.language, case.voice_id, text
                    )
                    if protocol is Protocol.WS:
                        await ws_speak(connections[case], case, text, sample)
                    elif protocol is Protocol.HTTP:
                        await http_synthesize(client, case, text, sample)
                    else:
                        await openai_speech(client, case.voice_id, case.texts[text], sample)
                    if round_ >= WARMUP_REPLIES:
                        out.append(sample)
                    bar.update()
    finally:
        for connection in connections.values():
            await connection.close()


async def detect_peer(http: aiohttp.ClientSession, url: str) -> PeerKind:
    """What the peer at ``url`` speaks: HIVE TTS answers ``/voices`` with engines, Piper's own
    server answers ``/info``; anything else is taken as OpenAI-compatible."""

    async def answers(path: str) -> Any:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            async with http.get(url + path) as response:
                if response.status == HTTPStatus.OK:
                    return await response.json(content_type=None)
        return None

    voices = await answers("/voices")
    if isinstance(voices, dict) and "engines" in voices:
        return PeerKind.HIVE
    if await answers("/info") is not None:
        return PeerKind.PIPER
    return PeerKind.OPENAI


def compare_case(cases: Sequence[Case]) -> Case | None:
    """English, Piper first: the voice a Piper or loudness-tts peer speaks with."""
    english = [case for case in cases if case.language == "en"]
    return next((c for c in english if c.engine == "piper"), english[0] if english else None)


async def run_compare(
    ours: Client,
    peer: Client,
    kind: PeerKind,
    case: Case,
    peer_voice: str,
    iterations: int,
    show: bool,
    out: list[Sample],
) -> None:
    """The same texts to us and to the peer, one at a time, interleaved; into ``out``."""
    protocols = PEER_PROTOCOLS[kind]
    connections = {"service": Connection(ours), "peer": Connection(peer)}
    clients = {"service": ours, "peer": peer}
    total = len(protocols) * 2 * (WARMUP_REPLIES + iterations)
    try:
        with progress(total, f"compare ({kind.value} peer)", show) as bar:
            for round_ in range(WARMUP_REPLIES + iterations):
                text = round_ % len(case.texts)
                for protocol in protocols:
                    for server, client in clients.items():
                        sample = Sample(
                            "compare", protocol, server, case.engine, "en", case.voice_id, text
                        )
                        if protocol is Protocol.WS:
                            await ws_speak(connections[server], case, text, sample)
                        elif protocol is Protocol.HTTP:
                            await http_synthesize(client, case, text, sample)
                        else:
                            voice = case.voice_id if server == "service" else peer_voice
                            await openai_speech(client, voice, case.texts[text], sample)
                        if round_ >= WARMUP_REPLIES:
                            out.append(sample)
                        bar.update()
    finally:
        for connection in connections.values():
            await connection.close()


def compare_ratios(samples: Sequence[Sample]) -> dict[str, float]:
    """Ours / the peer's p50, per protocol, for first audio and the whole reply."""
    ratios: dict[str, float] = {}
    for protocol in sorted({s.protocol for s in samples}):
        ours = latency_summary(
            [s for s in samples if s.protocol == protocol and s.server == "service"]
        )
        theirs = latency_summary(
            [s for s in samples if s.protocol == protocol and s.server == "peer"]
        )
        for figure in ("ttfa_ms", "total_ms"):
            name = f"compare_{protocol}_{figure.removesuffix('_ms')}_ratio"
            peer_p50 = theirs[figure]["p50"]
            ratios[name] = ours[figure]["p50"] / peer_p50 if peer_p50 else math.nan
    return ratios


# ---------------------------------------------------------------------------------------------
# stress


@dataclass
class StressLevel:
    connections: int
    duration_s: float
    samples: list[Sample] = field(default_factory=list)
    wall_s: float = 0.0
    client_lag_ms: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        ok = [s for s in self.samples if s.ok]
        retry = [s.retry_after_s for s in self.samples if s.retry_after_s is not None]
        return {
            "connections": self.connections,
            "duration_s": self.duration_s,
            "wall_s": self.wall_s,
            **latency_summary(self.samples),
            "replies_with_underrun_pct": (
                sum(1 for s in ok if s.underruns) / len(ok) * 100 if ok else math.nan
            ),
            "largest_gap_ms": max((s.largest_gap_ms for s in ok), default=0.0),
            "retry_after_s": summarize(retry),
            "delivered_audio_s_per_s": sum(s.audio_s for s in ok) / self.wall_s
            if self.wall_s
            else math.nan,
            "error_kinds": dict(
                sorted(
                    (kind, sum(1 for s in self.samples if s.error == kind))
                    for kind in {s.error for s in self.samples if s.error}
                )
            ),
            "client_loop_lag_ms": self.client_lag_ms,
        }


async def stress_session(
    client: Client,
    case: Case,
    index: int,
    level: StressLevel,
    rng: random.Random,
    deadline: float,
    think_s: tuple[float, float],
    tick: Callable[[Sample], None],
) -> None:
    """One listener: a reply, heard to its end, a pause to think, the next, until ``deadline``
    (connected all along); told to retry later, it waits as long as it is told."""
    connection = Connection(client)
    spread_s = min(START_SPREAD_S, level.duration_s / 2)
    await asyncio.sleep(rng.uniform(0.0, spread_s))
    try:
        for number in itertools.count():
            if time.perf_counter() >= deadline:
                return
            text = rng.randrange(len(case.texts))
            sample = Sample(
                "stress", Protocol.WS, "service", case.engine, case.language, case.voice_id, text
            )
            sample.connections = level.connections
            request_id = f"s{index}-{number}"
            sample, reply = await connection.speak(
                [case.ws_request(case.texts[text], request_id)], request_id, sample
            )
            level.samples.append(sample)
            tick(sample)
            now = time.perf_counter()
            if sample.refused:
                wake = now + (sample.retry_after_s or rng.uniform(*think_s))
            else:
                played = reply.playback_end if reply is not None else None
                wake = max(played or now, now) + rng.uniform(*think_s)
            # a listener stays connected while it listens and thinks, to the level's end
            await asyncio.sleep(max(0.0, min(wake, deadline) - now))
    finally:
        await connection.close()


async def run_stress(
    client: Client,
    cases: Sequence[Case],
    levels: Sequence[int],
    duration_s: float,
    think_s: tuple[float, float],
    show: bool,
    out: list[Sample],
) -> list[StressLevel]:
    rng = random.Random(SEED)
    results: list[StressLevel] = []
    for connections in levels:
        level = StressLevel(connections, duration_s)
        await stress_level(client, cases, level, rng, think_s, show, out)
        results.append(level)
    return results


async def stress_level(
    client: Client,
    cases: Sequence[Case],
    level: StressLevel,
    rng: random.Random,
    think_s: tuple[float, float],
    show: bool,
    out: list[Sample],
) -> None:
    """``level.connections`` sessions for ``level.duration_s``, each case in turn; every reply
    into ``level.samples`` and ``out``."""
    counts = {"requests": 0, "errors": 0, "429": 0, "underruns": 0}
    duration_s = level.duration_s
    name = f"stress {level.connections} sessions"
    with progress(duration_s, name, show, unit="s", bar_format=SECONDS_BAR) as bar:

        def tick(sample: Sample) -> None:
            out.append(sample)
            counts["requests"] += 1
            counts["errors"] += sample.error is not None
            counts["429"] += sample.refused
            counts["underruns"] += sample.underruns
            bar.set_postfix(counts, refresh=False)

        async def clock() -> None:
            while True:
                await asyncio.sleep(PROGRESS_TICK_S)
                bar.update(min(duration_s, time.perf_counter() - started) - bar.n)

        started = time.perf_counter()
        deadline = started + duration_s
        ticker = asyncio.create_task(clock())
        try:
            with LoopLagProbe() as lag:
                await asyncio.gather(
                    *(
                        stress_session(
                            client,
                            cases[i % len(cases)],
                            i,
                            level,
                            random.Random(rng.random()),
                            deadline,
                            think_s,
                            tick,
                        )
                        for i in range(level.connections)
                    )
                )
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        level.wall_s = time.perf_counter() - started
        bar.update(duration_s - bar.n)
    level.client_lag_ms = {
        "p50": percentile(lag.lags_ms, P50) if lag.lags_ms else math.nan,
        "p99": percentile(lag.lags_ms, P99) if lag.lags_ms else math.nan,
        "max": max(lag.lags_ms, default=math.nan),
    }


# ---------------------------------------------------------------------------------------------
# quality


@dataclass
class QualityRow:
    engine: str
    language: str
    voice_id: str
    how: str
    """``whole`` (one request) or ``streamed`` (word by word)."""
    texts: int
    dnsmos: float
    error_rate: float
    error_name: str
    heard: list[str]
    errors: list[str]


def text_tokens(text: str, language: str) -> list[str]:
    """The text cut as a translator or an LLM sends it: words with their space, or, in a
    language written without spaces, a few characters at a time."""
    if language in CHARACTER_LANGUAGES:
        step = CHARACTERS_PER_TOKEN
        return [text[i : i + step] for i in range(0, len(text), step)]
    return [word + " " for word in text.split(" ")]


def word_messages(case: Case, text: str, request_id: str) -> list[dict[str, Any]]:
    """The text as a pipeline streams it: one ``text`` message per token, then ``flush``."""
    messages: list[dict[str, Any]] = []
    for index, token in enumerate(text_tokens(text, case.language)):
        message: dict[str, Any] = {"type": "text", "text": token}
        if index == 0:
            message |= {
                "voice_id": case.voice_id,
                "language": case.language,
                "engine": case.engine,
                "request_id": request_id,
            }
        messages.append(message)
    messages.append({"type": "flush"})
    return messages


class Judge:
    """DNSMOS and whisper, loaded once (off the event loop), used from threads."""

    def __init__(self) -> None:
        from api.quality import QualityScorer
        from tools.benchkit.transcriber import Transcriber

        self.scorer = QualityScorer()
        self.transcriber = Transcriber()

    def judge(
        self, pcm: np.ndarray[Any, Any], rate: int, language: str, text: str
    ) -> tuple[float, float, str]:
        """(DNSMOS OVRL, word or character error rate, what whisper heard)."""
        from tools.benchkit.transcriber import character_error_rate, word_error_rate

        mos = float(self.scorer.score(pcm, rate).overall)
        heard = self.transcriber.transcribe(pcm, rate, language)
        rate_of = character_error_rate if language in CHARACTER_LANGUAGES else word_error_rate
        return mos, rate_of(text, heard), heard


async def run_quality(
    client: Client, cases: Sequence[Case], texts_per_case: int, show: bool
) -> list[QualityRow]:
    judge = await asyncio.to_thread(Judge)
    rows: list[QualityRow] = []
    total = len(cases) * 2 * texts_per_case
    with progress(total, "quality", show) as bar:
        for case in cases:
            connection = Connection(client)
            try:
                for how in ("whole", "streamed"):
                    scores: list[tuple[float, float, str]] = []
                    errors: list[str] = []
                    for text in case.texts[:texts_per_case]:
                        request_id = f"q-{uuid.uuid4().hex[:10]}"
                        messages = (
                            [case.ws_request(text, request_id)]
                            if how == "whole"
                            else word_messages(case, text, request_id)
                        )
                        reply = await exchange_keeping_audio(connection, messages, request_id)
                        bar.update()
                        if reply.error is not None or not reply.pcm or reply.sample_rate is None:
                            errors.append(reply.error or "no audio")
                            continue
                        pcm = np.frombuffer(bytes(reply.pcm), dtype="<i2").astype(np.int16)
                        scores.append(
                            await asyncio.to_thread(
                                judge.judge, pcm, reply.sample_rate, case.language, text
                            )
                        )
                    rows.append(
                        QualityRow(
                            case.engine,
                            case.language,
                            case.voice_id,
                            how,
                            len(scores),
                            float(np.mean([s[0] for s in scores])) if scores else math.nan,
                            float(np.mean([s[1] for s in scores])) if scores else math.nan,
                            "cer" if case.language in CHARACTER_LANGUAGES else "wer",
                            [s[2] for s in scores],
                            errors,
                        )
                    )
            finally:
                await connection.close()
    return rows


async def exchange_keeping_audio(
    connection: Connection, messages: Sequence[Mapping[str, Any]], request_id: str
) -> WsReply:
    try:
        ws = await connection.socket()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return WsReply(error=f"connect {type(exc).__name__}")
    return await ws_exchange(ws, messages, request_id, timeout_s=REQUEST_TIMEOUT_S, keep_audio=True)


# ---------------------------------------------------------------------------------------------
# rooms


@dataclass(frozen=True)
class LiveKit:
    url: str
    api_key: str
    api_secret: str


async def first_audible(track_of: Callable[[], Any], after: float, deadline: float) -> float | None:
    """When (perf_counter) the listener's track first carried an audible frame after ``after``."""
    while time.perf_counter() < deadline:
        track = track_of()
        heard = track.first_audible(after) if track is not None else None
        if heard is not None:
            return float(heard)
        await asyncio.sleep(ROOM_POLL_S)
    return None


async def run_rooms(
    client: Client, livekit: LiveKit, rooms: int, iterations: int, show: bool, out: list[Sample]
) -> None:
    """N rooms, a listener each; every room is asked to speak at once, ``iterations`` times;
    the replies into ``out``."""
    from tools.benchkit.rooms import Endpoint, Participant, delete_rooms, room_name

    endpoint = Endpoint(livekit.url, livekit.api_key, livekit.api_secret)
    names = [room_name("test-tts") for _ in range(rooms)]
    listeners = {name: Participant(f"listener-{name}") for name in names}
    gate = asyncio.Semaphore(ROOM_JOIN_CONCURRENCY)
    track = "tts-en"
    texts = REPLIES["en"]

    async def join(name: str) -> None:
        async with gate:
            await listeners[name].join(endpoint, name)

    async def speak(name: str, round_: int) -> Sample:
        text = round_ % len(texts)
        sample = Sample(
            "rooms", Protocol.ROOM, "service", "auto", "en", "-", text, connections=rooms
        )
        listener = listeners[name]
        body = {
            "id": f"{name}-{round_}",
            "text": texts[text],
            "language": "en",
            "reply_to": listener.identity,
        }
        posted = time.perf_counter()
        try:
            async with client.http.post(
                f"{client.url}/rooms/{name}/speak", json=body, headers=client.headers
            ) as response:
                sample.total_ms = (time.perf_counter() - posted) * MS_PER_S
                if response.status == REFUSED_STATUS:
                    sample.refused = True
                    sample.retry_after_s = retry_after_header(response.headers)
                    return sample
                if response.status != HTTPStatus.ACCEPTED:
                    sample.error = f"HTTP {response.status}: {(await response.text())[:120]}"
                    return sample
        except (aiohttp.ClientError, TimeoutError) as exc:
            sample.error = type(exc).__name__
            return sample
        heard = await first_audible(
            lambda: listener.tracks.get(track), posted, posted + ROOM_SPEECH_TIMEOUT_S
        )
        if heard is None:
            sample.error = "not heard"
            return sample
        sample.ttfa_ms = (heard - posted) * MS_PER_S
        # the next round is asked once this reply has played: else the first audible frame
        # after the next POST would be this reply's tail
        try:
            await listener.wait_event(str(body["id"]), "finished", ROOM_SPEECH_TIMEOUT_S)
        except AssertionError:
            sample.error = "no finished event"
        await asyncio.sleep(ROOM_TAIL_S)
        return sample

    try:
        with progress(rooms * (1 + iterations), f"rooms x{rooms}", show) as bar:
            for name in names:
                await join(name)
                bar.update()
            for round_ in range(iterations):
                for sample in await asyncio.gather(*(speak(name, round_) for name in names)):
                    out.append(sample)
                    bar.update()
    finally:
        await asyncio.gather(*(p.leave() for p in listeners.values()), return_exceptions=True)
        with contextlib.suppress(Exception):
            await delete_rooms(endpoint, names)


# ---------------------------------------------------------------------------------------------
# figures, thresholds, tables, plots


def worst(values: Iterable[float]) -> float:
    """The largest of the figures that were measured (NaN: none was)."""
    return max((v for v in values if not math.isnan(v)), default=math.nan)


def metrics_of(report: dict[str, Any], samples: Sequence[Sample]) -> dict[str, float]:
    """The flat figures thresholds apply to."""
    metrics: dict[str, float] = {}
    service = [s for s in samples if s.server == "service"]
    for protocol in (Protocol.WS, Protocol.HTTP, Protocol.OPENAI):
        mine = [s for s in service if s.mode == "benchmark" and s.protocol == protocol]
        if not mine:
            continue
        summary = latency_summary(mine)
        for figure in ("ttfa", "total"):
            for q in ("p50", "p95", "p99"):
                metrics[f"{protocol}_{figure}_{q}_ms"] = summary[f"{figure}_ms"][q]
    levels = report.get("stress", {}).get("levels", [])
    if levels:
        for q in ("p50", "p95", "p99"):
            metrics[f"stress_ttfa_{q}_ms"] = worst(level["ttfa_ms"][q] for level in levels)
        metrics["underruns"] = float(sum(level["underruns"] for level in levels))
        metrics["retry_after_max_s"] = max(
            (level["retry_after_s"]["max"] for level in levels if level["retry_after_s"]["n"]),
            default=0.0,
        )
    rooms = [s for s in service if s.mode == "rooms"]
    if rooms:
        summary = latency_summary(rooms)
        for q in ("p50", "p95", "p99"):
            metrics[f"room_ttfa_{q}_ms"] = summary["ttfa_ms"][q]
    quality = report.get("quality", [])
    if quality:
        metrics["dnsmos_min"] = -worst(-row["dnsmos"] for row in quality)
        for name in ("wer", "cer"):
            rates = [row["error_rate"] for row in quality if row["error_name"] == name]
            if rates:
                metrics[f"{name}_max"] = worst(rates)
    metrics.update(report.get("compare", {}).get("ratios", {}))
    metrics["errors"] = float(sum(s.error is not None for s in service))
    metrics["refused"] = float(sum(s.refused for s in service))
    metrics["requests"] = float(len(service))
    return metrics


@dataclass(frozen=True)
class Threshold:
    name: str
    limit: float
    over: bool
    """True: fails when the figure is above ``limit``; False: when below."""

    def check(self, metrics: Mapping[str, float]) -> tuple[float | None, bool]:
        """(the figure, whether it passes); a figure not measured never passes."""
        value = metrics.get(self.name)
        if value is None or math.isnan(value):
            return None, False
        return value, value <= self.limit if self.over else value >= self.limit


def parse_threshold(text: str, over: bool) -> Threshold:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE, e.g. ws_ttfa_p95_ms=300")
    try:
        return Threshold(name.strip(), float(value), over)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a number") from None


def print_thresholds(
    thresholds: Sequence[Threshold], metrics: Mapping[str, float]
) -> list[dict[str, Any]]:
    heading("Thresholds")
    rows, results = [], []
    for threshold in thresholds:
        value, passed = threshold.check(metrics)
        relation = "<=" if threshold.over else ">="
        verdict = "ok" if passed else ("NOT MEASURED" if value is None else "CROSSED")
        rows.append([threshold.name, fmt(value, 2), f"{relation} {threshold.limit:g}", verdict])
        results.append({**asdict(threshold), "value": value, "passed": passed})
    print(render_table(["figure", "value", "must be", "verdict"], rows))
    return results


def latency_rows(groups: Mapping[tuple[str, ...], Sequence[Sample]]) -> list[list[str]]:
    rows = []
    for key, samples in groups.items():
        s = latency_summary(samples)
        rows.append(
            [
                *key,
                str(s["requests"]),
                str(s["errors"]),
                str(s["refused"]),
                fmt(s["ttfa_ms"]["p50"]),
                fmt(s["ttfa_ms"]["p95"]),
                fmt(s["ttfa_ms"]["p99"]),
                fmt(s["total_ms"]["p50"]),
                fmt(s["total_ms"]["p95"]),
                fmt(s["total_ms"]["p99"]),
                fmt(s["audio_s_mean"], 2),
            ]
        )
    return rows


LATENCY_HEADERS = ["n", "errors", "429", "first p50", "p95", "p99", "whole p50", "p95", "p99",
                   "audio s"]  # fmt: skip


def grouped(
    items: Sequence[_T], key: Callable[[_T], tuple[str, ...]]
) -> dict[tuple[str, ...], list[_T]]:
    """``items`` by ``key``, in the order each key first appears."""
    groups: dict[tuple[str, ...], list[_T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def print_benchmark(samples: Sequence[Sample]) -> None:
    heading("Benchmark: time to first audio and to the whole reply (ms)")
    groups = grouped(samples, lambda s: (s.protocol, s.engine, s.language, s.voice_id))
    headers = ["protocol", "engine", "lang", "voice", *LATENCY_HEADERS]
    print(render_table(headers, latency_rows(groups)))
    print(
        "first = sent -> first audio message (ws) or first bytes of the body (http: the whole "
        "WAV at once; openai: 24 kHz pcm streamed);\nwhole = sent -> final message / whole "
        "body. openai: the engine is the router's choice for the voice (auto)."
    )


def print_compare(
    samples: Sequence[Sample], ratios: Mapping[str, float], peer: str, kind: str
) -> None:
    heading(f"Against the peer {peer} ({kind}), same texts interleaved (ms)")
    groups = grouped(samples, lambda s: (s.protocol, s.server))
    print(render_table(["protocol", "server", *LATENCY_HEADERS], latency_rows(groups)))
    for name, ratio in ratios.items():
        print(f"{name}: {fmt(ratio, 2)} (ours p50 / peer p50; below 1: we are faster)")


def print_stress(levels: Sequence[dict[str, Any]], think_s: tuple[float, float]) -> None:
    heading(
        f"Stress: WebSocket sessions, think time {think_s[0]:g}-{think_s[1]:g} s after each "
        "reply has played (ms)"
    )
    headers = ["sessions", "requests", "errors", "429", "Retry-After s", "first p50", "p95",
               "p99", "underruns", "replies w/ underrun", "largest gap", "audio s/s",
               "client lag p99"]  # fmt: skip
    rows = []
    for level in levels:
        retry = level["retry_after_s"]
        rows.append(
            [
                str(level["connections"]),
                str(level["requests"]),
                str(level["errors"]),
                str(level["refused"]),
                "-" if not retry["n"] else f"{retry['p50']:g}-{retry['max']:g}",
                fmt(level["ttfa_ms"]["p50"]),
                fmt(level["ttfa_ms"]["p95"]),
                fmt(level["ttfa_ms"]["p99"]),
                str(level["underruns"]),
                f"{fmt(level['replies_with_underrun_pct'])}%",
                fmt(level["largest_gap_ms"]),
                fmt(level["delivered_audio_s_per_s"], 2),
                fmt(level["client_loop_lag_ms"].get("p99")),
            ]
        )
    print(render_table(headers, rows))
    print(
        "underrun = audio that arrived after everything before it had finished playing (a "
        "playback clock per session);\n429 = refused with Retry-After (at the handshake or as "
        "an error message), not counted as errors"
    )
    for level in levels:
        if level["error_kinds"]:
            print(f"  {level['connections']} sessions, errors: {level['error_kinds']}")


def print_quality(rows: Sequence[QualityRow]) -> None:
    heading(
        "Quality: DNSMOS OVRL and whisper round trip, the whole text against the same text "
        f"streamed in words ({CHARACTERS_PER_TOKEN} characters at a time in ja, zh)"
    )
    table = []
    pairs = grouped(rows, lambda r: (r.engine, r.language))
    for (engine, language), mine in pairs.items():
        whole = next((r for r in mine if r.how == "whole"), None)
        streamed = next((r for r in mine if r.how == "streamed"), None)
        if whole is None or streamed is None:
            continue
        table.append(
            [
                engine,
                language,
                str(whole.texts),
                fmt(whole.dnsmos, 2),
                fmt(streamed.dnsmos, 2),
                f"{streamed.dnsmos - whole.dnsmos:+.2f}",
                whole.error_name,
                fmt(whole.error_rate, 3),
                fmt(streamed.error_rate, 3),
                str(len(whole.errors) + len(streamed.errors)),
            ]
        )
    print(render_table(["engine", "lang", "texts", "DNSMOS whole", "streamed", "diff", "rate",
                        "whole", "streamed", "errors"], table))  # fmt: skip


def print_rooms(samples: Sequence[Sample], rooms: int) -> None:
    heading(
        f"Rooms: POST /rooms/{{room}}/speak to {rooms} rooms at once -> first audible frame at "
        "the listener (ms)"
    )
    s = latency_summary(samples)
    print(
        render_table(
            [
                "rooms",
                "utterances",
                "heard",
                "errors",
                "429",
                "speak 202 p50",
                "listener p50",
                "p95",
                "p99",
                "max",
            ],  # fmt: skip
            [
                [
                    str(rooms),
                    str(s["requests"]),
                    str(s["ttfa_ms"]["n"]),
                    str(s["errors"]),
                    str(s["refused"]),
                    fmt(s["total_ms"]["p50"]),
                    fmt(s["ttfa_ms"]["p50"]),
                    fmt(s["ttfa_ms"]["p95"]),
                    fmt(s["ttfa_ms"]["p99"]),
                    fmt(s["ttfa_ms"]["max"]),
                ]
            ],
        )
    )
    for sample in [s for s in samples if s.error][:5]:
        print(f"  error: {sample.error}")


def cdf(values: Sequence[float]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The sorted values and the share of values at or below each."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    return ordered, np.arange(1, ordered.size + 1) / ordered.size


def write_plots(
    directory: Path, samples: Sequence[Sample], levels: Sequence[dict[str, Any]]
) -> list[Path]:
    """Latency CDFs, latency against concurrency and underruns, as PNGs; the files written."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(figure: Figure, name: str) -> None:
        path = directory / name
        figure.savefig(path, dpi=100, bbox_inches="tight")
        written.append(path)

    curves = grouped(
        [s for s in samples if s.ok and s.ttfa_ms is not None],
        lambda s: (s.mode, str(s.connections), s.protocol, s.engine, s.server),
    )
    if curves:
        figure = Figure(figsize=(9, 5.5))
        axes = figure.subplots()

        def order(key: tuple[str, ...]) -> tuple[str, int, tuple[str, ...]]:
            return key[0], int(key[1]), key[2:]

        for key in sorted(curves, key=order):
            mode, level, protocol, engine, server = key
            mine = curves[key]
            label = f"{mode}" + (f" x{level}" if mode == "stress" else "")
            label += f": {protocol} {engine}" + ("" if server == "service" else f" ({server})")
            x, y = cdf([s.ttfa_ms for s in mine if s.ttfa_ms is not None])
            # from 0 at the fastest reply, up a step at each
            axes.step(np.r_[x[0], x], np.r_[0.0, y], where="post", label=f"{label} (n={x.size})")
        axes.set_xlabel("time to first audio (ms)")
        axes.set_ylabel("share of replies")
        axes.set_xscale("log")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="small")
        axes.set_title("Time to first audio: cumulative distribution")
        save(figure, "latency_cdf.png")
    if levels:
        figure = Figure(figsize=(8, 5))
        axes = figure.subplots()
        sessions = [level["connections"] for level in levels]
        for q in ("p50", "p95", "p99"):
            axes.plot(sessions, [level["ttfa_ms"][q] for level in levels], marker="o", label=q)
        axes.set_xlabel("concurrent WebSocket sessions")
        axes.set_ylabel("time to first audio (ms)")
        axes.grid(True, alpha=0.3)
        axes.legend()
        axes.set_title("Time to first audio against concurrency")
        save(figure, "latency_vs_concurrency.png")

        figure = Figure(figsize=(8, 5))
        axes = figure.subplots()
        labels = [str(n) for n in sessions]
        axes.bar(labels, [level["underruns"] for level in levels], label="underruns")
        axes.bar(
            labels,
            [level["refused"] for level in levels],
            bottom=[level["underruns"] for level in levels],
            label="429 refused",
        )
        axes.set_xlabel("concurrent WebSocket sessions")
        axes.set_ylabel("count")
        axes.legend()
        axes.set_title("Underruns (client playback clock) and refusals per level")
        save(figure, "underruns.png")
    return written


# ---------------------------------------------------------------------------------------------
# the run


def numbers(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated whole numbers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least one number, each at least 1")
    return values


def think_range(text: str) -> tuple[float, float]:
    parts = [float(p) for p in text.split(",")]
    low, high = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    if low < 0 or high < low:
        raise argparse.ArgumentTypeError(f"{text!r}: LOW,HIGH seconds with 0 <= LOW <= HIGH")
    return low, high


def names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.test_tts",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Figures for thresholds: {ws,http,openai}_{ttfa,total}_{p50,p95,p99}_ms, "
        "stress_ttfa_{p50,p95,p99}_ms (the worst level), underruns, retry_after_max_s, "
        "room_ttfa_{p50,p95,p99}_ms, dnsmos_min, wer_max, cer_max, "
        "compare_{ws,http,openai}_{ttfa,total}_ratio, errors, refused, requests.",
    )
    add = parser.add_argument
    add("--url", default=DEFAULT_URL, help="the service (default %(default)s)")
    add("--api-key", default=None, help="sent as Authorization: Bearer KEY")
    add("--benchmark", action="store_true", help="latency per engine, language and protocol")
    add("--iterations", type=int, default=DEFAULT_ITERATIONS,
        help="measured replies per protocol and case (default %(default)s)")  # fmt: skip
    add("--stress", action="store_true", help="concurrent WebSocket sessions with pauses")
    add("--connections", type=numbers, default=list(DEFAULT_CONNECTIONS),
        help="sessions per stress level, comma-separated (default 10)")  # fmt: skip
    add("--duration", type=float, default=DEFAULT_DURATION_S,
        help="seconds per stress level (default %(default)s)")  # fmt: skip
    add("--think-time", type=think_range, default=DEFAULT_THINK_S, metavar="LOW,HIGH",
        help="seconds a session pauses after a reply has played (default 2,4)")  # fmt: skip
    add("--quality", action="store_true", help="DNSMOS and whisper, whole against streamed")
    add("--quality-texts", type=int, default=DEFAULT_QUALITY_TEXTS,
        help="texts per engine and language (default %(default)s)")  # fmt: skip
    add("--rooms", type=int, default=0, metavar="N", help="N LiveKit rooms speaking at once")
    add("--livekit-url", default=environ.get("LIVEKIT_URL"))
    add("--livekit-api-key", default=environ.get("LIVEKIT_API_KEY"))
    add("--livekit-api-secret", default=environ.get("LIVEKIT_API_SECRET"))
    add("--all", action="store_true", help="benchmark, stress, quality (and rooms with LiveKit)")
    add("--compare", default=None, metavar="URL", help="a peer to run the same texts against")
    add("--compare-kind", type=PeerKind, choices=list(PeerKind), default=PeerKind.AUTO)
    add("--compare-voice", default=DEFAULT_PEER_VOICE,
        help="the voice asked of an OpenAI-compatible peer (default %(default)s)")  # fmt: skip
    add("--engines", type=names, default=None, help="only these engines (default: every one)")
    add("--languages", type=names, default=None, help="only these languages (default: all)")
    add("--json", type=Path, default=None, help="also write every figure here")
    add("--plot", type=Path, default=None, metavar="DIR", help="write PNG plots here")
    add("--fail-over", type=lambda t: parse_threshold(t, True), action="append", default=[],
        metavar="NAME=VALUE", help="exit 1 when the figure is above VALUE")  # fmt: skip
    add("--fail-under", type=lambda t: parse_threshold(t, False), action="append", default=[],
        metavar="NAME=VALUE", help="exit 1 when the figure is below VALUE")  # fmt: skip
    add("--no-progress", dest="progress", action="store_false", help="no progress bar")
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.duration <= 0 or args.quality_texts < 1 or args.rooms < 0:
        parser.error("--iterations, --quality-texts: at least 1; --duration: positive")
    if args.all:
        args.benchmark = args.stress = args.quality = True
        if args.rooms == 0 and args.livekit_url:
            args.rooms = 1
    if not (args.benchmark or args.stress or args.quality or args.rooms or args.compare):
        args.benchmark = True
    args.url = args.url.rstrip("/")
    return args


@contextlib.asynccontextmanager
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)  # each WebSocket is a connection of its own
    timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        yield http


def of_mode(samples: Sequence[Sample], mode: str) -> list[Sample]:
    return [s for s in samples if s.mode == mode]


async def measure(args: argparse.Namespace, report: dict[str, Any], out: list[Sample]) -> None:
    """Every mode asked for: the timed replies into ``out`` as they come, each mode's figures
    into ``report`` once it is done."""
    async with http_session() as http:
        client = Client(http, args.url, args.api_key)
        try:
            cases, notes = await discover_cases(client, args.engines, args.languages)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            report["unreachable"] = f"{args.url}: {type(exc).__name__}: {exc}"
            print(f"cannot list the voices of {args.url}: {exc}", file=sys.stderr)
            out.append(Sample("discover", "http", "service", "-", "-", "-", 0, error="unreachable"))
            return
        report["cases"] = [asdict(case) for case in cases]
        report["notes"] = notes
        print(f"{args.url}: " + (", ".join(c.label for c in cases) or "nothing to measure"))
        for note in notes:
            print(f"  ({note})")
        if not cases:
            return
        if args.benchmark:
            await run_benchmark(client, cases, args.iterations, args.progress, out)
            report["benchmark"] = {"iterations": args.iterations, **benchmark_figures(out)}
        if args.compare:
            await compare(args, http, client, cases, report, out)
        if args.stress:
            levels = await run_stress(
                client, cases, args.connections, args.duration, args.think_time, args.progress, out
            )
            report["stress"] = {
                "think_time_s": list(args.think_time),
                "levels": [level.summary() for level in levels],
            }
        if args.quality:
            rows = await run_quality(client, cases, args.quality_texts, args.progress)
            report["quality"] = [asdict(row) for row in rows]
        if args.rooms:
            await rooms(args, client, report, out)


def benchmark_figures(samples: Sequence[Sample]) -> dict[str, Any]:
    groups = grouped(
        of_mode(samples, "benchmark"), lambda s: (s.protocol, s.engine, s.language, s.voice_id)
    )
    return {
        "groups": [
            {"protocol": p, "engine": e, "language": lang, "voice_id": v, **latency_summary(mine)}
            for (p, e, lang, v), mine in groups.items()
        ]
    }


async def compare(
    args: argparse.Namespace,
    http: aiohttp.ClientSession,
    client: Client,
    cases: Sequence[Case],
    report: dict[str, Any],
    out: list[Sample],
) -> None:
    peer_url = args.compare.rstrip("/")
    kind = args.compare_kind
    if kind is PeerKind.AUTO:
        kind = await detect_peer(http, peer_url)
    case = compare_case(cases)
    report["compare"] = {"peer": peer_url, "kind": kind.value}
    if case is None:
        report["compare"]["skipped"] = "no English case to compare"
        return
    peer = Client(http, peer_url, None)
    await run_compare(
        client, peer, kind, case, args.compare_voice, args.iterations, args.progress, out
    )
    measured = of_mode(out, "compare")
    report["compare"] |= {
        "case": asdict(case),
        "groups": [
            {"protocol": protocol, "server": server, **latency_summary(mine)}
            for (protocol, server), mine in grouped(
                measured, lambda s: (s.protocol, s.server)
            ).items()
        ],
        "ratios": compare_ratios(measured),
    }


async def rooms(
    args: argparse.Namespace, client: Client, report: dict[str, Any], out: list[Sample]
) -> None:
    if not (args.livekit_url and args.livekit_api_key and args.livekit_api_secret):
        report["rooms"] = {
            "skipped": "no LiveKit server: --livekit-url, --livekit-api-key and "
            "--livekit-api-secret (or LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET)"
        }
        print(f"rooms: skipped ({report['rooms']['skipped']})")
        return
    livekit = LiveKit(args.livekit_url, args.livekit_api_key, args.livekit_api_secret)
    await run_rooms(client, livekit, args.rooms, args.iterations, args.progress, out)
    report["rooms"] = {"rooms": args.rooms, **latency_summary(of_mode(out, "rooms"))}


def print_report(
    args: argparse.Namespace, report: dict[str, Any], samples: Sequence[Sample]
) -> None:
    """The tables of what was measured (of an interrupted mode too, from its replies)."""
    if benchmark := of_mode(samples, "benchmark"):
        print_benchmark(benchmark)
    if compared := of_mode(samples, "compare"):
        peer = report.get("compare", {})
        print_compare(compared, compare_ratios(compared), peer.get("peer"), peer.get("kind"))
    if "stress" in report:
        print_stress(report["stress"]["levels"], args.think_time)
    if report.get("quality"):
        print_quality([QualityRow(**row) for row in report["quality"]])
    if spoken := of_mode(samples, "rooms"):
        print_rooms(spoken, args.rooms)


def finish(
    args: argparse.Namespace, report: dict[str, Any], samples: Sequence[Sample], began: float
) -> int:
    """Tables, thresholds, plots and the JSON; returns the exit status."""
    print_report(args, report, samples)
    metrics = metrics_of(report, samples)
    report["metrics"] = metrics
    thresholds: list[Threshold] = [*args.fail_over, *args.fail_under]
    status = EXIT_OK
    if thresholds:
        results = print_thresholds(thresholds, metrics)
        report["thresholds"] = results
        if not all(result["passed"] for result in results):
            status = EXIT_THRESHOLD_CROSSED
    if args.plot is not None:
        levels = report.get("stress", {}).get("levels", [])
        written = write_plots(args.plot, samples, levels)
        report["plots"] = [str(path) for path in written]
        print(f"plots: {', '.join(str(p) for p in written) or 'nothing to plot'}")
    report["samples"] = [asdict(sample) for sample in samples]
    report["total_s"] = time.perf_counter() - began
    report["exit_status"] = status
    clips = sum(row["texts"] for row in report.get("quality", []))
    scored = f", {clips} clips scored" if clips else ""
    print(
        f"\n{len(samples)} timed replies{scored} in {report['total_s']:.0f} s; exit status {status}"
    )
    write_report(args.json, report)
    return status


async def run(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """The tool, in a running event loop (the tests call this); returns the exit status.
    Interrupted, it prints and saves what it measured so far, then goes on being cancelled."""
    args = parse_args(argv, os.environ if environ is None else environ)
    began = time.perf_counter()
    report: dict[str, Any] = {
        "url": args.url,
        "started_unix_s": time.time(),
        "args": {k: v for k, v in vars(args).items() if k not in ("api_key", "livekit_api_secret")},
    }
    samples: list[Sample] = []
    try:
        await measure(args, report, samples)
    except asyncio.CancelledError:
        print("\ninterrupted: the figures so far", file=sys.stderr)
        report["interrupted"] = True
        finish(args, report, samples, began)
        raise
    return await asyncio.to_thread(finish, args, report, samples, began)


async def run_until_stopped(argv: Sequence[str] | None) -> int:
    """``run``, cancelled by SIGTERM as by Ctrl-C (a CI job's timeout sends SIGTERM)."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return asyncio.run(run_until_stopped(argv))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
