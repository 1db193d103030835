"""When an engine fails, the next one speaks; a failing engine is benched, then probed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from engines.config import HealthPolicy, ServiceConfig
from engines.errors import EngineUnavailableError
from engines.health import HealthState
from engines.names import EngineName
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest
from engines.voices import VoiceCatalog
from tests.fakes import FlakyBackend
from tests.transcriber import Transcriber, word_error_rate

TEXT = "The meeting starts at noon, so please be on time. Bring your laptop and your notes."
MAX_MIXED_ENGINE_WER = 0.35  # part of it is spoken by espeak-ng


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def flaky(
    synthesizer: SpeechSynthesizer,
    service_config: ServiceConfig,
    catalog: VoiceCatalog,
    clock: FakeClock,
) -> AsyncIterator[tuple[SpeechSynthesizer, FlakyBackend]]:
    """A synthesizer whose Piper fails on demand; the other engines are the shared real ones."""
    real = {b.name: b for b in synthesizer.registry.backends()}
    piper = FlakyBackend(real[EngineName.PIPER])
    piper.load()
    config = service_config.model_copy(
        update={
            "engines": service_config.engines.model_copy(
                update={"health": HealthPolicy(failures_before_cooldown=2, cooldown_s=30)}
            )
        }
    )
    synth = SpeechSynthesizer(config, catalog, [piper, real[EngineName.ESPEAK]], clock=clock)
    yield synth, piper


async def test_fallback_switches_before_first_audio(
    flaky: tuple[SpeechSynthesizer, FlakyBackend], transcriber: Transcriber
) -> None:
    synth, piper = flaky
    piper.fail_on = {0}
    utterance = synth.synthesize(SynthesisRequest(TEXT))
    audio = await utterance.collect()
    result = utterance.result
    assert result.engines == ["espeak-ng"]
    assert [f["engine"] for f in result.fallbacks] == ["piper"]
    assert "injected failure" in result.fallbacks[0]["error"]
    # whisper base: tiny.en hears espeak-ng's "The meeting starts at noon," (the first piece is
    # a whole clause) as "Let me begin to start this afternoon"
    heard = transcriber.transcribe(audio.pcm, audio.sample_rate, base=True)
    assert word_error_rate(TEXT, heard) <= MAX_MIXED_ENGINE_WER, heard


async def test_fallback_after_first_audio_resumes_at_the_failed_piece(
    flaky: tuple[SpeechSynthesizer, FlakyBackend], transcriber: Transcriber
) -> None:
    synth, piper = flaky
    piper.fail_on = {1}
    utterance = synth.synthesize(SynthesisRequest(TEXT))
    pieces = utterance.prepared.pieces
    chunks = [chunk async for chunk in utterance]
    result = utterance.result
    assert result.engines == ["piper", "espeak-ng"]
    assert result.fallbacks[0]["piece"] == "1"
    # every piece spoken exactly once: nothing lost, nothing repeated
    assert len(chunks) == len(pieces) == result.pieces
    heard = transcriber.transcribe(np.concatenate([c.pcm for c in chunks]), 48_000)
    assert word_error_rate(TEXT, heard) <= MAX_MIXED_ENGINE_WER, heard


async def test_engine_that_keeps_failing_is_benched_then_probed(
    flaky: tuple[SpeechSynthesizer, FlakyBackend], clock: FakeClock
) -> None:
    synth, piper = flaky
    piper.fail_always = True
    for _ in range(2):
        utterance = synth.synthesize(SynthesisRequest("Hello there."))
        await utterance.collect()
        assert utterance.result.engines == ["espeak-ng"]
    health = synth.registry.health(EngineName.PIPER)
    assert health is not None

    def state() -> HealthState:
        assert health is not None
        return health.state

    assert state() is HealthState.COOLING_DOWN

    calls_before = piper.calls
    benched = synth.synthesize(SynthesisRequest("Hello there."))
    assert [c.engine for c in benched.prepared.plan] == [EngineName.ESPEAK]
    await benched.collect()
    assert piper.calls == calls_before  # skipped, not tried

    # after the cool-down a probe runs off the request path; a failing probe benches again
    clock.now += 31
    synth.router.plan(synth.router.resolve_voice(None, "en"))
    assert state() is HealthState.PROBING
    await _wait_probe(synth)
    assert state() is HealthState.COOLING_DOWN

    # once the engine works again, the next probe passes and it is trusted again
    piper.fail_always = False
    clock.now += 31
    synth.router.plan(synth.router.resolve_voice(None, "en"))
    await _wait_probe(synth)
    assert state() is HealthState.HEALTHY
    recovered = synth.synthesize(SynthesisRequest("Hello there."))
    await recovered.collect()
    assert recovered.result.engines == ["piper"]


async def test_every_engine_failing_is_a_clear_error(
    flaky: tuple[SpeechSynthesizer, FlakyBackend],
) -> None:
    synth, piper = flaky
    piper.fail_always = True
    utterance = synth.synthesize(
        SynthesisRequest("Hello.", engine="piper", voice_id="en-us-male-premium")
    )
    # the explicit engine fails, espeak-ng (the last resort) still speaks
    await utterance.collect()
    assert utterance.result.engines == ["espeak-ng"]


async def test_no_engine_left_raises_engine_unavailable(
    service_config: ServiceConfig, catalog: VoiceCatalog, synthesizer: SpeechSynthesizer
) -> None:
    real = {b.name: b for b in synthesizer.registry.backends()}
    piper = FlakyBackend(real[EngineName.PIPER])
    piper.load()
    piper.fail_always = True
    synth = SpeechSynthesizer(service_config, catalog, [piper])
    utterance = synth.synthesize(SynthesisRequest("Hello."))
    with pytest.raises(EngineUnavailableError, match="every engine failed"):
        await utterance.collect()


async def _wait_probe(synth: SpeechSynthesizer) -> None:
    probes = list(synth.registry._probes.values())
    for probe in probes:
        await probe
