"""Faults injected into the real engines and the real service: an engine that hangs or slows
down mid-utterance, a corrupt or missing model file at start and at run time, memory running
short. Every request ends with audio or a typed error; nothing stalls and nothing crashes."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from api.memory_guard import MemoryGuard, MemoryReading
from engines.audio import AudioChunk
from engines.config import Limits, ServiceConfig
from engines.names import EngineName
from engines.piper_engine import PiperBackend, bundled_voice_dir
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest, _within, build_backends
from engines.voices import PiperBinding, VoiceCatalog
from tests.api_fixtures import api_client, error_of
from tests.audio_checks import join_and_inner_steps
from tests.fakes import FlakyBackend
from tests.transcriber import Transcriber, word_error_rate

THREE_PIECES = (
    "The first sentence starts the reply. The second one is where the engine stalls. "
    "And the third sentence ends it."
)
STALL_S = 1.5


def with_stall_timeout(config: ServiceConfig, seconds: float) -> ServiceConfig:
    health = config.engines.health.model_copy(update={"stall_timeout_s": seconds})
    engines = config.engines.model_copy(update={"health": health})
    return config.model_copy(update={"engines": engines})


def flaky_synth(
    service_config: ServiceConfig,
    catalog: VoiceCatalog,
    synthesizer: SpeechSynthesizer,
    piper: FlakyBackend,
) -> SpeechSynthesizer:
    real = {backend.name: backend for backend in synthesizer.registry.backends()}
    piper.load()
    config = with_stall_timeout(service_config, STALL_S)
    return SpeechSynthesizer(config, catalog, [piper, real[EngineName.ESPEAK]])


async def spoken(
    synth: SpeechSynthesizer, text: str
) -> tuple[list[AudioChunk], float, dict[str, Any]]:
    started = time.perf_counter()
    utterance = synth.synthesize(SynthesisRequest(text))
    chunks = [chunk async for chunk in utterance]
    return chunks, time.perf_counter() - started, utterance.result.to_dict()


async def test_an_engine_that_hangs_mid_utterance_is_passed_over_after_its_stall_timeout(
    service_config: ServiceConfig,
    catalog: VoiceCatalog,
    synthesizer: SpeechSynthesizer,
    transcriber: Transcriber,
) -> None:
    real = {backend.name: backend for backend in synthesizer.registry.backends()}
    piper = FlakyBackend(real[EngineName.PIPER], hang_on={1})  # the second piece
    synth = flaky_synth(service_config, catalog, synthesizer, piper)
    chunks, took, result = await spoken(synth, THREE_PIECES)
    assert result["engines"] == ["piper", "espeak-ng"], result
    [fallback] = result["fallbacks"]
    assert "stalled" in fallback["error"] and fallback["piece"] == "1", fallback
    assert piper.stopped_while_hung.wait(5), "the hung engine's thread was not told to stop"
    assert took < STALL_S + 20  # stalled once, for its timeout, not for the hang
    assert result["pieces"] == 3
    join_step, inner_step = join_and_inner_steps(chunks)
    assert join_step <= inner_step  # the switch of engines does not click
    pcm = np.concatenate([chunk.pcm for chunk in chunks])
    heard = transcriber.transcribe(pcm, 48_000, base=True)
    assert word_error_rate(THREE_PIECES, heard) <= 0.35, heard  # espeak-ng said its piece


async def test_an_engine_that_hangs_before_any_audio_lets_the_next_one_start(
    service_config: ServiceConfig, catalog: VoiceCatalog, synthesizer: SpeechSynthesizer
) -> None:
    real = {backend.name: backend for backend in synthesizer.registry.backends()}
    piper = FlakyBackend(real[EngineName.PIPER], hang_on={0})
    synth = flaky_synth(service_config, catalog, synthesizer, piper)
    chunks, _, result = await spoken(synth, "Hello there.")
    assert result["engines"] == ["espeak-ng"] and chunks
    assert STALL_S * 1000 <= float(str(result["ttfa_ms"])) < STALL_S * 1000 + 10_000


async def test_an_engine_that_slows_down_within_its_timeout_finishes_the_utterance(
    service_config: ServiceConfig, catalog: VoiceCatalog, synthesizer: SpeechSynthesizer
) -> None:
    real = {backend.name: backend for backend in synthesizer.registry.backends()}
    piper = FlakyBackend(real[EngineName.PIPER], slow_on={1: STALL_S / 3})
    synth = flaky_synth(service_config, catalog, synthesizer, piper)
    _, _, result = await spoken(synth, THREE_PIECES)
    assert result["engines"] == ["piper"] and result["fallbacks"] == []
    assert result["pieces"] == 3


def write_corrupt_voice(folder: Path, name: str) -> None:
    bundled = bundled_voice_dir()
    assert bundled is not None
    config = json.loads((bundled / "en_US-joe-medium.onnx.json").read_text(encoding="utf-8"))
    (folder / f"{name}.onnx").write_bytes(b"\x08\x07 this is not an ONNX model" * 100)
    (folder / f"{name}.onnx.json").write_text(json.dumps(config))


async def test_a_corrupt_model_file_at_start_is_reported_and_the_rest_load(
    service_config: ServiceConfig, catalog: VoiceCatalog, tmp_path: Path
) -> None:
    write_corrupt_voice(tmp_path, "en_US-amy-medium")  # Sarah's voice, broken
    (tmp_path / ".cache").symlink_to(service_config.models_dir / ".cache")
    off = (EngineName.EDGE, EngineName.XTTS, EngineName.SPEECHT5, EngineName.KOKORO)
    config = service_config.model_copy(update={"models_dir": tmp_path, "disabled_engines": off})
    synth = SpeechSynthesizer(config, catalog, build_backends(config, deterministic=True))
    await synth.start()
    try:
        piper = synth.registry.backend(EngineName.PIPER)
        assert isinstance(piper, PiperBackend) and piper.ready  # joe still speaks
        sarah = PiperBinding(model="en_US-amy-medium")
        assert not piper.can_render(sarah)
        assert "en_US-amy-medium" in piper.missing_reason(sarah)
        assert "could not be loaded" in piper.missing_reason(sarah)
        chunks, _, result = await spoken(synth, "Joe still speaks.")
        assert result["engines"] == ["piper"] and chunks
        # Sarah is spoken by the next engine that can, not refused
        utterance = synth.synthesize(
            SynthesisRequest("Sarah falls back.", voice_id="en-us-female-premium")
        )
        await utterance.collect()
        assert utterance.result.engine == "espeak-ng"
    finally:
        await synth.aclose()


async def test_model_files_removed_at_run_time_do_not_stop_a_loaded_engine(
    service_config: ServiceConfig, catalog: VoiceCatalog, tmp_path: Path
) -> None:
    bundled = bundled_voice_dir()
    assert bundled is not None
    for suffix in (".onnx", ".onnx.json"):
        shutil.copy(bundled / f"en_US-joe-medium{suffix}", tmp_path / f"en_US-amy-medium{suffix}")
    (tmp_path / ".cache").symlink_to(service_config.models_dir / ".cache")
    off = (EngineName.EDGE, EngineName.XTTS, EngineName.SPEECHT5, EngineName.KOKORO)
    config = service_config.model_copy(update={"models_dir": tmp_path, "disabled_engines": off})
    synth = SpeechSynthesizer(config, catalog, build_backends(config, deterministic=True))
    await synth.start()
    try:
        (tmp_path / "en_US-amy-medium.onnx").write_bytes(b"corrupted after loading")
        (tmp_path / "en_US-amy-medium.onnx.json").unlink()
        utterance = synth.synthesize(
            SynthesisRequest("Still in memory.", voice_id="en-us-female-premium")
        )
        await utterance.collect()
        assert utterance.result.engine == "piper" and utterance.result.fallbacks == []
    finally:
        await synth.aclose()


async def test_memory_short_refuses_new_work_and_health_says_why(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer
) -> None:
    limits = service_config.limits.model_copy(update={"max_rss_mb": 1})  # any process is over
    config = service_config.model_copy(update={"limits": limits})
    async with api_client(config, synthesizer) as client:
        reply = await client.post("/synthesize", json={"text": "Hello."})
        error = await error_of(reply, 503)
        assert error["code"] == "memory_pressure" and "MB" in error["message"]
        assert reply.headers["Retry-After"] == "5"
        async with client.ws_connect("/ws/synthesize") as ws:
            await ws.send_json({"text": "Hello.", "request_id": "m"})
            message = await ws.receive_json(timeout=30)
            assert (message["code"], message["is_final"]) == ("memory_pressure", True)
        health = await (await client.get("/health")).json()
        assert health["status"] == "warn"
        assert any("refusing new work" in problem for problem in health["problems"])


def test_the_memory_guard_reads_rss_and_the_machine_share() -> None:
    reading = [MemoryReading(100 * 2**20, 50.0)]
    now = [0.0]
    guard = MemoryGuard(
        Limits(max_rss_mb=200, max_memory_percent=90.0), lambda: reading[0], lambda: now[0]
    )
    assert guard.problem() is None
    reading[0] = MemoryReading(300 * 2**20, 50.0)
    assert guard.problem() is None  # the reading is reused for half a second
    now[0] = 1.0
    assert "300 MB" in str(guard.problem())
    reading[0] = MemoryReading(100 * 2**20, 97.0)
    now[0] = 2.0
    assert "97 %" in str(guard.problem())


async def test_a_cancel_arriving_as_the_engine_answers_is_not_lost() -> None:
    """The stall timeout must not swallow a cancel (``asyncio.wait_for`` on Python 3.11 does
    when its awaitable completes in the same step): a WebSocket cancel then never got its
    final, about once in sixty."""
    answered = asyncio.Event()

    class Engine:
        def __aiter__(self) -> Engine:
            return self

        async def __anext__(self) -> object:
            await answered.wait()
            return object()

    async def first_event() -> object:
        async for event in _within(Engine(), 5.0, "test"):  # type: ignore[arg-type]
            return event
        return None

    consumer = asyncio.create_task(first_event())
    await asyncio.sleep(0.01)  # waiting for the engine
    answered.set()
    consumer.cancel()  # in the same step as the answer
    with pytest.raises(asyncio.CancelledError):
        await consumer
