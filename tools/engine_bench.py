"""Benchmark of the torch and cloud engines (SpeechT5, XTTS, Edge): prints figures, no asserts.

Run from the repository root::

    .venv/bin/python -m tools.engine_bench [--models-dir DIR] [--iterations N]
                                           [--json out.json] [--wait-quiet SECONDS]

Models: an engine whose published weights are complete under ``--models-dir`` (``xtts_v2/``,
``speecht5/``, as ``tools/fetch_models.py`` writes them) is measured on them. Otherwise the
tests' TINY RANDOM-WEIGHT models are built into a temporary directory
(``tools/benchkit/tiny_xtts.py``, ``tools/benchkit/tiny_speecht5.py``: what the tests build) and
the output says so loudly: their figures show the plumbing, and the cost of the parts the tiny
models keep at full size (XTTS's HiFi-GAN decoder and speaker encoder), never the real models'
speed. Edge TTS always runs against ``tools/benchkit/fake_edge_service.py`` (espeak-ng speech
as MP3 on 127.0.0.1): its figures are the client's plumbing only, not Microsoft's service.

Sections (each engine is loaded, warmed by its own ``warm_up()`` and then by one discarded pass
over the texts):

1. Memory: process RSS (psutil) after importing, after loading each engine, after warming.
2. Per engine and text, through the service pipeline (``SpeechSynthesizer.synthesize``, 48 kHz):
   time to first audio (``Utterance.result.ttfa_ms``) and to the last chunk; the engine alone on
   the utterance's first piece (time to its first frame); and the baseline, the engine's plain
   whole-text call in the same run: XTTS ``model.inference`` (not streamed, same latents),
   SpeechT5 ``generate_speech`` + vocoder on the whole text, Edge the whole reply collected
   before any of it is used. first-audio speedup = baseline p50 / TTFA p50.
3. Cloning: XTTS speaker latents for a new 5 s reference (cache miss) vs a repeated one (hit);
   ``decode_voice_reference`` for WAV, MP3, OGG Vorbis and OGG Opus; a cloned voice's first
   audio when its reference is new vs repeated.

Every section also reports the CPU used by other processes meanwhile (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import psutil

from engines.backend import EngineBackend
from engines.config import ServiceConfig, load_config
from engines.edge_engine import SETTINGS as EDGE_SETTINGS
from engines.edge_engine import EdgeBackend, EdgeSettings
from engines.names import EngineName
from engines.router import Candidate
from engines.speecht5_engine import (
    MAX_FRAMES_PER_TOKEN,
    SPEECHT5_DIR,
    SpeechT5Backend,
    SpeechT5Paths,
)
from engines.speecht5_engine import SETTINGS as SPEECHT5_SETTINGS
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest, build_backends
from engines.torch_threads import pin_torch_threads
from engines.voice_reference import VoiceReference, decode_voice_reference
from engines.voices import SpeechT5Binding, VoiceCatalog, XttsBinding
from engines.xtts_engine import SETTINGS as XTTS_SETTINGS
from engines.xtts_engine import XTTS_DIR, XTTS_FILES, SpeakerLatents, XttsBackend
from tools.benchkit.fake_edge_service import FakeEdgeService
from tools.benchkit.machine import (
    DEFAULT_WAIT_QUIET_S,
    peak_rss_mb,
    print_sections,
    rss_mb,
    track,
    wait_for_quiet,
)
from tools.benchkit.reference_audio import ENCODINGS, encode, voiced_signal
from tools.benchkit.report import add_report_arguments, heading, render_table, write_report
from tools.benchkit.stats import MS_PER_S, P50, percentile, summarize
from tools.benchkit.tiny_speecht5 import build_tiny_speecht5
from tools.benchkit.tiny_xtts import GENERATED_TOKENS_PER_SENTENCE, write_tiny_xtts

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE = REPO_ROOT / "config.yaml"

DEFAULT_ITERATIONS = 5
"""Measured passes over the texts per engine, after one discarded warm-up pass."""
LANGUAGE = "en"
"""Every text here is English (SpeechT5 speaks nothing else)."""
OUTPUT_RATE_HZ = 48_000
"""What the pipeline delivers (LiveKit's rate)."""
REFERENCE_S = 5.0
"""Length of the cloning references (voice-like signal, no words)."""
CLONE_CASE_SEED = 7
LATENT_SEED_BASE = 100
"""Seeds of the fresh references timed for cache misses (one more for the warm-up)."""
DECODE_REPEATS = 10
"""Timed ``decode_voice_reference`` calls per format (after one discarded call)."""
FAKE_FRAME_INTERVAL_S = 0.0
"""The fake service sends its MP3 frames back to back: its pacing would only add a constant."""
KIB = 1024
PARAMS_PER_MILLION = 1e6

TINY_WARNING = (
    "TINY RANDOM-WEIGHT models (built by the tests' fixtures): figures show the plumbing and the "
    "cost of the full-size parts (XTTS's HiFi-GAN decoder and speaker encoder), NOT the speed "
    "of the published models"
)
EDGE_WARNING = "local fake service: client plumbing only (not Microsoft's service)"

SHORT_TEXT = "Thanks for calling."
TWO_SENTENCE_TEXT = "Your order has shipped. It should arrive on Thursday."
TEXTS = (SHORT_TEXT, TWO_SENTENCE_TEXT)
"""One short reply (one piece) and one of two sentences (three pieces, the first cut short)."""


@dataclass(frozen=True)
class EngineCase:
    label: str
    engine: EngineName
    voice_id: str
    cloned: bool = False


CASES = (
    EngineCase("speecht5", EngineName.SPEECHT5, "en-us-female-premium"),
    EngineCase("xtts built-in", EngineName.XTTS, "en-us-male-premium"),
    EngineCase("xtts cloned", EngineName.XTTS, "en-us-male-premium", cloned=True),
    EngineCase("edge-tts (fake)", EngineName.EDGE, "en-us-female-premium"),
)


@dataclass(frozen=True)
class PassSample:
    """One text spoken once: through the pipeline, by the engine alone, and whole."""

    ttfa_ms: float
    """``Utterance.result.ttfa_ms``: request accepted to first 48 kHz chunk ready."""
    total_ms: float
    """``synthesize()`` called to last chunk received."""
    engine_first_frame_ms: float
    """The engine's own TTS on the utterance's first piece: time to its first frame."""
    baseline_ms: float
    """The engine's plain whole-text call, to its complete audio (its first usable audio)."""
    audio_s: float
    baseline_audio_s: float
    pieces: int


@dataclass
class TextReport:
    case: str
    engine: str
    voice_id: str
    text: str
    samples: int
    ttfa_ms: dict[str, float]
    total_ms: dict[str, float]
    engine_first_frame_ms: dict[str, float]
    baseline_ms: dict[str, float]
    first_audio_speedup: float
    """Baseline whole-text time p50 / pipeline TTFA p50."""
    pieces: int
    audio_s: float
    baseline_audio_s: float
    rtf_p50: float
    """Pipeline total time / audio seconds (p50 over passes)."""
    raw: list[dict[str, float]]


def engine_threads_executor(threads: int, name: str) -> ThreadPoolExecutor:
    """One worker pinned to ``threads`` torch threads, as the engines pin theirs."""
    return ThreadPoolExecutor(
        1, thread_name_prefix=name, initializer=pin_torch_threads, initargs=(threads,)
    )


_T = TypeVar("_T")


async def timed_in(executor: ThreadPoolExecutor, work: Callable[[], _T]) -> tuple[_T, float]:
    """Run ``work`` in ``executor``; returns its result and its own duration in ms."""

    def run() -> tuple[_T, float]:
        started = time.perf_counter()
        result = work()
        return result, (time.perf_counter() - started) * MS_PER_S

    return await asyncio.get_running_loop().run_in_executor(executor, run)


# ---------------------------------------------------------------------------------------------
# models: published weights from --models-dir, or the tests' tiny ones


def xtts_complete(models_dir: Path) -> bool:
    return all((models_dir / XTTS_DIR / name).is_file() for name in XTTS_FILES)


def speecht5_complete(models_dir: Path) -> bool:
    return not SpeechT5Paths.under(models_dir).missing()


def prepare_models(given: Path | None, scratch: Path) -> dict[str, str]:
    """Fill ``scratch`` (the models directory the service will use): links to the complete
    published weights under ``given``, tiny random-weight models for the rest. Returns, per
    engine, where its weights came from."""
    sources: dict[str, str] = {}
    builders: dict[EngineName, tuple[Path, Callable[[Path], bool], Callable[[Path], Path]]] = {
        EngineName.XTTS: (XTTS_DIR, xtts_complete, write_tiny_xtts),
        EngineName.SPEECHT5: (SPEECHT5_DIR, speecht5_complete, build_tiny_speecht5),
    }
    for engine, (folder, complete, build_tiny) in builders.items():
        if given is not None and complete(given):
            (scratch / folder).symlink_to((given / folder).resolve(), target_is_directory=True)
            sources[engine.value] = f"published weights from {given / folder}"
            continue
        if given is not None:
            print(f"{engine.value}: no complete weights under {given / folder}", flush=True)
        started = time.perf_counter()
        # in a child process, so that building leaves nothing in this one's memory figures
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
            child.submit(build_tiny, scratch).result()
        sources[engine.value] = "TINY RANDOM-WEIGHT model"
        print(
            f"{engine.value}: built the TINY RANDOM-WEIGHT model in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
    return sources


def parameter_counts(backends: dict[str, EngineBackend]) -> dict[str, float]:
    """Millions of parameters per model part (private attributes: a benchmark looks inside)."""
    counts: dict[str, float] = {}

    def millions(module: Any) -> float:
        return sum(int(p.numel()) for p in module.parameters()) / PARAMS_PER_MILLION

    xtts = backends.get(EngineName.XTTS)
    if isinstance(xtts, XttsBackend):
        decoder = xtts._model.hifigan_decoder
        counts["xtts gpt"] = millions(xtts._model.gpt)
        counts["xtts hifigan decoder"] = millions(decoder) - millions(decoder.speaker_encoder)
        counts["xtts speaker encoder"] = millions(decoder.speaker_encoder)
    speecht5 = backends.get(EngineName.SPEECHT5)
    if isinstance(speecht5, SpeechT5Backend):
        counts["speecht5 text-to-mel"] = millions(speecht5._model)
        counts["speecht5 hifigan"] = millions(speecht5._vocoder)
    return counts


# ---------------------------------------------------------------------------------------------
# baselines: each engine's plain whole-text call


class Baselines:
    """The engines called the plain way, on the same threads settings as the service."""

    def __init__(self, config: ServiceConfig) -> None:
        self._xtts_pool = engine_threads_executor(
            config.engines.section(XTTS_SETTINGS).intra_op_threads, "bench-xtts"
        )
        self._speecht5_pool = engine_threads_executor(
            config.engines.section(SPEECHT5_SETTINGS).intra_op_threads, "bench-speecht5"
        )

    def close(self) -> None:
        self._xtts_pool.shutdown()
        self._speecht5_pool.shutdown()

    async def whole_text(self, candidate: Candidate, text: str) -> tuple[float, float]:
        """The engine on ``text`` at once: (ms until all its audio exists, audio seconds)."""
        backend = candidate.backend
        if isinstance(backend, XttsBackend):
            return await self._xtts(backend, self._xtts_latents(backend, candidate), text)
        if isinstance(backend, SpeechT5Backend):
            assert isinstance(candidate.binding, SpeechT5Binding)
            return await self._speecht5(backend, candidate.binding.speaker, text)
        if isinstance(backend, EdgeBackend):
            return await self._edge(candidate, text)
        raise TypeError(f"no baseline for {candidate.engine}")

    @staticmethod
    def _xtts_latents(backend: XttsBackend, candidate: Candidate) -> SpeakerLatents:
        if candidate.reference is not None:
            return backend.clone_latents(candidate.reference)  # cached by the pipeline's pass
        assert isinstance(candidate.binding, XttsBinding)
        return backend._speakers[candidate.binding.speaker]

    async def _xtts(
        self, backend: XttsBackend, latents: SpeakerLatents, text: str
    ) -> tuple[float, float]:
        model, config = backend._model, backend._config

        def infer() -> Any:
            return model.inference(
                text,
                LANGUAGE,
                latents.gpt_cond_latent,
                latents.speaker_embedding,
                temperature=config.temperature,
                length_penalty=config.length_penalty,
                repetition_penalty=config.repetition_penalty,
                top_k=config.top_k,
                top_p=config.top_p,
                enable_text_splitting=False,
            )

        output, ms = await timed_in(self._xtts_pool, infer)
        return ms, len(output["wav"]) / backend.sample_rate

    async def _speecht5(
        self, backend: SpeechT5Backend, speaker: int, text: str
    ) -> tuple[float, float]:
        # one generate_speech + vocoder call; only text longer than the model takes is cut
        def generate() -> int:
            parts = backend.model_sized_parts(text)
            return sum(backend.synthesize_part(part, speaker, 1.0).size for part in parts)

        samples, ms = await timed_in(self._speecht5_pool, generate)
        return ms, samples / backend.sample_rate

    @staticmethod
    async def _edge(candidate: Candidate, text: str) -> tuple[float, float]:
        voice = candidate.create_tts(language=LANGUAGE, speed=1.0, latency_critical=False)
        started = time.perf_counter()
        async with voice.synthesize(text) as stream:
            frames = [event.frame async for event in stream]
        ms = (time.perf_counter() - started) * MS_PER_S
        return ms, sum(f.samples_per_channel for f in frames) / voice.sample_rate


# ---------------------------------------------------------------------------------------------
# section 2: pipeline vs engine alone vs whole text


def request_for(case: EngineCase, text: str, reference: VoiceReference | None) -> SynthesisRequest:
    return SynthesisRequest(
        text=text,
        voice_id=case.voice_id,
        engine=case.engine.value,
        sample_rate=OUTPUT_RATE_HZ,
        voice_reference=reference if case.cloned else None,
    )


async def engine_first_frame_ms(candidate: Candidate, text: str) -> float:
    """The engine's TTS (as the pipeline makes it for a first piece) to its first frame."""
    voice = candidate.create_tts(language=LANGUAGE, speed=1.0, latency_critical=True)
    started = time.perf_counter()
    async with voice.synthesize(text) as stream:
        async for _event in stream:
            break  # leaving the block stops the rest of the synthesis
    return (time.perf_counter() - started) * MS_PER_S


async def speak_once(
    synth: SpeechSynthesizer,
    baselines: Baselines,
    case: EngineCase,
    text: str,
    reference: VoiceReference | None,
) -> PassSample:
    started = time.perf_counter()
    utterance = synth.synthesize(request_for(case, text, reference))
    async with utterance:
        async for _chunk in utterance:
            pass
    total_ms = (time.perf_counter() - started) * MS_PER_S
    result = utterance.result
    if result.engines != [case.engine.value] or result.ttfa_ms is None:
        raise RuntimeError(f"expected {case.engine} alone, got {result.engines} {result.fallbacks}")
    prepared = utterance.prepared
    candidate = prepared.plan[0]
    first_frame_ms = await engine_first_frame_ms(candidate, prepared.pieces[0].text)
    baseline_ms, baseline_audio_s = await baselines.whole_text(candidate, prepared.text)
    return PassSample(
        ttfa_ms=result.ttfa_ms,
        total_ms=total_ms,
        engine_first_frame_ms=first_frame_ms,
        baseline_ms=baseline_ms,
        audio_s=result.audio_duration_s,
        baseline_audio_s=baseline_audio_s,
        pieces=result.pieces,
    )


def text_report(case: EngineCase, text: str, samples: Sequence[PassSample]) -> TextReport:
    ttfa = summarize([s.ttfa_ms for s in samples])
    baseline = summarize([s.baseline_ms for s in samples])
    return TextReport(
        case=case.label,
        engine=case.engine.value,
        voice_id=case.voice_id,
        text=text,
        samples=len(samples),
        ttfa_ms=ttfa,
        total_ms=summarize([s.total_ms for s in samples]),
        engine_first_frame_ms=summarize([s.engine_first_frame_ms for s in samples]),
        baseline_ms=baseline,
        first_audio_speedup=baseline["p50"] / ttfa["p50"],
        pieces=samples[0].pieces,
        audio_s=float(np.median([s.audio_s for s in samples])),
        baseline_audio_s=float(np.median([s.baseline_audio_s for s in samples])),
        rtf_p50=percentile([s.total_ms / MS_PER_S / s.audio_s for s in samples], P50),
        raw=[asdict(s) for s in samples],
    )


async def bench_case(
    synth: SpeechSynthesizer,
    baselines: Baselines,
    case: EngineCase,
    iterations: int,
    reference: VoiceReference | None,
) -> tuple[list[TextReport], list[PassSample]]:
    """Returns the per-text reports and the discarded warm-up pass (one sample per text)."""
    warm_up = [await speak_once(synth, baselines, case, text, reference) for text in TEXTS]
    samples: dict[str, list[PassSample]] = {text: [] for text in TEXTS}
    for _ in range(iterations):
        for text in TEXTS:
            samples[text].append(await speak_once(synth, baselines, case, text, reference))
    return [text_report(case, text, samples[text]) for text in TEXTS], warm_up


def print_text_reports(reports: Sequence[TextReport]) -> None:
    heading("2. Time to first audio and total time (ms): pipeline at 48 kHz vs whole text")
    rows = [
        [
            r.case,
            "short" if r.text == SHORT_TEXT else "2 sentences",
            str(r.samples),
            str(r.pieces),
            f"{r.ttfa_ms['p50']:.0f}",
            f"{r.ttfa_ms['p95']:.0f}",
            f"{r.total_ms['p50']:.0f}",
            f"{r.total_ms['p95']:.0f}",
            f"{r.engine_first_frame_ms['p50']:.0f}",
            f"{r.baseline_ms['p50']:.0f}",
            f"{r.baseline_ms['p95']:.0f}",
            f"{r.first_audio_speedup:.2f}x",
            f"{r.audio_s:.2f}",
            f"{r.baseline_audio_s:.2f}",
            f"{r.rtf_p50:.2f}",
        ]
        for r in reports
    ]
    headers = [
        "case",
        "text",
        "n",
        "pieces",
        "ttfa p50",
        "ttfa p95",
        "total p50",
        "total p95",
        "engine 1st frame p50",
        "whole p50",
        "whole p95",
        "1st-audio speedup",
        "audio s",
        "whole audio s",
        "rtf",
    ]
    print(render_table(headers, rows))
    print(
        f"texts: short = {SHORT_TEXT!r}; 2 sentences = {TWO_SENTENCE_TEXT!r}\n"
        "ttfa = Utterance.result.ttfa_ms; total = synthesize() to the last chunk; engine 1st frame"
        " = the engine's TTS alone on the first piece, to its first frame;\nwhole = the engine's"
        " plain whole-text call to its complete audio (XTTS model.inference, SpeechT5"
        " generate_speech + vocoder, Edge whole reply);\n1st-audio speedup = whole p50 / ttfa p50;"
        " rtf = total / audio seconds (p50)"
    )


# ---------------------------------------------------------------------------------------------
# section 3: cloning


def reference_bytes(seed: int, encoding: str = "wav") -> bytes:
    return encode(voiced_signal(REFERENCE_S, seed=seed), encoding)


async def bench_latents(xtts: XttsBackend, iterations: int) -> dict[str, Any]:
    """Speaker latents through the engine's pool: a new reference each time (miss), then the
    same one again (hit). One discarded miss first."""
    misses: list[float] = []
    hits: list[float] = []
    for index in range(iterations + 1):
        reference = decode_voice_reference(reference_bytes(LATENT_SEED_BASE + index))
        for times in (misses, hits):
            started = time.perf_counter()
            await xtts.prepare_clone(reference)
            if index:
                times.append((time.perf_counter() - started) * MS_PER_S)
    return {
        "reference_s": REFERENCE_S,
        "miss_ms": summarize(misses),
        "hit_ms": summarize(hits),
        "cache_misses": xtts.latent_cache_misses,
        "cache_hits": xtts.latent_cache_hits,
    }


def bench_decoding() -> dict[str, dict[str, float]]:
    """Blocking: ``decode_voice_reference`` per format, on the same 5 s signal."""
    signal = voiced_signal(REFERENCE_S, seed=CLONE_CASE_SEED)
    figures: dict[str, dict[str, float]] = {}
    for encoding in ENCODINGS:
        data = encode(signal, encoding)
        decode_voice_reference(data)
        times: list[float] = []
        for _ in range(DECODE_REPEATS):
            started = time.perf_counter()
            decode_voice_reference(data)
            times.append((time.perf_counter() - started) * MS_PER_S)
        figures[encoding] = {"kib": len(data) / KIB, **summarize(times)}
    return figures


def print_cloning(cloning: dict[str, Any]) -> None:
    heading(f"3. Cloning ({REFERENCE_S:.0f} s references)")
    latents = cloning["latents"]
    rows = [
        [
            "speaker latents, new reference (cache miss)",
            f"{latents['miss_ms']['p50']:.1f}",
            f"{latents['miss_ms']['p95']:.1f}",
        ],
        [
            "speaker latents, repeated reference (cache hit)",
            f"{latents['hit_ms']['p50']:.3f}",
            f"{latents['hit_ms']['p95']:.3f}",
        ],
    ]
    first = cloning["cloned_first_request"]
    rows.append(
        [
            "cloned voice ttfa, short text, new reference (1 sample)",
            f"{first['new_reference_ttfa_ms']:.0f}",
            "",
        ]
    )
    rows.append(
        [
            "cloned voice ttfa, short text, repeated reference",
            f"{first['repeated_reference_ttfa_ms_p50']:.0f}",
            "",
        ]
    )
    for encoding, figures in cloning["decode_ms"].items():
        rows.append(
            [
                f"decode_voice_reference {encoding} ({figures['kib']:.0f} KiB)",
                f"{figures['p50']:.2f}",
                f"{figures['p95']:.2f}",
            ]
        )
    print(render_table(["measure (ms)", "p50", "p95"], rows))
    print(
        f"latent cache after the run: {latents['cache_misses']} misses, "
        f"{latents['cache_hits']} hits; latents run in XTTS's pool (prepare_clone)"
    )


# ---------------------------------------------------------------------------------------------
# section 1: memory


async def load_engines(
    backends: Sequence[EngineBackend], memory: dict[str, float]
) -> dict[str, EngineBackend]:
    """Load, then warm, each engine in turn, recording RSS (MB) after each step (the first
    torch engine also pays for importing torch)."""
    loaded: dict[str, EngineBackend] = {}
    for backend in backends:
        await asyncio.to_thread(backend.load)
        if not backend.ready:
            raise RuntimeError(f"{backend.name} did not load: {backend.detail}")
        memory[f"after loading {backend.name}"] = rss_mb()
        loaded[backend.name] = backend
    for backend in backends:
        await asyncio.to_thread(backend.warm_up)
    memory["after warming all three"] = rss_mb()
    return loaded


def print_memory(memory: dict[str, float]) -> None:
    heading("1. Process RSS (psutil), engines loaded one after another")
    rows: list[list[str]] = []
    previous: float | None = None
    for step, mb in memory.items():
        delta = "" if previous is None else f"{mb - previous:+.0f}"
        rows.append([step, f"{mb:.0f}", delta])
        previous = mb
    print(render_table(["step", "RSS MB", "delta MB"], rows))


def print_models(sources: dict[str, str], params: dict[str, float]) -> None:
    heading("Models")
    for engine, source in sources.items():
        print(f"  {engine}: {source}")
    print(f"  edge-tts: {EDGE_WARNING}")
    print(
        "  parameters (millions): "
        + ", ".join(f"{part} {count:.2f}" for part, count in params.items())
    )
    if "TINY" in sources.get(EngineName.XTTS.value, ""):
        print(
            f"  tiny XTTS: every call generates exactly {GENERATED_TOKENS_PER_SENTENCE} audio "
            "tokens whatever the text, so its whole-text call does not grow with the text"
        )
    if "TINY" in sources.get(EngineName.SPEECHT5.value, ""):
        print(
            "  tiny SpeechT5: never predicts a stop, so it speaks the length cap "
            f"({MAX_FRAMES_PER_TOKEN:g} mel frames per input token)"
        )
    if any("TINY" in source for source in sources.values()):
        print(f"\n  *** {TINY_WARNING} ***", flush=True)


# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.engine_bench", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="a models directory with the published xtts_v2/ and speecht5/ (default: build the "
        "tests' tiny random-weight models in a temporary directory)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=DEFAULT_ITERATIONS,
        help=f"measured passes over the texts per engine (default {DEFAULT_ITERATIONS}; one "
        "more warm-up pass is always run and discarded)",
    )
    add_report_arguments(parser, wait_quiet_s=DEFAULT_WAIT_QUIET_S)
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")
    if args.models_dir is not None and not args.models_dir.is_dir():
        parser.error(f"--models-dir: {args.models_dir} is not a directory")
    return args


def service_config(models_dir: Path, edge_url: str) -> ServiceConfig:
    """``config.yaml`` with only the three engines measured here, the fake Edge service and
    ``models_dir``."""
    config = load_config(CONFIG_FILE)
    engines = config.engines.with_section(EDGE_SETTINGS, EdgeSettings(url=edge_url))
    measured = {EngineName.XTTS, EngineName.SPEECHT5, EngineName.EDGE}
    return config.model_copy(
        update={
            "models_dir": models_dir,
            "engines": engines,
            "disabled_engines": tuple(name for name in EngineName if name not in measured),
        }
    )


def settle(max_wait_s: float) -> dict[str, float]:
    """Before a measured section: wait (up to ``max_wait_s``) for the CPU to be left idle."""
    started = time.perf_counter()
    use = wait_for_quiet(max_wait_s)
    use["waited_s"] = time.perf_counter() - started
    print(
        f"  (waited {use['waited_s']:.0f} s; other processes then used "
        f"{use['other_cores']:.2f} cores)",
        flush=True,
    )
    return use


async def run(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    quiet = wait_for_quiet(args.wait_quiet)
    print(
        f"before starting, other processes used {quiet['other_cores']:.2f} cores "
        f"(host steal {quiet['steal_cores']:.2f}); the machine has {psutil.cpu_count()} "
        "logical CPUs",
        flush=True,
    )
    began = time.perf_counter()
    sections: dict[str, dict[str, float]] = {}
    memory: dict[str, float] = {}
    quiet_before: dict[str, dict[str, float]] = {}
    report: dict[str, Any] = {
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_before_start": quiet,
        "cpu_before_section": quiet_before,
        "sections": sections,
        "iterations": args.iterations,
        "texts": list(TEXTS),
        "edge_tts": EDGE_WARNING,
    }
    memory["at start (nothing loaded)"] = rss_mb()
    with track("0 models (a child builds tiny ones)", sections):
        sources = prepare_models(args.models_dir, scratch)
    tiny = any("TINY" in source for source in sources.values())
    report.update(models=sources, tiny_random_weights=tiny, warning=TINY_WARNING if tiny else "")
    async with FakeEdgeService(frame_interval_s=FAKE_FRAME_INTERVAL_S) as fake:
        config = service_config(scratch, fake.url())
        backends = build_backends(config)
        with track("1 load + warm engines", sections):
            loaded = await load_engines(backends, memory)
        report["parameters_millions"] = parameter_counts(loaded)
        print_models(sources, report["parameters_millions"])
        print_memory(memory)
        synth = SpeechSynthesizer(config, VoiceCatalog.load(config.voices_file), backends)
        baselines = Baselines(config)
        clone_reference = decode_voice_reference(reference_bytes(CLONE_CASE_SEED))
        text_reports: list[TextReport] = []
        try:
            for case in CASES:
                quiet_before[case.label] = settle(args.wait_quiet)
                with track(f"2 {case.label} x{args.iterations}", sections):
                    reports, warm_up = await bench_case(
                        synth, baselines, case, args.iterations, clone_reference
                    )
                text_reports.extend(reports)
                if case.cloned:
                    report["cloned_first_request"] = {
                        "new_reference_ttfa_ms": warm_up[0].ttfa_ms,
                        "repeated_reference_ttfa_ms_p50": reports[0].ttfa_ms["p50"],
                    }
            print_text_reports(text_reports)
            xtts = loaded[EngineName.XTTS]
            assert isinstance(xtts, XttsBackend)
            quiet_before["cloning"] = settle(args.wait_quiet)
            with track("3 cloning", sections):
                cloning = {
                    "latents": await bench_latents(xtts, args.iterations),
                    "decode_ms": await asyncio.to_thread(bench_decoding),
                    "cloned_first_request": report["cloned_first_request"],
                }
            print_cloning(cloning)
        finally:
            baselines.close()
            await synth.aclose()
    memory["at the end"] = rss_mb()
    print_sections(sections)
    report.update(
        memory_rss_mb=memory,
        engines=[asdict(r) for r in text_reports],
        cloning=cloning,
        peak_rss_mb_whole_run=peak_rss_mb(),
        total_s=time.perf_counter() - began,
    )
    if tiny:
        print(f"\n*** {TINY_WARNING} ***")
    print(f"edge-tts: {EDGE_WARNING}")
    print(
        f"peak RSS over the whole run: {report['peak_rss_mb_whole_run']:.0f} MB; "
        f"total {report['total_s']:.0f} s"
    )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as scratch:
        report = asyncio.run(run(args, Path(scratch)))
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
