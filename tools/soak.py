"""Soak test of the whole service: minutes of mixed WebSocket, HTTP and room traffic at a fraction
of this machine's measured capacity, watching memory, file descriptors, threads, errors and
latency over time. A tool, not a test: it prints a summary, writes a JSON and a PNG plot, and
exits non-zero when a target is missed.

Run from the repository root::

    .venv/bin/python -m tools.soak [--minutes 30] [--load 0.7] [--out docs/soak]
                                   [--rooms 3] [--sample-s 10] [--calibrate-s 15]
                                   [--config FILE] [--log-dir DIR] [--seed N]

**What runs.** Real processes on loopback, as in production: ``livekit-server --dev`` (whose
webhooks reach the API), one ``hive-tts agent`` worker (a supervisor and its worker child) and
``hive-tts serve`` (the control API, a process of its own, so that its memory, descriptors and
threads are its own). The configuration is the shipped ``config.yaml`` with Edge TTS disabled
(this machine has no internet; ``--config`` uses a file as it is). Each room has one listener
(a ``livekit.rtc`` participant in this process) that hears the agent's ``tts-en`` track.

**Capacity, measured first** (``calibration`` in the JSON):

1. *one client*: one WebSocket speaking texts back to back, per language (en: Piper, nl:
   espeak-ng, ja: Kokoro): seconds of audio per second of wall time (the default engine's speed
   for one client, "x real time") and the API's CPU seconds per second of audio;
2. *saturated*: ``2 x cores`` WebSockets speaking English back to back for ``--calibrate-s``: the
   audio seconds per second the API delivers with every core busy (= concurrent real-time
   English streams the machine sustains) and the cores it used doing so (the *usable cores*);
3. *rooms*: every room speaks one sentence at once: the worker's and LiveKit's CPU seconds per
   second of audio spoken in rooms.

Each traffic kind costs its measured CPU seconds per audio second; the mix's capacity is
``usable cores / sum(share x cost)`` concurrent real-time streams, and the soak offers
``--load`` times that, as audio seconds per second split by the shares below.

**The traffic** (shares of the offered audio; English texts of one or two sentences, one in
ten a 30-second paragraph):

- WebSocket ``/ws/synthesize``: whole requests (``ws``), incremental text sent in pieces of a
  few words then ``flush`` (``ws_incremental``), requests cancelled 0.4 s after their first
  audio (``ws_cancel``); each client keeps its connection for 10 requests, then reconnects,
  and reads it between requests too (answering the server's 20 s heartbeat, as client
  libraries do);
- HTTP: ``POST /synthesize`` (``http_synthesize``, the whole WAV in one reply, so its first
  audio is the whole reply), ``POST /v1/audio/speech`` with ``pcm`` (``http_speech``), Dutch
  through ``/synthesize`` (``http_espeak_nl``: espeak-ng);
- Japanese at a low share (``ws_ja``, ``http_speech_ja``: Kokoro, about as slow as real time
  here). Kokoro has one worker and the API refuses (429) a reply that would wait more than
  ``max_engine_wait_s`` for it, so the Japanese clients take turns (one request at a time):
  what they measure is the service, not that designed back-pressure;
- rooms: ``POST /rooms/{room}/speak`` into ``--rooms`` rooms (more if the room share needs it),
  each room one utterance at a time: sent, heard, then the next.

Every client is paced: after a request that started at ``t``, the next starts at
``t + expected audio / its rate`` (jittered 0.5-1.5x), or at once when the request took longer.

**Time to first audio** per kind: send (the first text piece; the POST) to the first audio
message / body byte / the listener's first audible frame (peak above 300). **Errors**: any
non-2xx reply, WebSocket ``error`` message, reply without audio, room whose listener heard
nothing within 30 s, timeout or broken connection, by code; the API's and the worker's own
``tts_request_errors_total`` are read too.

**Samples every** ``--sample-s``: RSS, open descriptors, threads and CPU of the API, the worker
(the supervisor's child; a restart is counted), the supervisor, LiveKit and this client; the
API's ``/health`` (``status``, ``active_sessions``, ``active_utterances``, ``queue_depth``, and
how long it took to answer). The API exposes no count of its asyncio tasks, so sessions,
utterances and queue depth from ``/health`` stand in for them. The worker's ``/metrics``:
``tts_playback_underruns_total``, rooms, speaking tracks, load.

**Summary.** Drift of RSS = median of the last 5 minutes against the median of minutes 3-8 (after
warm-up), in percent; the same for descriptors and threads. For runs shorter than 30 minutes the
windows shrink in proportion (a 3-minute smoke compares 18-48 s with the last 30 s). Targets:
RSS drift < 5 % for the API and the worker, 0 errors (client and server side), no worker restart,
``/health`` always answering. Exit status 1 when one is missed, 130 when interrupted (what was
collected is still written), 2 when the processes could not be started.

Listener gaps in rooms (frames more than 30 ms apart) are counted too, with those during which
this client's own event loop stalled counted apart; the API's and the worker's logs are scanned
for tracebacks, ERROR lines, streams ended early, worker restarts and "event loop blocked"
warnings (what is logged during the teardown is counted apart).

The worker and the listeners come from ``tools.benchkit`` and ``tools.room_bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import warnings
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import numpy as np
import psutil
import yaml
from prometheus_client.parser import text_string_to_metric_families

from agent.livekit_server import LOOPBACK_IP, DevServer, free_port
from api.rooms import WORKER_URLS_ENV
from engines.config import load_config
from engines.names import EngineName
from hive_tts.paths import PROJECT_ROOT
from tools.benchkit.machine import BYTES_PER_MB
from tools.benchkit.probes import LoopLagProbe, PlaybackClock
from tools.benchkit.rooms import TRACK, WorkerProcess, delete_rooms
from tools.benchkit.stats import MS_PER_S, P50, P95, P99, PERCENT
from tools.benchkit.stats import percentile_or_none as percentile
from tools.benchkit.workloads import PCM16_BYTES_PER_SAMPLE, REPLIES, base64_payload_bytes
from tools.room_bench import FRAME_S, GAP_LIMIT_S, BenchParticipant, Heard, listen

# ---------------------------------------------------------------------------------------------
# constants

SEED = 20261201
S_PER_MIN = 60.0

# the run
DEFAULT_MINUTES = 30.0
DEFAULT_LOAD = 0.7
DEFAULT_OUT = PROJECT_ROOT / "docs" / "soak"
DEFAULT_ROOMS = 3
DEFAULT_SAMPLE_S = 10.0
LATENCY_WINDOW_S = 60.0
REPORT_NAME = "soak.json"
PLOT_NAME = "soak.png"

# drift windows, for a 30-minute run; shorter runs scale them
REFERENCE_DURATION_S = 30 * S_PER_MIN
BASELINE_START_S = 3 * S_PER_MIN
BASELINE_END_S = 8 * S_PER_MIN
FINAL_WINDOW_S = 5 * S_PER_MIN

# targets
TARGET_RSS_DRIFT_PERCENT = 5.0
TARGET_ERRORS = 0

# calibration
CAL_SESSIONS_PER_CORE = 2
DEFAULT_CALIBRATE_S = 15.0
CAL_RETRY_AFTER_S = 1.0
"""A saturated client refused (429) waits this long, as the reply's Retry-After says."""
REFUSALS = frozenset({"engine_busy", "queue_full", "too_many_sessions"})
"""Error codes of a service that is full and says so (back-pressure)."""
BUSY_OTHER_CORES = 0.3
"""Other processes using more than this during calibration make the capacity measure low."""
CAL_TEXTS = 4
"""Texts per language spoken back to back by one client (after one discarded warm-up)."""
DEFAULT_S_PER_CHAR = {"en": 0.065, "nl": 0.07, "ja": 0.17}
"""Audio seconds per character before calibration measures them."""

# pacing
JITTER = (0.5, 1.5)
START_SPREAD_S = 5.0
LANE_MAX_AUDIO_S_PER_S = 1.5
"""A WebSocket or HTTP client offers at most this many audio seconds per second; more lanes
share a kind's rate beyond it."""
ROOM_MAX_DUTY = 0.6
"""A room speaks at most this share of the time (one utterance at a time, heard to the end)."""
LONG_TEXT_SHARE = 0.1

# requests
REQUEST_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
WS_REQUESTS_PER_CONNECTION = 10
WS_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
INCREMENTAL_WORDS = (2, 5)
INCREMENTAL_GAP_S = (0.02, 0.08)
"""Pause between pieces of incremental text, as tokens from a language model."""
CANCEL_AFTER_S = 0.4
SPEECH_SAMPLE_RATE_HZ = 24_000
"""``/v1/audio/speech`` answers at 24 kHz."""
ROOM_REPLY_TIMEOUT_S = 120.0
"""``POST /rooms/{room}/speak`` waits up to 45 s for an agent, then sends up to 3 times."""
ROOM_AUDIO_TIMEOUT_S = 30.0
ROOM_END_SILENCE_S = 1.5
"""An utterance in a room has ended when nothing audible came for this long."""
ROOM_UTTERANCE_MAX_S = 120.0
ROOM_POLL_S = 0.02
ROOM_END_POLL_S = 0.1
ERROR_DETAIL_CHARS = 200
BUSY_CPU_FIELDS = ("user", "nice", "system", "irq", "softirq")

# processes
API_START_TIMEOUT_S = 300.0
WORKER_START_TIMEOUT_S = 300.0
START_POLL_S = 0.5
API_STOP_TIMEOUT_S = 15.0
DRAIN_TIMEOUT_S = 150.0
"""After the last request has started, how long the ones in flight may take to finish."""
HEALTH_TIMEOUT_S = 5.0
METRICS_TIMEOUT_S = 5.0
WORKER_COMMAND_FLAG = "--no-supervise"
LOG_PATTERNS = {
    "traceback": re.compile(r"Traceback \(most recent call last\)"),
    "error": re.compile(r"\bERROR\b|\bCRITICAL\b"),
    "stream_ended_early": re.compile(r"speech stream ended early"),
    "worker_restart": re.compile(r"supervisor: the worker ended"),
    "loop_blocked": re.compile(r"event loop blocked"),
}
LOG_EXAMPLES = 5
LOG_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}[,.]\d{3})")
LOG_TIME_FORMAT = "%Y-%m-%d %H:%M:%S,%f"

EXIT_OK = 0
EXIT_TARGET_MISSED = 1
EXIT_SETUP_FAILED = 2
EXIT_INTERRUPTED = 130

DUTCH_TEXTS = (
    "Goedemorgen, waarmee kan ik u vandaag helpen?",
    "Uw bestelling is verzonden en komt donderdag aan.",
    "De volgende trein naar het vliegveld vertrekt om tien uur veertig.",
    "Een ogenblik alstublieft, ik zoek het even voor u op.",
)
ROOM_WARM_TEXT = "Hello, this room is ready."
LONG_TEXT = (
    "Welcome back to the evening news. Tonight we look at how small towns across the country "
    "are rebuilding their main streets, one shop at a time. In the first story, a baker who "
    "moved home after twenty years in the city explains why she opened her shop in a building "
    "that had been empty for a decade. Later, we visit a library that now lends tools, seeds "
    "and musical instruments as well as books. Finally, the weather: a mild night with clear "
    "skies, and a warm, sunny weekend ahead."
)
"""About 30 s of speech."""


# ---------------------------------------------------------------------------------------------
# the traffic mix


WS, HTTP, ROOM = "ws", "http", "room"
WHOLE, INCREMENTAL, CANCEL, SYNTHESIZE, SPEECH, SPEAK = (
    "whole",
    "incremental",
    "cancel",
    "synthesize",
    "speech",
    "speak",
)


@dataclass(frozen=True)
class Kind:
    """One kind of traffic: how it reaches the service and what it says."""

    name: str
    transport: str
    """``ws``, ``http`` or ``room``."""
    mode: str
    """ws: whole / incremental / cancel; http: synthesize / speech; room: speak."""
    language: str
    share: float
    """Share of the offered audio seconds."""
    texts: tuple[str, ...]
    long_share: float = 0.0
    """Share of requests that speak LONG_TEXT instead."""


ENGLISH = REPLIES["en"]
JAPANESE = REPLIES["ja"]
MIX: tuple[Kind, ...] = (
    Kind("ws", WS, WHOLE, "en", 0.22, ENGLISH, LONG_TEXT_SHARE),
    Kind("ws_incremental", WS, INCREMENTAL, "en", 0.12, ENGLISH, LONG_TEXT_SHARE),
    Kind("ws_cancel", WS, CANCEL, "en", 0.06, ENGLISH[3:6] + (LONG_TEXT,)),
    Kind("http_synthesize", HTTP, SYNTHESIZE, "en", 0.10, ENGLISH),
    Kind("http_speech", HTTP, SPEECH, "en", 0.14, ENGLISH, LONG_TEXT_SHARE),
    Kind("http_espeak_nl", HTTP, SYNTHESIZE, "nl", 0.03, DUTCH_TEXTS),
    Kind("ws_ja", WS, WHOLE, "ja", 0.015, JAPANESE),
    Kind("http_speech_ja", HTTP, SPEECH, "ja", 0.015, JAPANESE),
    Kind("room", ROOM, SPEAK, "en", 0.30, ENGLISH, LONG_TEXT_SHARE),
)
KINDS = {kind.name: kind for kind in MIX}


# ---------------------------------------------------------------------------------------------
# what is recorded


@dataclass
class RequestRecord:
    """One request as the client saw it; times in ms, audio in seconds."""

    kind: str
    language: str
    start_s: float
    """Seconds since the soak began (negative: calibration)."""
    characters: int
    ttfa_ms: float | None = None
    total_ms: float | None = None
    audio_s: float = 0.0
    error: str | None = None
    """An error code; None when the request succeeded."""
    detail: str | None = None
    cancelled: bool = False
    client_underruns: int = 0
    """WebSocket: chunks that came after a real-time player had played everything before them;
    rooms: gaps of more than 30 ms between the listener's frames."""
    client_stalled: int = 0
    """Rooms: of those gaps, the ones during which this client's own event loop stalled (the
    client, not the service, may have caused them)."""
    server_underruns: int = 0
    """WebSocket: the server's own count in the ``final`` message."""
    reply_ms: float | None = None
    """Rooms: the POST's reply time."""


@dataclass
class ProcessSample:
    pid: int
    rss_mb: float
    fds: int
    threads: int
    cpu_s: float
    """User + system CPU seconds since the process started."""
    cores: float | None
    """Average cores used since the previous sample."""


@dataclass
class Sample:
    t_s: float
    processes: dict[str, ProcessSample]
    """``api``, ``worker``, ``supervisor``, ``livekit``, ``client`` (absent when gone)."""
    other_cores: float | None = None
    """Cores used by every other process on the machine since the previous sample."""
    steal_cores: float | None = None
    health: dict[str, Any] = field(default_factory=dict)
    api_metrics: dict[str, float] = field(default_factory=dict)
    api_errors: dict[str, float] = field(default_factory=dict)
    worker_metrics: dict[str, float] = field(default_factory=dict)
    worker_errors: dict[str, float] = field(default_factory=dict)
    requests: int = 0
    """Requests finished so far (client side)."""
    errors: int = 0
    """Of those, failed."""
    worker_restarts: int = 0


# ---------------------------------------------------------------------------------------------
# arithmetic (pure; tests/test_soak_tool.py)


def transport_of(record: RequestRecord) -> str | None:
    kind = KINDS.get(record.kind)
    return None if kind is None else kind.transport


def drift_windows(duration_s: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """(baseline, final) windows in seconds since the start: minutes 3-8 and the last 5
    minutes of a 30-minute (or longer) run, shrunk in proportion for a shorter one."""
    scale = min(1.0, duration_s / REFERENCE_DURATION_S)
    baseline = (BASELINE_START_S * scale, BASELINE_END_S * scale)
    final = (duration_s - FINAL_WINDOW_S * scale, duration_s)
    return baseline, final


def window_median(
    points: Iterable[tuple[float, float]], window: tuple[float, float]
) -> float | None:
    """Median of the values whose time is in [start, end] (None when there are none)."""
    start, end = window
    values = [value for t, value in points if start <= t <= end]
    return float(np.median(values)) if values else None


def drift(points: Sequence[tuple[float, float]], duration_s: float) -> dict[str, float | None]:
    """How much a quantity moved from after warm-up to the end: medians of the baseline and
    final windows, their difference and that difference in percent of the baseline."""
    baseline_window, final_window = drift_windows(duration_s)
    baseline = window_median(points, baseline_window)
    final = window_median(points, final_window)
    change = None if baseline is None or final is None else final - baseline
    percent = None if change is None or not baseline else change / baseline * PERCENT
    return {"baseline": baseline, "final": final, "change": change, "percent": percent}


def slope_per_min(points: Sequence[tuple[float, float]], since_s: float) -> float | None:
    """Least-squares slope (units per minute) of the points from ``since_s`` on."""
    kept = [(t, v) for t, v in points if t >= since_s]
    if len(kept) < 2 or kept[-1][0] == kept[0][0]:
        return None
    times = np.asarray([t for t, _ in kept]) / S_PER_MIN
    values = np.asarray([v for _, v in kept])
    return float(np.polyfit(times, values, 1)[0])


def process_series(
    samples: Sequence[Sample], process: str, quantity: str
) -> list[tuple[float, float]]:
    """(t_s, value) of one quantity (``rss_mb``, ``fds``, ``threads``) of one process."""
    series: list[tuple[float, float]] = []
    for sample in samples:
        found = sample.processes.get(process)
        if found is not None:
            series.append((sample.t_s, float(getattr(found, quantity))))
    return series


def latency_stats(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "count": len(values),
        "p50": percentile(values, P50),
        "p95": percentile(values, P95),
        "p99": percentile(values, P99),
        "max": max(values) if values else None,
    }


def latency_windows(
    records: Sequence[RequestRecord], window_s: float = LATENCY_WINDOW_S
) -> list[dict[str, Any]]:
    """Per window (by request start) and kind: requests, errors and time to first audio
    percentiles (of the requests that succeeded)."""
    grouped: dict[tuple[int, str], list[RequestRecord]] = {}
    for record in records:
        index = max(0, int(record.start_s // window_s))
        grouped.setdefault((index, record.kind), []).append(record)
    windows: list[dict[str, Any]] = []
    for (index, kind), group in sorted(grouped.items()):
        ttfas = [r.ttfa_ms for r in group if r.error is None and r.ttfa_ms is not None]
        stats = latency_stats(ttfas)
        windows.append(
            {
                "window": index,
                "start_s": index * window_s,
                "kind": kind,
                "requests": len(group),
                "errors": sum(r.error is not None for r in group),
                "ttfa_p50_ms": stats["p50"],
                "ttfa_p95_ms": stats["p95"],
                "ttfa_p99_ms": stats["p99"],
            }
        )
    return windows


def counter_delta(first: Mapping[str, float], last: Mapping[str, float]) -> dict[str, float]:
    """What counters (by label) grew by between two readings; only those that grew."""
    grown = {key: value - first.get(key, 0.0) for key, value in last.items()}
    return {key: value for key, value in grown.items() if value > 0}


def metric_delta(samples: Sequence[Sample], source: str, name: str) -> float | None:
    """Growth of a counter (``worker_metrics`` / ``api_metrics``) from the first sample that
    has it to the last."""
    readings = [getattr(s, source)[name] for s in samples if name in getattr(s, source)]
    return readings[-1] - readings[0] if readings else None


def summarize(
    samples: Sequence[Sample],
    records: Sequence[RequestRecord],
    duration_s: float,
    *,
    target_audio_s_per_s: float | None = None,
    log_findings: Mapping[str, Any] | None = None,
    client_lag_ms: Sequence[float] = (),
) -> dict[str, Any]:
    """The soak's figures and its verdict (``failures``, empty when every target is met)."""
    baseline_window, final_window = drift_windows(duration_s)
    drifts: dict[str, Any] = {}
    for process in ("api", "worker"):
        rss = process_series(samples, process, "rss_mb")
        drifts[process] = {
            "rss_mb": drift(rss, duration_s),
            "fds": drift(process_series(samples, process, "fds"), duration_s),
            "threads": drift(process_series(samples, process, "threads"), duration_s),
            "rss_slope_mb_per_min": slope_per_min(rss, baseline_window[0]),
        }
    errors = [r for r in records if r.error is not None]
    by_kind: dict[str, Any] = {}
    for kind in sorted({r.kind for r in records}):
        mine = [r for r in records if r.kind == kind]
        ok = [r for r in mine if r.error is None]
        by_kind[kind] = {
            "requests": len(mine),
            "errors": len(mine) - len(ok),
            "cancelled": sum(r.cancelled for r in mine),
            "audio_s": round(sum(r.audio_s for r in mine), 3),
            "ttfa_ms": latency_stats([r.ttfa_ms for r in ok if r.ttfa_ms is not None]),
        }
    first, last = (samples[0], samples[-1]) if samples else (None, None)
    server_errors = {
        "api": counter_delta(first.api_errors, last.api_errors) if first and last else {},
        "worker": counter_delta(first.worker_errors, last.worker_errors) if first and last else {},
    }
    health = [s.health for s in samples]
    health_failures = sum(1 for h in health if "error" in h)
    answered = [h for h in health if "error" not in h]
    delivered = sum(r.audio_s for r in records) / duration_s if duration_s > 0 else 0.0
    summary: dict[str, Any] = {
        "duration_s": duration_s,
        "windows_s": {"baseline": baseline_window, "final": final_window},
        "samples": len(samples),
        "requests": len(records),
        "errors_total": len(errors),
        "errors_by_code": dict(Counter(str(r.error) for r in errors).most_common()),
        "errors_by_kind": dict(Counter(r.kind for r in errors).most_common()),
        "error_examples": [
            {"kind": r.kind, "start_s": round(r.start_s, 1), "error": r.error, "detail": r.detail}
            for r in errors[:LOG_EXAMPLES]
        ],
        "server_errors": server_errors,
        "drift": drifts,
        "kinds": by_kind,
        "offered_audio_s_per_s": target_audio_s_per_s,
        "delivered_audio_s_per_s": delivered,
        "underruns": {
            "worker_playback": metric_delta(
                samples, "worker_metrics", "tts_playback_underruns_total"
            ),
            "ws_client": sum(r.client_underruns for r in records if transport_of(r) == WS),
            "ws_server": sum(r.server_underruns for r in records),
            "room_listener_gaps": sum(
                r.client_underruns for r in records if transport_of(r) == ROOM
            ),
            "room_listener_gaps_client_stalled": sum(r.client_stalled for r in records),
        },
        "worker_restarts": last.worker_restarts if last else 0,
        "health": {
            "failures": health_failures,
            "statuses": dict(Counter(str(h.get("status")) for h in answered)),
            "queue_depth_max": max((int(h.get("queue_depth") or 0) for h in answered), default=0),
            "active_utterances_max": max(
                (int(h.get("active_utterances") or 0) for h in answered), default=0
            ),
            "active_sessions_max": max(
                (int(h.get("active_sessions") or 0) for h in answered), default=0
            ),
            "answer_ms": latency_stats(
                [float(h["answer_ms"]) for h in answered if "answer_ms" in h]
            ),
        },
        "logs": dict(log_findings or {}),
        "client_loop_lag_ms": latency_stats(client_lag_ms),
    }
    summary["failures"] = verdict(summary)
    summary["passed"] = not summary["failures"]
    return summary


def verdict(summary: Mapping[str, Any]) -> list[str]:
    """The targets a summary misses, in words."""
    failures: list[str] = []
    if summary["errors_total"] > TARGET_ERRORS:
        failures.append(f"{summary['errors_total']} client errors: {summary['errors_by_code']}")
    for process, counts in summary["server_errors"].items():
        if counts:
            failures.append(f"{process} counted errors: {counts}")
    for process, figures in summary["drift"].items():
        percent = figures["rss_mb"]["percent"]
        if percent is None:
            failures.append(f"{process} RSS drift not measured (no samples in a window)")
        elif percent >= TARGET_RSS_DRIFT_PERCENT:
            failures.append(
                f"{process} RSS drift {percent:+.1f} % (target < {TARGET_RSS_DRIFT_PERCENT:g} %)"
            )
    if summary["worker_restarts"]:
        failures.append(f"the worker restarted {summary['worker_restarts']} time(s)")
    if summary["health"]["failures"]:
        failures.append(f"/health did not answer {summary['health']['failures']} time(s)")
    return failures


# ---------------------------------------------------------------------------------------------
# the plan: rates from the calibration


@dataclass(frozen=True)
class KindPlan:
    kind: str
    share: float
    cost_cpu_s_per_audio_s: float
    audio_s_per_s: float
    lanes: int


@dataclass(frozen=True)
class Plan:
    load: float
    usable_cores: float
    mix_cost_cpu_s_per_audio_s: float
    capacity_streams: float
    """Concurrent real-time streams of this mix the usable cores sustain."""
    target_audio_s_per_s: float
    kinds: tuple[KindPlan, ...]

    def of(self, kind: str) -> KindPlan:
        return next(k for k in self.kinds if k.kind == kind)


def plan_traffic(
    mix: Sequence[Kind],
    costs: Mapping[str, float],
    usable_cores: float,
    load: float,
    min_rooms: int,
) -> Plan:
    """Rates per kind: ``load`` times the mix's capacity (``usable_cores`` over the
    share-weighted CPU seconds per audio second), split by share; enough lanes (clients,
    rooms) that none has to offer more than it can."""
    total_share = sum(kind.share for kind in mix)
    mix_cost = sum(kind.share / total_share * costs[kind.name] for kind in mix)
    capacity = usable_cores / mix_cost
    target = load * capacity
    plans: list[KindPlan] = []
    for kind in mix:
        rate = kind.share / total_share * target
        if kind.transport == ROOM:
            lanes = max(min_rooms, math.ceil(rate / ROOM_MAX_DUTY))
        else:
            lanes = max(1, math.ceil(rate / LANE_MAX_AUDIO_S_PER_S))
        plans.append(KindPlan(kind.name, kind.share, costs[kind.name], rate, lanes))
    return Plan(load, usable_cores, mix_cost, capacity, target, tuple(plans))


# ---------------------------------------------------------------------------------------------
# the processes


def soak_config(log_dir: Path) -> Path:
    """The shipped configuration without Edge TTS (no internet here), as a file for both
    processes."""
    config = load_config(PROJECT_ROOT / "config.yaml")
    config = config.model_copy(update={"disabled_engines": (EngineName.EDGE,)})
    path = log_dir / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    return path


class ApiProcess:
    """``hive-tts serve`` as a child process, its output in a log file."""

    def __init__(self, config: Path, port: int, env: Mapping[str, str], log_path: Path) -> None:
        command = [sys.executable, "-m", "hive_tts.cli", "--config", str(config)]
        command += ["serve", "--host", LOOPBACK_IP, "--port", str(port)]
        self.url = f"http://{LOOPBACK_IP}:{port}"
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=PROJECT_ROOT,
                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def wait_ready(self, timeout_s: float = API_START_TIMEOUT_S) -> None:
        """Until ``/health`` answers 200 (the engines are loaded); raises if it exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"hive-tts serve exited: {self.log_tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(
                    self.url + "/health", timeout=HEALTH_TIMEOUT_S
                ) as reply:
                    if reply.status == 200:
                        return
            time.sleep(START_POLL_S)
        raise RuntimeError(f"hive-tts serve not ready after {timeout_s:.0f} s: {self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(API_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_metrics_url(worker: WorkerProcess, timeout_s: float = WORKER_START_TIMEOUT_S) -> str:
    """The worker's ``/metrics`` URL, printed once its engines are loaded."""
    deadline = time.monotonic() + timeout_s
    while worker.metrics_url is None:
        if worker.process.poll() is not None:
            raise RuntimeError(f"hive-tts agent exited: {worker.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"hive-tts agent printed no metrics URL: {worker.log_tail()}")
        time.sleep(START_POLL_S)
    return worker.metrics_url


@dataclass
class Stage:
    """Everything started for the soak."""

    server: DevServer
    worker: WorkerProcess
    api: ApiProcess
    log_dir: Path
    config: Path

    @property
    def worker_metrics_url(self) -> str:
        assert self.worker.metrics_url is not None
        return self.worker.metrics_url


def start_stage(config: Path, log_dir: Path, processes: ExitStack) -> Stage:
    """LiveKit (webhooks to the API), the worker, then the API (told where the worker's status
    is); returns once the worker is registered and the API's engines are loaded."""
    api_port = free_port()
    webhook = f"http://{LOOPBACK_IP}:{api_port}/livekit/webhook"
    server = DevServer.start(log_dir=log_dir, webhook_urls=[webhook])
    processes.callback(server.stop)
    print(f"livekit-server {server.url} (log {server.log_path})", flush=True)
    worker = WorkerProcess(server, config, log_dir / "worker.log")
    processes.callback(worker.stop)
    metrics_url = wait_metrics_url(worker)
    env = {**server.env(), WORKER_URLS_ENV: metrics_url.replace("/metrics", "/worker")}
    api = ApiProcess(config, api_port, env, log_dir / "api.log")
    processes.callback(api.stop)
    worker.wait_registered(WORKER_START_TIMEOUT_S)
    api.wait_ready()
    print(
        f"worker pid {worker.process.pid} ({metrics_url}), API pid {api.process.pid} "
        f"({api.url}); logs in {log_dir}",
        flush=True,
    )
    return Stage(server, worker, api, log_dir, config)


def scan_logs(paths: Mapping[str, Path], until: datetime | None = None) -> dict[str, Any]:
    """Counts of worrying lines (tracebacks, ERROR, streams ended early, restarts) per log,
    with a few examples; lines logged after ``until`` (local time: the rooms and processes
    being torn down) are counted apart, in ``after_soak``."""
    findings: dict[str, Any] = {}
    for name, path in paths.items():
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        counts: dict[str, int] = {}
        after: dict[str, int] = {}
        examples: list[str] = []
        late = False  # a line without a time belongs to the last line that had one
        for line in lines:
            stamp = LOG_TIME.match(line)
            if stamp is not None and until is not None:
                with contextlib.suppress(ValueError):
                    logged = datetime.strptime(stamp.group(1).replace(".", ","), LOG_TIME_FORMAT)
                    late = logged > until
            for pattern_name, pattern in LOG_PATTERNS.items():
                if pattern.search(line):
                    bucket = after if late else counts
                    bucket[pattern_name] = bucket.get(pattern_name, 0) + 1
                    if not late and len(examples) < LOG_EXAMPLES:
                        examples.append(line[:ERROR_DETAIL_CHARS])
        findings[name] = {
            "path": str(path),
            "counts": counts,
            "examples": examples,
            "after_soak": after,
        }
    return findings


# ---------------------------------------------------------------------------------------------
# watching the processes


def find_worker_child(supervisor: psutil.Process) -> psutil.Process | None:
    """The process that serves the rooms: the supervisor's ``--no-supervise`` child."""
    with contextlib.suppress(psutil.Error):
        for child in supervisor.children():
            with contextlib.suppress(psutil.Error):
                if WORKER_COMMAND_FLAG in child.cmdline():
                    return child
    return None


class ProcessWatch:
    """RSS, descriptors, threads and CPU of one process, sampled; the process may be replaced
    (a restarted worker), which ``rebind`` records."""

    def __init__(self, process: psutil.Process | None) -> None:
        self.process = process
        self._last: tuple[float, float] | None = None
        self.replaced = 0

    def rebind(self, process: psutil.Process | None) -> None:
        if process is None:
            return
        if self.process is not None and self.process.pid != process.pid:
            self.replaced += 1
            self._last = None
        self.process = process

    def cpu_s(self) -> float | None:
        if self.process is None:
            return None
        try:
            times = self.process.cpu_times()
        except psutil.Error:
            return None
        return float(times.user + times.system)

    def sample(self) -> ProcessSample | None:
        if self.process is None:
            return None
        try:
            with self.process.oneshot():
                rss = self.process.memory_info().rss / BYTES_PER_MB
                fds = self.process.num_fds()
                threads = self.process.num_threads()
                times = self.process.cpu_times()
        except psutil.Error:
            return None
        cpu = float(times.user + times.system)
        now = time.perf_counter()
        cores = None
        if self._last is not None and now > self._last[0]:
            cores = (cpu - self._last[1]) / (now - self._last[0])
        self._last = (now, cpu)
        return ProcessSample(self.process.pid, rss, fds, threads, cpu, cores)


def read_metrics(text: str) -> tuple[dict[str, float], dict[str, float]]:
    """(sample name -> value summed over its labels, error code -> ``tts_request_errors_total``)."""
    sums: dict[str, float] = {}
    errors: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + float(sample.value)
            if sample.name == "tts_request_errors_total":
                code = sample.labels.get("code", "?")
                errors[code] = errors.get(code, 0.0) + float(sample.value)
    return sums, errors


API_METRICS = ("tts_active_sessions", "tts_audio_output_seconds_total", "tts_fallbacks_total")
WORKER_METRICS = (
    "tts_playback_underruns_total",
    "tts_rooms_active",
    "tts_room_speaking_tracks",
    "tts_room_queue_depth",
    "tts_worker_load",
    "tts_audio_output_seconds_total",
    "tts_fallbacks_total",
)


class Sampler:
    """Takes a :class:`Sample` of every process, the API's health and both metrics pages."""

    def __init__(self, stage: Stage, http: aiohttp.ClientSession) -> None:
        self._stage = stage
        self._http = http
        self._supervisor = psutil.Process(stage.worker.process.pid)
        self.watches = {
            "api": ProcessWatch(psutil.Process(stage.api.process.pid)),
            "worker": ProcessWatch(find_worker_child(self._supervisor)),
            "supervisor": ProcessWatch(self._supervisor),
            "livekit": ProcessWatch(psutil.Process(stage.server.process.pid)),
            "client": ProcessWatch(psutil.Process()),
        }
        self._machine: tuple[float, float, float] | None = None

    def _processes(self) -> tuple[dict[str, ProcessSample], float | None, float | None]:
        self.watches["worker"].rebind(find_worker_child(self._supervisor))
        taken = {name: watch.sample() for name, watch in self.watches.items()}
        processes = {name: s for name, s in taken.items() if s is not None}
        busy = machine_busy_s()
        steal = float(getattr(psutil.cpu_times(), "steal", 0.0))
        now = time.perf_counter()
        other = stolen = None
        if self._machine is not None:
            wall = now - self._machine[0]
            ours = sum(s.cores or 0.0 for s in processes.values())
            other = max(0.0, (busy - self._machine[1]) / wall - ours)
            stolen = (steal - self._machine[2]) / wall
        self._machine = (now, busy, steal)
        return processes, other, stolen

    async def _health(self) -> dict[str, Any]:
        asked = time.perf_counter()
        try:
            async with self._http.get(
                self._stage.api.url + "/health",
                timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S),
            ) as reply:
                body = await reply.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return {"error": f"{type(exc).__name__}: {exc}"[:ERROR_DETAIL_CHARS]}
        answer_ms = (time.perf_counter() - asked) * MS_PER_S
        keys = ("status", "active_sessions", "active_utterances", "queue_depth", "problems")
        return {"answer_ms": round(answer_ms, 1), "http_status": reply.status} | {
            key: body.get(key) for key in keys
        }

    async def metrics(self, url: str) -> tuple[dict[str, float], dict[str, float]]:
        try:
            async with self._http.get(
                url, timeout=aiohttp.ClientTimeout(total=METRICS_TIMEOUT_S)
            ) as reply:
                text = await reply.text()
        except (aiohttp.ClientError, TimeoutError):
            return {}, {}
        return read_metrics(text)

    async def take(self, t_s: float, records: Sequence[RequestRecord]) -> Sample:
        (processes, other, steal), health, api, worker = await asyncio.gather(
            asyncio.to_thread(self._processes),
            self._health(),
            self.metrics(self._stage.api.url + "/metrics"),
            self.metrics(self._stage.worker_metrics_url),
        )
        return Sample(
            t_s=round(t_s, 2),
            processes=processes,
            other_cores=other,
            steal_cores=steal,
            health=health,
            api_metrics={k: v for k, v in api[0].items() if k in API_METRICS},
            api_errors=api[1],
            worker_metrics={k: v for k, v in worker[0].items() if k in WORKER_METRICS},
            worker_errors=worker[1],
            requests=len(records),
            errors=sum(r.error is not None for r in records),
            worker_restarts=self.watches["worker"].replaced,
        )


# ---------------------------------------------------------------------------------------------
# the clients


class Speaker(Protocol):
    async def speak(self, kind: Kind, text: str, start_s: float) -> RequestRecord: ...

    async def aclose(self) -> None: ...


def _failure(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, TimeoutError):
        return "timeout", "no reply in time"
    return f"connection_{type(exc).__name__}", str(exc)[:ERROR_DETAIL_CHARS]


async def http_error(reply: aiohttp.ClientResponse) -> tuple[str, str]:
    """(code, message) of an error reply: the service's JSON body, else the status."""
    text = await reply.text()
    with contextlib.suppress(ValueError, KeyError, TypeError):
        error = json.loads(text)["error"]
        return str(error["code"]), str(error.get("message", ""))[:ERROR_DETAIL_CHARS]
    return f"http_{reply.status}", text[:ERROR_DETAIL_CHARS]


WS_ENDED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


class WsSpeaker:
    """One WebSocket client: one request at a time, reconnecting every few requests.

    Like any client library it reads its connection all the time, also between requests (a
    reader task into an inbox): aiohttp answers the server's heartbeat pings only while the
    connection is read, and the server closes a connection whose pongs do not come."""

    def __init__(self, http: aiohttp.ClientSession, url: str, seed: int) -> None:
        self._http = http
        self._url = url
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._inbox: asyncio.Queue[aiohttp.WSMessage] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._used = 0
        self._rng = random.Random(seed)
        self._name = uuid.uuid4().hex[:8]
        self._ids = itertools.count(1)

    @staticmethod
    async def _read(ws: aiohttp.ClientWebSocketResponse, inbox: asyncio.Queue[Any]) -> None:
        while True:
            message = await ws.receive()
            inbox.put_nowait(message)
            if message.type in WS_ENDED:
                return

    async def _connection(self) -> aiohttp.ClientWebSocketResponse:
        ended = self._reader is not None and self._reader.done()
        if self._ws is not None and (ended or self._used >= WS_REQUESTS_PER_CONNECTION):
            await self._drop()
        if self._ws is None:
            self._ws = await asyncio.wait_for(
                self._http.ws_connect(self._url, max_msg_size=WS_MAX_MESSAGE_BYTES),
                CONNECT_TIMEOUT_S,
            )
            self._inbox = asyncio.Queue()
            self._reader = asyncio.create_task(self._read(self._ws, self._inbox))
            self._used = 0
        while not self._inbox.empty():  # what came after an earlier request's end
            self._inbox.get_nowait()
        self._used += 1
        return self._ws

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), CONNECT_TIMEOUT_S)

    async def aclose(self) -> None:
        await self._drop()

    def _pieces(self, text: str) -> list[str]:
        words = text.split(" ")
        pieces: list[str] = []
        while words:
            take = self._rng.randint(*INCREMENTAL_WORDS)
            pieces.append(" ".join(words[:take]) + (" " if len(words) > take else ""))
            words = words[take:]
        return pieces

    async def _write_incremental(
        self, ws: aiohttp.ClientWebSocketResponse, text: str, options: dict[str, Any]
    ) -> None:
        for index, piece in enumerate(self._pieces(text)):
            message = {"type": "text", "text": piece, **(options if index == 0 else {})}
            await ws.send_json(message)
            await asyncio.sleep(self._rng.uniform(*INCREMENTAL_GAP_S))
        await ws.send_json({"type": "flush"})

    async def speak(self, kind: Kind, text: str, start_s: float) -> RequestRecord:
        record = RequestRecord(kind.name, kind.language, start_s, len(text))
        request_id = f"{self._name}-{next(self._ids)}"
        try:
            ws = await self._connection()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            record.error, record.detail = "connect_failed", _failure(exc)[1]
            await self._drop()
            return record
        options = {"language": kind.language, "request_id": request_id}
        listener = PlaybackClock()
        writer: asyncio.Task[None] | None = None
        sent = time.perf_counter()
        deadline = sent + REQUEST_TIMEOUT_S
        cancel_at: float | None = None
        cancel_sent = False
        try:
            if kind.mode == INCREMENTAL:
                writer = asyncio.create_task(self._write_incremental(ws, text, options))
            else:
                await ws.send_json({"text": text, "stream": True, **options})
            while True:
                wake = deadline if cancel_at is None or cancel_sent else min(deadline, cancel_at)
                try:
                    message = await asyncio.wait_for(
                        self._inbox.get(), max(0.001, wake - time.perf_counter())
                    )
                except TimeoutError:
                    if cancel_at is not None and not cancel_sent and time.perf_counter() < deadline:
                        await ws.send_json({"type": "cancel"})
                        cancel_sent = True
                        continue
                    raise
                arrived = time.perf_counter()
                if message.type is not aiohttp.WSMsgType.TEXT:
                    record.error = f"connection_{message.type.name.lower()}"
                    await self._drop()
                    break
                data = json.loads(message.data)
                if data.get("request_id") not in (None, request_id):
                    continue  # a late reply to an earlier request
                kind_of = data.get("type")
                if kind_of == "audio":
                    if record.ttfa_ms is None:
                        record.ttfa_ms = (arrived - sent) * MS_PER_S
                        if kind.mode == CANCEL:
                            cancel_at = arrived + CANCEL_AFTER_S
                    samples = base64_payload_bytes(data["audio_chunk"]) / PCM16_BYTES_PER_SAMPLE
                    listener.on_chunk(arrived, samples / int(data["sample_rate"]))
                elif kind_of == "final":
                    record.total_ms = (arrived - sent) * MS_PER_S
                    record.cancelled = bool(data.get("cancelled"))
                    record.server_underruns = int(data.get("underruns") or 0)
                    break
                elif kind_of == "error":
                    record.error = str(data.get("code") or "error")
                    record.detail = str(data.get("message", ""))[:ERROR_DETAIL_CHARS]
                    break
        except (aiohttp.ClientError, ConnectionError, RuntimeError, TimeoutError) as exc:
            record.error, record.detail = _failure(exc)
            await self._drop()  # whatever it still carries belongs to this request
        finally:
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(BaseException):
                    await writer
        record.audio_s = listener.received_s
        record.client_underruns = listener.underruns
        if record.error is None and record.ttfa_ms is None and not record.cancelled:
            record.error = "no_audio"
        return record


class HttpSpeaker:
    """``POST /synthesize`` (whole WAV in JSON) or ``POST /v1/audio/speech`` (streamed PCM)."""

    def __init__(self, http: aiohttp.ClientSession, api_url: str) -> None:
        self._http = http
        self._api_url = api_url

    async def aclose(self) -> None:
        return None

    async def speak(self, kind: Kind, text: str, start_s: float) -> RequestRecord:
        record = RequestRecord(kind.name, kind.language, start_s, len(text))
        if kind.mode == SYNTHESIZE:
            url = self._api_url + "/synthesize"
            body: dict[str, Any] = {"text": text, "language": kind.language}
        else:
            url = self._api_url + "/v1/audio/speech"
            body = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "pcm"}
        sent = time.perf_counter()
        try:
            async with self._http.post(
                url, json=body, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
            ) as reply:
                if reply.status >= 300:
                    record.error, record.detail = await http_error(reply)
                    return record
                if kind.mode == SYNTHESIZE:
                    record.ttfa_ms = (time.perf_counter() - sent) * MS_PER_S
                    reply_body = await reply.json()
                    record.audio_s = float(reply_body.get("duration_s") or 0.0)
                else:
                    received = 0
                    async for chunk in reply.content.iter_any():
                        if chunk and record.ttfa_ms is None:
                            record.ttfa_ms = (time.perf_counter() - sent) * MS_PER_S
                        received += len(chunk)
                    samples = received / PCM16_BYTES_PER_SAMPLE
                    record.audio_s = samples / SPEECH_SAMPLE_RATE_HZ
                record.total_ms = (time.perf_counter() - sent) * MS_PER_S
        except (aiohttp.ClientError, ConnectionError, TimeoutError, ValueError) as exc:
            record.error, record.detail = _failure(exc)
        if record.error is None and record.audio_s <= 0:
            record.error = "no_audio"
        return record


class RoomSpeaker:
    """A room with one listener: ``POST /rooms/{room}/speak``, then hear it to the end."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        api_url: str,
        room: str,
        listener: BenchParticipant,
        lag: LoopLagProbe,
    ) -> None:
        self._http = http
        self._api_url = api_url
        self.room = room
        self.listener = listener
        self._lag = lag
        self._ids = itertools.count(1)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.listener.leave(), CONNECT_TIMEOUT_S)

    def _heard(self) -> Heard | None:
        return self.listener.heard.get(TRACK)

    async def _first_audible(self, since: float, deadline: float) -> float | None:
        while time.perf_counter() < deadline:
            heard = self._heard()
            if heard is not None:
                count = len(heard.times)
                start = bisect_left(heard.times, since, 0, count)
                found = heard.loud.find(1, start, count)
                if found >= 0:
                    return heard.times[found]
            await asyncio.sleep(ROOM_POLL_S)
        return None

    async def _end(self, first: float) -> float:
        """When the last audible frame came, once nothing audible has come for a while."""
        heard = self._heard()
        assert heard is not None
        start = bisect_left(heard.times, first)
        while True:
            await asyncio.sleep(ROOM_END_POLL_S)
            count = len(heard.times)
            last = heard.loud.rfind(1, start, count)
            last_at = heard.times[last] if last >= 0 else first
            now = time.perf_counter()
            if now - last_at >= ROOM_END_SILENCE_S or now - first > ROOM_UTTERANCE_MAX_S:
                return last_at

    async def speak(self, kind: Kind, text: str, start_s: float) -> RequestRecord:
        record = RequestRecord(kind.name, kind.language, start_s, len(text))
        body = {"id": f"{self.room}-{next(self._ids)}", "text": text, "language": kind.language}
        sent = time.perf_counter()
        try:
            async with self._http.post(
                f"{self._api_url}/rooms/{self.room}/speak",
                json=body,
                timeout=aiohttp.ClientTimeout(total=ROOM_REPLY_TIMEOUT_S),
            ) as reply:
                if reply.status != 202:
                    record.error, record.detail = await http_error(reply)
                    return record
                answer = await reply.json()
                record.reply_ms = (time.perf_counter() - sent) * MS_PER_S
                if answer.get("status") != "accepted":
                    record.detail = f"reply status {answer.get('status')!r}"
        except (aiohttp.ClientError, ConnectionError, TimeoutError, ValueError) as exc:
            record.error, record.detail = _failure(exc)
            return record
        first = await self._first_audible(sent, sent + ROOM_AUDIO_TIMEOUT_S)
        if first is None:
            record.error = "room_no_audio"
            record.detail = f"nothing audible on {TRACK} within {ROOM_AUDIO_TIMEOUT_S:.0f} s"
            return record
        record.ttfa_ms = (first - sent) * MS_PER_S
        last = await self._end(first)
        record.audio_s = last - first + FRAME_S
        record.total_ms = (last - sent) * MS_PER_S
        _, gaps, _ = listen(self._heard(), sent, last)
        record.client_underruns = len(gaps)
        record.client_stalled = sum(self._lag.stalled(a, b) for a, b in gaps)
        return record


async def open_room(
    stage: Stage, http: aiohttp.ClientSession, name: str, lag: LoopLagProbe
) -> tuple[RoomSpeaker, RequestRecord]:
    """Join a listener, then speak once (the API dispatches the agent); raises if unheard."""
    listener = BenchParticipant(f"soak-listener-{name}")
    await listener.join(stage.server, name)
    speaker = RoomSpeaker(http, stage.api.url, name, listener, lag)
    record = await speaker.speak(KINDS["room"], ROOM_WARM_TEXT, 0.0)
    if record.error is not None:
        await speaker.aclose()
        raise RuntimeError(f"room {name}: {record.error}: {record.detail}")
    return speaker, record


# ---------------------------------------------------------------------------------------------
# calibration


@dataclass
class Calibration:
    cores: int
    one_client: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per language: one WebSocket client speaking back to back."""
    saturated: dict[str, Any] = field(default_factory=dict)
    rooms: dict[str, Any] = field(default_factory=dict)
    s_per_char: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_S_PER_CHAR))
    errors: list[str] = field(default_factory=list)

    def costs(self) -> dict[str, float]:
        """CPU seconds per audio second, per kind: English over the API as measured saturated,
        other languages as one client, rooms as the worker plus LiveKit."""
        by_language = {lang: float(f["cpu_per_audio_s"]) for lang, f in self.one_client.items()}
        by_language["en"] = float(self.saturated["cpu_per_audio_s"])
        return {
            kind.name: float(self.rooms["cpu_per_audio_s"])
            if kind.transport == ROOM
            else by_language[kind.language]
            for kind in MIX
        }

    @property
    def usable_cores(self) -> float:
        """The cores the API used saturated: all of them on a quiet machine (at most)."""
        return min(float(self.cores), float(self.saturated["api_cores"]))


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used (all cores), from /proc/stat."""
    times = psutil.cpu_times()
    return sum(float(getattr(times, name, 0.0)) for name in BUSY_CPU_FIELDS)


def _safe_ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


async def one_client(
    http: aiohttp.ClientSession,
    stage: Stage,
    api: ProcessWatch,
    language: str,
    texts: Sequence[str],
) -> tuple[dict[str, Any], list[RequestRecord]]:
    kind = Kind(f"calibrate_{language}", WS, WHOLE, language, 0.0, tuple(texts))
    speaker = WsSpeaker(http, stage.api.url.replace("http", "ws", 1) + "/ws/synthesize", SEED)
    try:
        await speaker.speak(kind, texts[-1], -1.0)  # warm-up, discarded
        cpu_before, began = api.cpu_s() or 0.0, time.perf_counter()
        records = [await speaker.speak(kind, text, -1.0) for text in texts]
        wall, cpu = time.perf_counter() - began, (api.cpu_s() or 0.0) - cpu_before
    finally:
        await speaker.aclose()
    audio = sum(r.audio_s for r in records)
    chars = sum(r.characters for r in records if r.error is None)
    return {
        "requests": len(records),
        "audio_s": audio,
        "wall_s": wall,
        "speed_x_real_time": _safe_ratio(audio, wall),
        "api_cpu_s": cpu,
        "cpu_per_audio_s": _safe_ratio(cpu, audio),
        "s_per_char": _safe_ratio(audio, chars),
        "ttfa_ms_p50": percentile([r.ttfa_ms for r in records if r.ttfa_ms is not None], P50),
    }, records


async def saturate(
    http: aiohttp.ClientSession, stage: Stage, api: ProcessWatch, sessions: int, seconds: float
) -> tuple[dict[str, Any], list[RequestRecord]]:
    """``sessions`` WebSocket clients speaking English back to back for ``seconds``."""
    kind = Kind("calibrate_saturated", WS, WHOLE, "en", 0.0, ENGLISH)
    url = stage.api.url.replace("http", "ws", 1) + "/ws/synthesize"
    records: list[RequestRecord] = []
    client_cpu = ProcessWatch(psutil.Process())
    cpu_before, began = api.cpu_s() or 0.0, time.perf_counter()
    machine_before, client_before = machine_busy_s(), client_cpu.cpu_s() or 0.0
    end = began + seconds

    async def client(index: int) -> None:
        speaker = WsSpeaker(http, url, SEED + index)
        try:
            for text in itertools.cycle(ENGLISH[index:] + ENGLISH[:index]):
                if time.perf_counter() >= end:
                    return
                record = await speaker.speak(kind, text, -1.0)
                records.append(record)
                if record.error in REFUSALS:  # as a client told to retry later does
                    await asyncio.sleep(CAL_RETRY_AFTER_S)
        finally:
            await speaker.aclose()

    await asyncio.gather(*(client(i) for i in range(sessions)))
    wall, cpu = time.perf_counter() - began, (api.cpu_s() or 0.0) - cpu_before
    machine = machine_busy_s() - machine_before
    own = (client_cpu.cpu_s() or 0.0) - client_before
    audio = sum(r.audio_s for r in records)
    return {
        "sessions": sessions,
        "requests": len(records),
        "refused": sum(r.error in REFUSALS for r in records),
        "audio_s": audio,
        "wall_s": wall,
        "streams": _safe_ratio(audio, wall),
        "api_cores": cpu / wall,
        "client_cores": own / wall,
        "other_cores": max(0.0, (machine - cpu - own) / wall),
        "cpu_per_audio_s": _safe_ratio(cpu, audio),
        "ttfa_ms_p50": percentile([r.ttfa_ms for r in records if r.ttfa_ms is not None], P50),
    }, records


async def room_cost(
    speakers: Sequence[RoomSpeaker], sampler: Sampler, worker_metrics_url: str
) -> tuple[dict[str, Any], list[RequestRecord]]:
    """Every room speaks one sentence at once: worker + LiveKit CPU per audio second."""
    worker, livekit = sampler.watches["worker"], sampler.watches["livekit"]

    async def spoken_s() -> float:
        sums, _ = await sampler.metrics(worker_metrics_url)
        return sums.get("tts_audio_output_seconds_total", 0.0)

    def cpu() -> float:
        return (worker.cpu_s() or 0.0) + (livekit.cpu_s() or 0.0)

    audio_before, cpu_before, began = await spoken_s(), cpu(), time.perf_counter()
    texts = [ENGLISH[(i + 1) % len(ENGLISH)] for i in range(len(speakers))]
    records = list(
        await asyncio.gather(
            *(s.speak(KINDS["room"], t, -1.0) for s, t in zip(speakers, texts, strict=True))
        )
    )
    wall, used = time.perf_counter() - began, cpu() - cpu_before
    audio = await spoken_s() - audio_before
    if audio <= 0:  # the worker did not count it: what the listeners heard
        audio = sum(r.audio_s for r in records)
    return {
        "rooms": len(speakers),
        "audio_s": audio,
        "wall_s": wall,
        "cpu_s": used,
        "cpu_per_audio_s": _safe_ratio(used, audio),
        "ttfa_ms_p50": percentile([r.ttfa_ms for r in records if r.ttfa_ms is not None], P50),
    }, records


async def calibrate(
    http: aiohttp.ClientSession,
    stage: Stage,
    sampler: Sampler,
    speakers: Sequence[RoomSpeaker],
    seconds: float,
) -> Calibration:
    cores = psutil.cpu_count() or 1
    calibration = Calibration(cores)
    api = sampler.watches["api"]
    records: list[RequestRecord] = []
    for language, texts in (("en", ENGLISH), ("nl", DUTCH_TEXTS), ("ja", JAPANESE)):
        figures, spoken = await one_client(http, stage, api, language, texts[:CAL_TEXTS])
        calibration.one_client[language] = figures
        records += spoken
        if math.isfinite(figures["s_per_char"]):
            calibration.s_per_char[language] = figures["s_per_char"]
        print(
            f"   one client, {language}: {figures['speed_x_real_time']:.1f}x real time, "
            f"API {figures['cpu_per_audio_s']:.3f} CPU s per audio s",
            flush=True,
        )
    sessions = CAL_SESSIONS_PER_CORE * cores
    calibration.saturated, spoken = await saturate(http, stage, api, sessions, seconds)
    records += spoken
    saturated = calibration.saturated
    print(
        f"   saturated, {sessions} sessions: {saturated['streams']:.1f} real-time English "
        f"streams, API on {saturated['api_cores']:.2f} cores ({saturated['cpu_per_audio_s']:.3f} "
        f"CPU s per audio s); {saturated['refused']} of {saturated['requests']} requests "
        f"refused as busy; other processes {saturated['other_cores']:.2f} cores",
        flush=True,
    )
    if saturated["other_cores"] > BUSY_OTHER_CORES:
        print(
            "   WARNING: other processes competed for the CPU during calibration: the capacity "
            "measured is this machine's share now, not the machine's; run on a quiet machine",
            flush=True,
        )
    calibration.rooms, spoken = await room_cost(speakers, sampler, stage.worker_metrics_url)
    records += spoken
    print(
        f"   rooms, {len(speakers)} at once: worker + LiveKit "
        f"{calibration.rooms['cpu_per_audio_s']:.3f} CPU s per audio s",
        flush=True,
    )
    # refusals are what a saturated probe should meet; anything else is an error
    calibration.errors = [
        f"{r.kind}: {r.error} {r.detail or ''}"
        for r in records
        if r.error and not (r.kind == "calibrate_saturated" and r.error in REFUSALS)
    ]
    unusable = {k: v for k, v in calibration.costs().items() if not (math.isfinite(v) and v > 0)}
    if unusable or not calibration.usable_cores > 0:
        raise RuntimeError(
            f"calibration measured no usable cost for {sorted(unusable)} "
            f"(errors: {calibration.errors[:LOG_EXAMPLES]})"
        )
    return calibration


# ---------------------------------------------------------------------------------------------
# the soak


@dataclass
class Lane:
    kind: Kind
    speaker: Speaker
    audio_s_per_s: float
    seed: int


@dataclass
class Soak:
    """What the traffic and the sampler share."""

    duration_s: float
    s_per_char: Mapping[str, float]
    began: float = field(default_factory=time.perf_counter)
    records: list[RequestRecord] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    kokoro_turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    stopped_s: float | None = None
    """When the traffic stopped (seconds since the start): the end, or an interruption."""

    def now_s(self) -> float:
        return time.perf_counter() - self.began

    def expected_audio_s(self, language: str, text: str) -> float:
        return len(text) * self.s_per_char.get(language, DEFAULT_S_PER_CHAR["en"])


def pick_text(kind: Kind, rng: random.Random) -> str:
    if kind.long_share and rng.random() < kind.long_share:
        return LONG_TEXT
    return rng.choice(kind.texts)


async def run_lane(lane: Lane, soak: Soak) -> None:
    """Requests paced to the lane's rate until the soak's time is up."""
    rng = random.Random(lane.seed)
    next_at = soak.now_s() + rng.uniform(0.0, START_SPREAD_S)
    while next_at < soak.duration_s:
        delay = next_at - soak.now_s()
        if delay > 0:
            await asyncio.sleep(delay)
        started = soak.now_s()
        text = pick_text(lane.kind, rng)
        if lane.kind.language == "ja":  # Kokoro's one worker: one request at a time
            async with soak.kokoro_turn:
                record = await lane.speaker.speak(lane.kind, text, soak.now_s())
        else:
            record = await lane.speaker.speak(lane.kind, text, started)
        soak.records.append(record)
        expected = soak.expected_audio_s(lane.kind.language, text)
        interval = expected / lane.audio_s_per_s * rng.uniform(*JITTER)
        next_at = max(started + interval, soak.now_s())


def _fmt(value: float | None, digits: int = 0, unit: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def progress_line(soak: Soak, sample: Sample) -> str:
    recent = [r for r in soak.records if r.start_s >= sample.t_s - LATENCY_WINDOW_S]
    p95 = {
        kind: percentile([r.ttfa_ms for r in recent if r.kind == kind and r.ttfa_ms], P95)
        for kind in ("ws", "http_speech", "room")
    }
    api = sample.processes.get("api")
    worker = sample.processes.get("worker")
    underruns = sample.worker_metrics.get("tts_playback_underruns_total")
    return (
        f"  {sample.t_s / S_PER_MIN:5.1f} min  requests {sample.requests:5d}  errors "
        f"{sample.errors:3d}  API {_fmt(api.rss_mb if api else None)} MB "
        f"{_fmt(api.fds if api else None)} fds {_fmt(api.threads if api else None)} thr  "
        f"worker {_fmt(worker.rss_mb if worker else None)} MB "
        f"{_fmt(worker.fds if worker else None)} fds  underruns {_fmt(underruns)}  "
        f"queue {sample.health.get('queue_depth', '?')}  TTFA p95 last min: "
        + ", ".join(f"{k} {_fmt(v)}" for k, v in p95.items())
    )


async def sample_until(soak: Soak, sampler: Sampler, every_s: float, stop: asyncio.Event) -> None:
    """A sample at 0, every ``every_s``, and at the end of the soak; a line per minute."""
    next_t = 0.0
    printed_minute = -1
    while True:
        delay = next_t - soak.now_s()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return
        sample = await sampler.take(soak.now_s(), soak.records)
        soak.samples.append(sample)
        minute = int(sample.t_s // S_PER_MIN)
        if minute != printed_minute:
            printed_minute = minute
            print(progress_line(soak, sample), flush=True)
        if next_t >= soak.duration_s:
            return
        next_t = min(next_t + every_s, soak.duration_s)


async def run_soak(args: argparse.Namespace, stage: Stage, state: dict[str, Any]) -> None:
    """Rooms, calibration, then the soak itself; fills ``state`` as it goes (so an interrupted
    run still has what it collected)."""
    connector = aiohttp.TCPConnector(limit=0)
    speakers: list[Speaker] = []
    rooms: list[RoomSpeaker] = []
    lag = LoopLagProbe(stall_after_s=GAP_LIMIT_S - FRAME_S)
    state["lag"] = lag
    async with aiohttp.ClientSession(connector=connector) as http:
        lag.start()
        try:
            sampler = Sampler(stage, http)
            print(f"\n== rooms: opening {args.rooms}", flush=True)
            prefix = f"soak-{uuid.uuid4().hex[:6]}"
            for index in range(args.rooms):
                room, record = await open_room(stage, http, f"{prefix}-{index}", lag)
                rooms.append(room)
                print(f"   {room.room}: first speech after {_fmt(record.ttfa_ms)} ms", flush=True)

            print("\n== calibration", flush=True)
            calibration = await calibrate(http, stage, sampler, rooms, args.calibrate_s)
            state["calibration"] = asdict(calibration)
            plan = plan_traffic(
                MIX, calibration.costs(), calibration.usable_cores, args.load, args.rooms
            )
            state["plan"] = asdict(plan)
            print_plan(plan, calibration)
            for index in range(len(rooms), plan.of("room").lanes):
                room, _ = await open_room(stage, http, f"{prefix}-{index}", lag)
                rooms.append(room)

            soak = Soak(args.minutes * S_PER_MIN, calibration.s_per_char)
            state["soak"] = soak
            lanes = build_lanes(plan, http, stage, rooms, args.seed)
            speakers = [lane.speaker for lane in lanes]
            print(
                f"\n== soak: {args.minutes:g} min at {args.load:.0%} "
                f"({plan.target_audio_s_per_s:.2f} audio s per s, {len(lanes)} clients)",
                flush=True,
            )
            soak.began = time.perf_counter()
            stop = asyncio.Event()
            sampling = asyncio.create_task(sample_until(soak, sampler, args.sample_s, stop))
            traffic = asyncio.gather(*(run_lane(lane, soak) for lane in lanes))
            try:
                await sampling  # ends with the sample at the soak's end
                try:
                    await asyncio.wait_for(asyncio.shield(traffic), DRAIN_TIMEOUT_S)
                except TimeoutError:
                    print("   requests still in flight after the drain wait: cancelled")
                state["after"] = await sampler.take(soak.now_s(), soak.records)
                state["ended_at"] = datetime.now()  # local, as the logs' times
            finally:
                soak.stopped_s = soak.now_s()
                state.setdefault("ended_at", datetime.now())
                stop.set()
                traffic.cancel()
                with contextlib.suppress(BaseException):
                    await traffic
                sampling.cancel()
                with contextlib.suppress(BaseException):
                    await sampling
        finally:
            lag.stop()
            for speaker in speakers:
                if not isinstance(speaker, RoomSpeaker):
                    await speaker.aclose()
            for room in rooms:
                await room.aclose()
            if rooms:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        delete_rooms(stage.server, [r.room for r in rooms]), CONNECT_TIMEOUT_S
                    )


def build_lanes(
    plan: Plan,
    http: aiohttp.ClientSession,
    stage: Stage,
    rooms: Sequence[RoomSpeaker],
    seed: int,
) -> list[Lane]:
    ws_url = stage.api.url.replace("http", "ws", 1) + "/ws/synthesize"
    http_speaker = HttpSpeaker(http, stage.api.url)
    lanes: list[Lane] = []
    seeds = itertools.count(seed)
    for kind_plan in plan.kinds:
        kind = KINDS[kind_plan.kind]
        rate = kind_plan.audio_s_per_s / kind_plan.lanes
        for index in range(kind_plan.lanes):
            speaker: Speaker
            if kind.transport == WS:
                speaker = WsSpeaker(http, ws_url, next(seeds))
            elif kind.transport == HTTP:
                speaker = http_speaker
            else:
                speaker = rooms[index]
            lanes.append(Lane(kind, speaker, rate, next(seeds)))
    return lanes


# ---------------------------------------------------------------------------------------------
# output


def print_plan(plan: Plan, calibration: Calibration) -> None:
    print(
        f"   usable cores {plan.usable_cores:.2f} (of {calibration.cores}); the mix costs "
        f"{plan.mix_cost_cpu_s_per_audio_s:.3f} CPU s per audio s: capacity "
        f"{plan.capacity_streams:.1f} real-time streams; offering {plan.load:.0%}: "
        f"{plan.target_audio_s_per_s:.2f} audio s per s",
        flush=True,
    )
    for kind in plan.kinds:
        print(
            f"     {kind.kind:16} {kind.share:6.1%}  {kind.audio_s_per_s:5.2f} audio s/s  "
            f"{kind.cost_cpu_s_per_audio_s:.3f} CPU s per audio s  {kind.lanes} client(s)",
            flush=True,
        )
    if calibration.errors:
        print(f"   calibration errors: {calibration.errors[:LOG_EXAMPLES]}", flush=True)


def print_summary(summary: Mapping[str, Any]) -> None:
    print("\n== summary", flush=True)
    print(
        f"requests {summary['requests']}, errors {summary['errors_total']} "
        f"{summary['errors_by_code'] or ''}; server-counted errors {summary['server_errors']}"
    )
    offered = summary["offered_audio_s_per_s"]
    print(
        f"audio: offered {_fmt(offered, 2)} s/s, delivered "
        f"{summary['delivered_audio_s_per_s']:.2f} s/s"
    )
    baseline, final = summary["windows_s"]["baseline"], summary["windows_s"]["final"]
    print(
        f"drift: median of {final[0]:.0f}-{final[1]:.0f} s against {baseline[0]:.0f}-"
        f"{baseline[1]:.0f} s"
    )
    for process, figures in summary["drift"].items():
        rss, fds, threads = figures["rss_mb"], figures["fds"], figures["threads"]
        print(
            f"  {process:7} RSS {_fmt(rss['baseline'])} -> {_fmt(rss['final'])} MB "
            f"({_fmt(rss['percent'], 2, ' %')}; slope {_fmt(figures['rss_slope_mb_per_min'], 2)}"
            f" MB/min), fds {_fmt(fds['baseline'])} -> {_fmt(fds['final'])}, threads "
            f"{_fmt(threads['baseline'])} -> {_fmt(threads['final'])}"
        )
    print("time to first audio, ms:")
    print(
        f"  {'kind':16} {'requests':>8} {'errors':>6} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}"
    )
    for kind, figures in summary["kinds"].items():
        ttfa = figures["ttfa_ms"]
        print(
            f"  {kind:16} {figures['requests']:8d} {figures['errors']:6d} "
            f"{_fmt(ttfa['p50']):>7} {_fmt(ttfa['p95']):>7} {_fmt(ttfa['p99']):>7} "
            f"{_fmt(ttfa['max']):>7}"
        )
    print(f"underruns: {summary['underruns']}")
    lag = summary["client_loop_lag_ms"]
    print(
        f"this client's event-loop lag: p99 {_fmt(lag['p99'])} ms, max {_fmt(lag['max'])} ms "
        "(a lagging client delays what it hears)"
    )
    health = summary["health"]
    print(
        f"/health: {health['statuses']}, failures {health['failures']}, queue depth max "
        f"{health['queue_depth_max']}, active utterances max {health['active_utterances_max']}, "
        f"answer p99 {_fmt(health['answer_ms']['p99'])} ms"
    )
    for name, found in summary["logs"].items():
        if found["counts"]:
            print(f"log {name}: {found['counts']}; e.g. {found['examples'][:2]}")
        if found["after_soak"]:
            print(f"log {name}, after the soak (teardown): {found['after_soak']}")
    if summary["failures"]:
        print("MISSED: " + "; ".join(summary["failures"]))
    else:
        print("PASSED: every target met")


def jsonable(value: Any) -> Any:
    """Dataclasses to dicts, floats rounded, NaN to None (strict JSON)."""
    if hasattr(value, "__dataclass_fields__"):
        return jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    return value


def build_report(
    args: Mapping[str, Any],
    state: Mapping[str, Any],
    soak: Soak,
    interrupted: bool,
    log_findings: Mapping[str, Any],
) -> dict[str, Any]:
    # an interrupted run is judged on the time it ran
    ran_s = soak.stopped_s if soak.stopped_s is not None else soak.samples[-1].t_s
    duration = min(soak.duration_s, ran_s) if interrupted else soak.duration_s
    plan = state.get("plan") or {}
    summary = summarize(
        soak.samples,
        soak.records,
        duration,
        target_audio_s_per_s=plan.get("target_audio_s_per_s"),
        log_findings=log_findings,
        client_lag_ms=state["lag"].lags_ms if "lag" in state else (),
    )
    if interrupted:
        summary["failures"].insert(0, "interrupted")
        summary["passed"] = False
    report: dict[str, Any] = jsonable(
        {
            "tool": "tools.soak",
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "args": dict(args),
            "machine": {
                "cores": psutil.cpu_count(),
                "memory_mb": psutil.virtual_memory().total / BYTES_PER_MB,
                "load_average": os.getloadavg(),
            },
            "interrupted": interrupted,
            "calibration": state.get("calibration"),
            "plan": plan,
            "summary": summary,
            "windows": latency_windows(soak.records),
            "samples": soak.samples,
            "after_drain": state.get("after"),
            "requests": soak.records,
        }
    )
    return report


def write_outputs(report: Mapping[str, Any], out: Path) -> tuple[Path, Path | None]:
    from tools.soak_plot import plot_report

    out.mkdir(parents=True, exist_ok=True)
    json_path = out / REPORT_NAME
    json_path.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    plot_path: Path | None = out / PLOT_NAME
    try:
        plot_report(report, out / PLOT_NAME)
    except Exception as exc:  # the figures are written; say why the picture is not
        print(f"plot not written: {type(exc).__name__}: {exc}", file=sys.stderr)
        plot_path = None
    return json_path, plot_path


# ---------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.soak", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES)
    parser.add_argument(
        "--load", type=float, default=DEFAULT_LOAD, help="fraction of the measured capacity"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for JSON and PNG")
    parser.add_argument(
        "--rooms", type=int, default=DEFAULT_ROOMS, help="rooms at least (default %(default)s)"
    )
    parser.add_argument("--sample-s", type=float, default=DEFAULT_SAMPLE_S)
    parser.add_argument(
        "--calibrate-s",
        type=float,
        default=DEFAULT_CALIBRATE_S,
        help="seconds of the saturated calibration (default %(default)s)",
    )
    parser.add_argument("--config", type=Path, default=None, help="used as it is")
    parser.add_argument("--log-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    if args.minutes < 1:
        parser.error("--minutes: at least 1")
    if not 0 < args.load <= 1.5:
        parser.error("--load: a fraction of capacity in (0, 1.5]")
    if args.rooms < 1 or args.sample_s <= 0 or args.calibrate_s <= 0:
        parser.error("--rooms, --sample-s and --calibrate-s must be positive")
    return args


def _raise_interrupt(signum: int, _: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # the dev server's key pair is short on purpose (loopback only), as in hive_tts.dev
    warnings.filterwarnings("ignore", message="The HMAC key is .* bytes long")
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="soak-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    # Ctrl-C stops everything even when started from a script (which starts background commands
    # with SIGINT ignored: asyncio then installs no handler); SIGTERM is cleaned up the same way
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    state: dict[str, Any] = {}
    interrupted = False
    stage: Stage | None = None
    with ExitStack() as processes:
        try:
            config = args.config or soak_config(log_dir)
            print(f"== starting LiveKit, the worker and the API (config {config})", flush=True)
            try:
                stage = start_stage(config, log_dir, processes)
            except (RuntimeError, OSError) as exc:
                print(f"hive-tts soak: could not start: {exc}", file=sys.stderr)
                return EXIT_SETUP_FAILED
            try:
                asyncio.run(run_soak(args, stage, state))
            except RuntimeError as exc:  # a room that never heard its agent, a calibration
                print(f"hive-tts soak: {exc}", file=sys.stderr)
                if "soak" not in state:
                    return EXIT_SETUP_FAILED
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: stopping every process", flush=True)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            print("stopping the API, the worker and LiveKit", flush=True)
    if stage is not None:  # the supervisor's own output (restarts) is not in its log file
        (log_dir / "worker-stdout.log").write_text("\n".join(stage.worker.lines) + "\n")
    soak: Soak | None = state.get("soak")
    if soak is None or not soak.samples:
        print("no soak samples to report", file=sys.stderr)
        return EXIT_INTERRUPTED if interrupted else EXIT_SETUP_FAILED
    logs = {
        "api": log_dir / "api.log",
        "worker": log_dir / "worker.log",
        "worker_stdout": log_dir / "worker-stdout.log",
    }
    report_args = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    report_args["log_dir"] = str(log_dir)
    findings = scan_logs(logs, state.get("ended_at"))
    report = build_report(report_args, state, soak, interrupted, findings)
    json_path, plot_path = write_outputs(report, args.out)
    print_summary(report["summary"])
    print(f"\nwritten: {json_path}" + (f", {plot_path}" if plot_path else "") + f"; logs {log_dir}")
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report["summary"]["passed"] else EXIT_TARGET_MISSED


if __name__ == "__main__":
    sys.exit(main())
