"""XTTS v2 on a tiny random model loaded through coqui's real code: streaming, speakers, cloning.

The model is tiny and random (see ``tests/xtts_fixtures.py``): the tests check the audio's rate,
length, finiteness and energy, never what it says.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines.audio import FloatAudio
from engines.backend import EngineState
from engines.config import EngineThreads
from engines.errors import EngineUnavailableError, UnknownLanguageError
from engines.voice_reference import VoiceReference, decode_voice_reference
from engines.voices import PiperBinding, XttsBinding
from engines.xtts_engine import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    REQUIRED_FILES,
    SPEAKERS_FILE,
    XTTS_DIR,
    SpeakerLatentCache,
    SpeakerLatents,
    XttsBackend,
    XttsTTS,
)
from tests.reference_audio import ENCODINGS, encode, voiced_signal
from tests.xtts_fixtures import (  # noqa: F401  (session fixtures)
    BUILT_IN_SPEAKERS,
    GENERATED_TOKENS_PER_SENTENCE,
    SAMPLES_PER_TOKEN_22K,
    TEST_CHUNK_TOKENS,
    TEST_LATENT_CACHE_SIZE,
    tiny_xtts,
    tiny_xtts_backend_for,
    tiny_xtts_models_dir,
)

SENTENCE = "Hello world, this is a test."
TWO_SENTENCES = "Hello there. How are you today?"
OUTPUT_RATE_HZ = 24_000
PUBLISHED_MODEL_BYTES = 92_000_000
"""What a tiny model with full-size float32 vocoder and speaker encoder weighs."""
MIN_RMS = 1e-4
REFERENCE_S = 5.0
WAIT_S = 30.0
"""Upper bound for waiting on another thread (never a sleep the test relies on)."""


def sentence_samples_bound() -> int:
    """Most samples one sentence can have: every token decoded, at the output rate."""
    return int(GENERATED_TOKENS_PER_SENTENCE * SAMPLES_PER_TOKEN_22K * OUTPUT_RATE_HZ / 22_050) + 1


def assert_audio(audio: FloatAudio, *, max_samples: int) -> None:
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0 < audio.size <= max_samples
    assert np.all(np.isfinite(audio)) and np.max(np.abs(audio)) <= 1.0
    assert float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) > MIN_RMS


def render(voice: XttsTTS, text: str = SENTENCE) -> list[FloatAudio]:
    return list(voice._render(text, threading.Event()))


def reference(seed: int, seconds: float = REFERENCE_S, encoding: str = "wav") -> VoiceReference:
    """A reference no other test uses (the session's latent cache is shared)."""
    return decode_voice_reference(encode(voiced_signal(seconds, seed=seed), encoding))


class LatentSpy:
    """Counts the model's latent computations (both of coqui's tensor-level calls)."""

    def __init__(self, backend: XttsBackend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gpt_calls = 0
        self.speaker_calls = 0
        model = backend._model
        gpt_latents = model.get_gpt_cond_latents
        speaker_embedding = model.get_speaker_embedding

        def counted_gpt(*args: Any, **kwargs: Any) -> Any:
            self.gpt_calls += 1
            return gpt_latents(*args, **kwargs)

        def counted_speaker(*args: Any, **kwargs: Any) -> Any:
            self.speaker_calls += 1
            return speaker_embedding(*args, **kwargs)

        monkeypatch.setattr(model, "get_gpt_cond_latents", counted_gpt)
        monkeypatch.setattr(model, "get_speaker_embedding", counted_speaker)


@pytest.fixture
def forward_counts(tiny_xtts: XttsBackend) -> Iterator[dict[str, int]]:  # noqa: F811
    """GPT steps and vocoder runs so far, counted by forward hooks."""
    counts = {"gpt_steps": 0, "decodes": 0}
    model = tiny_xtts._model

    def counter(key: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            counts[key] += 1

        return hook

    handles = [
        model.gpt.gpt_inference.register_forward_hook(counter("gpt_steps")),
        model.hifigan_decoder.register_forward_hook(counter("decodes")),
    ]
    yield counts
    for handle in handles:
        handle.remove()


def test_tiny_model_loads_through_coqui_load_checkpoint(
    tiny_xtts_models_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from TTS.tts.models.xtts import Xtts

    calls: list[dict[str, Any]] = []
    original = Xtts.load_checkpoint

    def spy(self: Any, config: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return original(self, config, **kwargs)

    monkeypatch.setattr(Xtts, "load_checkpoint", spy)
    backend = tiny_xtts_backend_for(tiny_xtts_models_dir)
    try:
        assert backend.state is EngineState.READY, backend.detail
        weights = tiny_xtts_models_dir / XTTS_DIR
        assert calls == [{"checkpoint_dir": str(weights), "use_deepspeed": False, "eval": True}]
        import torch

        saved = torch.load(weights / CHECKPOINT_FILE, weights_only=True)["model"]
        key = "gpt.mel_head.weight"
        loaded = backend._model.state_dict()[key].cpu()
        assert torch.equal(loaded, saved[key].float())
        # coqui's eval=True puts the GPT and the vocoder (every module that runs) in eval mode,
        # though not the Xtts wrapper itself
        for part in (backend._model.gpt, backend._model.hifigan_decoder):
            assert not any(module.training for module in part.modules())
    finally:
        backend.close()
    assert (weights / CHECKPOINT_FILE).stat().st_size < PUBLISHED_MODEL_BYTES / 3


def test_loaded_engine_reports_languages_rate_and_speakers(
    tiny_xtts: XttsBackend,  # noqa: F811
) -> None:
    assert tiny_xtts.ready
    languages = tiny_xtts.languages()
    assert {"en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar"} <= languages
    assert {"ja", "zh", "ko", "hu", "hi"} <= languages  # ja: cutlet, zh: pypinyin (installed)
    assert len(languages) == 17
    assert tiny_xtts.sample_rate == OUTPUT_RATE_HZ
    assert tiny_xtts.speaker_names() == sorted(BUILT_IN_SPEAKERS)
    assert tiny_xtts.supports_cloning
    assert tiny_xtts.worker_threads == 2 and tiny_xtts.queue_depth == 0


def test_missing_weights_are_not_installed_with_the_fetch_hint(tmp_path: Path) -> None:
    backend = XttsBackend(tmp_path, EngineThreads(workers=1))
    backend.load()  # never raises
    try:
        assert backend.state is EngineState.NOT_INSTALLED
        assert "XTTS v2 weights not found in" in backend.detail
        assert str(tmp_path / XTTS_DIR) in backend.detail
        assert "python -m tools.fetch_models xtts" in backend.detail
        assert backend.languages() == frozenset()
        assert not backend.can_render(XttsBinding(speaker=BUILT_IN_SPEAKERS[0]))
        with pytest.raises(EngineUnavailableError):
            backend.create_cloned_tts(reference(seed=92), language="en", speed=1.0)
    finally:
        backend.close()


def test_partial_weights_name_the_missing_files(tmp_path: Path) -> None:
    (tmp_path / XTTS_DIR).mkdir()
    (tmp_path / XTTS_DIR / CONFIG_FILE).write_text("{}")
    backend = XttsBackend(tmp_path, EngineThreads(workers=1))
    backend.load()
    try:
        assert backend.state is EngineState.NOT_INSTALLED
        for name in REQUIRED_FILES[1:]:
            assert name in backend.detail
    finally:
        backend.close()


def test_without_speakers_file_only_cloned_voices_work(
    tiny_xtts_models_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    target = tmp_path / XTTS_DIR
    target.mkdir()
    for name in REQUIRED_FILES:
        (target / name).symlink_to(tiny_xtts_models_dir / XTTS_DIR / name)
    backend = tiny_xtts_backend_for(tmp_path)
    try:
        assert backend.ready, backend.detail
        assert backend.speaker_names() == []
        binding = XttsBinding(speaker=BUILT_IN_SPEAKERS[0])
        assert not backend.can_render(binding)
        assert SPEAKERS_FILE in backend.missing_reason(binding)
        backend.warm_up()  # nothing to speak with: returns without synthesizing
        voice = backend.create_cloned_tts(reference(seed=90), language="en", speed=1.0)
        assert voice.sample_rate == OUTPUT_RATE_HZ
    finally:
        backend.close()


def test_built_in_speakers_render_and_unknown_ones_do_not(
    tiny_xtts: XttsBackend,  # noqa: F811
) -> None:
    for name in BUILT_IN_SPEAKERS:
        assert tiny_xtts.can_render(XttsBinding(speaker=name))
    assert not tiny_xtts.can_render(XttsBinding(speaker="Nobody Atall"))
    assert "Nobody Atall" in tiny_xtts.missing_reason(XttsBinding(speaker="Nobody Atall"))
    assert not tiny_xtts.can_render(PiperBinding(model=BUILT_IN_SPEAKERS[0]))


def test_a_sentence_streams_in_chunks_and_the_first_leaves_before_it_is_generated(
    tiny_xtts: XttsBackend,  # noqa: F811
    forward_counts: dict[str, int],
) -> None:
    voice = tiny_xtts.create_tts(XttsBinding(speaker=BUILT_IN_SPEAKERS[1]), speed=1.0)
    seen: list[tuple[int, int]] = []
    chunks: list[FloatAudio] = []
    for chunk in voice._render(SENTENCE, threading.Event()):
        seen.append((forward_counts["gpt_steps"], forward_counts["decodes"]))
        chunks.append(chunk)
    expected_chunks = -(-GENERATED_TOKENS_PER_SENTENCE // TEST_CHUNK_TOKENS)
    assert len(chunks) == expected_chunks > 1
    first_steps, first_decodes = seen[0]
    # the first chunk was handed over after its own tokens, while the rest were still to come
    assert first_decodes == 1
    assert first_steps <= TEST_CHUNK_TOKENS + 1 < forward_counts["gpt_steps"]
    assert [decodes for _, decodes in seen] == list(range(1, expected_chunks + 1))
    audio = np.concatenate(chunks)
    assert_audio(audio, max_samples=sentence_samples_bound())
    assert audio.size > sentence_samples_bound() // 2


def test_stopping_mid_sentence_releases_the_model(tiny_xtts: XttsBackend) -> None:  # noqa: F811
    voice = tiny_xtts.create_tts(XttsBinding(speaker=BUILT_IN_SPEAKERS[0]), speed=1.0)
    stop = threading.Event()
    chunks = voice._render(SENTENCE, stop)
    next(chunks)
    stop.set()
    assert list(chunks) == []
    assert tiny_xtts._generation_lock.acquire(blocking=False)
    tiny_xtts._generation_lock.release()


async def test_livekit_synthesis_gives_frames_at_24k_with_one_final(
    tiny_xtts: XttsBackend,  # noqa: F811
) -> None:
    voice = tiny_xtts.create_tts(
        XttsBinding(speaker=BUILT_IN_SPEAKERS[0]), speed=1.0, latency_critical=True
    )
    assert voice.sample_rate == OUTPUT_RATE_HZ and voice.num_channels == 1
    events = [event async for event in voice.synthesize(TWO_SENTENCES)]
    assert len(events) > 1
    assert all(e.frame.sample_rate == OUTPUT_RATE_HZ for e in events)
    assert [e.is_final for e in events].count(True) == 1 and events[-1].is_final
    duration = sum(e.frame.duration for e in events)
    one_sentence_s = sentence_samples_bound() / OUTPUT_RATE_HZ
    assert one_sentence_s < duration <= 2 * one_sentence_s + 0.2  # two sentences, each bounded


def test_unknown_language_is_a_typed_error(tiny_xtts: XttsBackend) -> None:  # noqa: F811
    with pytest.raises(UnknownLanguageError) as caught:
        tiny_xtts.create_cloned_tts(reference(seed=91), language="tlh", speed=1.0)
    assert caught.value.code == "unknown_language"
    assert "en" in caught.value.message
    with pytest.raises(UnknownLanguageError):
        tiny_xtts.create_tts(XttsBinding(speaker=BUILT_IN_SPEAKERS[0]), speed=1.0, language="xx")
    voice = tiny_xtts.create_tts(
        XttsBinding(speaker=BUILT_IN_SPEAKERS[0]), speed=1.0, language="es-MX"
    )
    assert voice._opts.language == "es"


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_a_cloned_voice_renders_from_each_reference_format(
    tiny_xtts: XttsBackend,  # noqa: F811
    encoding: str,
) -> None:
    cloned = reference(seed=100 + sorted(ENCODINGS).index(encoding), encoding=encoding)
    voice = tiny_xtts.create_cloned_tts(cloned, language="en", speed=1.0)
    assert voice.sample_rate == OUTPUT_RATE_HZ
    chunks = render(voice)
    assert len(chunks) > 1
    assert_audio(np.concatenate(chunks), max_samples=sentence_samples_bound())
    assert cloned.digest in tiny_xtts.latent_cache


def test_the_same_reference_again_is_a_cache_hit(
    tiny_xtts: XttsBackend,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = LatentSpy(tiny_xtts, monkeypatch)
    data = encode(voiced_signal(REFERENCE_S, seed=200), "wav")
    hits, misses = tiny_xtts.latent_cache_hits, tiny_xtts.latent_cache_misses
    first = tiny_xtts.create_cloned_tts(decode_voice_reference(data), language="en", speed=1.0)
    assert_audio(np.concatenate(render(first)), max_samples=sentence_samples_bound())
    assert (spy.gpt_calls, spy.speaker_calls) == (1, 1)
    # a second request decodes the same bytes again (as the API does): same digest, no compute
    second = tiny_xtts.create_cloned_tts(decode_voice_reference(data), language="fr", speed=1.2)
    assert_audio(np.concatenate(render(second)), max_samples=sentence_samples_bound())
    assert (spy.gpt_calls, spy.speaker_calls) == (1, 1)
    assert tiny_xtts.latent_cache_misses == misses + 1
    assert tiny_xtts.latent_cache_hits == hits + 1


def test_latents_match_coqui_shapes(tiny_xtts: XttsBackend) -> None:  # noqa: F811
    latents = tiny_xtts.clone_latents(reference(seed=210, seconds=12.0))
    built_in = tiny_xtts._speakers[BUILT_IN_SPEAKERS[0]]
    assert latents.gpt_cond_latent.shape == built_in.gpt_cond_latent.shape
    assert latents.speaker_embedding.shape == built_in.speaker_embedding.shape


def test_the_least_recently_used_reference_is_evicted(
    tiny_xtts: XttsBackend,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert TEST_LATENT_CACHE_SIZE == 2
    spy = LatentSpy(tiny_xtts, monkeypatch)
    first, second, third = (reference(seed) for seed in (300, 301, 302))
    evictions = tiny_xtts.latent_cache.evictions
    earlier = len(tiny_xtts.latent_cache)  # other tests' references, older than these
    tiny_xtts.clone_latents(first)
    tiny_xtts.clone_latents(second)
    tiny_xtts.clone_latents(first)  # hit: the first is now the most recent
    tiny_xtts.clone_latents(third)  # evicts the second
    assert spy.gpt_calls == 3
    assert first.digest in tiny_xtts.latent_cache and third.digest in tiny_xtts.latent_cache
    assert second.digest not in tiny_xtts.latent_cache
    assert len(tiny_xtts.latent_cache) == TEST_LATENT_CACHE_SIZE
    assert tiny_xtts.latent_cache.evictions == evictions + earlier + 1
    tiny_xtts.clone_latents(second)
    assert spy.gpt_calls == 4  # computed again after its eviction


async def test_concurrent_requests_for_one_reference_compute_once(
    tiny_xtts: XttsBackend,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = LatentSpy(tiny_xtts, monkeypatch)
    cloned = reference(seed=400)
    hits = tiny_xtts.latent_cache_hits
    compute = tiny_xtts._compute_latents
    waiter_arrived = threading.Event()

    def compute_once_the_other_waits(ref: VoiceReference) -> SpeakerLatents:
        # hold the computation until the second request found it in progress
        deadline = time.monotonic() + WAIT_S
        while tiny_xtts.latent_cache_hits == hits and time.monotonic() < deadline:
            waiter_arrived.wait(0.01)
        return compute(ref)

    monkeypatch.setattr(tiny_xtts, "_compute_latents", compute_once_the_other_waits)
    await asyncio.gather(*(tiny_xtts.prepare_clone(cloned) for _ in range(3)))
    assert (spy.gpt_calls, spy.speaker_calls) == (1, 1)
    assert tiny_xtts.latent_cache_hits == hits + 2
    # and a render with that reference computes nothing more
    voice = tiny_xtts.create_cloned_tts(cloned, language="en", speed=1.0)
    frames = [event async for event in voice.synthesize(SENTENCE)]
    assert frames and spy.gpt_calls == 1


def test_latent_cache_waiters_share_one_computation() -> None:
    cache = SpeakerLatentCache(capacity=4)
    started, release = threading.Event(), threading.Event()
    computed: list[str] = []
    results: list[SpeakerLatents] = []
    value = SpeakerLatents("latent", "embedding")

    def slow() -> SpeakerLatents:
        computed.append("slow")
        started.set()
        release.wait(WAIT_S)
        return value

    def never() -> SpeakerLatents:
        computed.append("never")
        return value

    first = threading.Thread(target=lambda: results.append(cache.get_or_compute("d", slow)))
    first.start()
    assert started.wait(WAIT_S)
    waiters = [
        threading.Thread(target=lambda: results.append(cache.get_or_compute("d", never)))
        for _ in range(3)
    ]
    for waiter in waiters:
        waiter.start()
    deadline = time.monotonic() + WAIT_S
    while cache.hits < len(waiters) and time.monotonic() < deadline:
        release.wait(0.01)
    assert cache.hits == len(waiters) and "d" not in cache  # all waiting on the computation
    release.set()
    for thread in (first, *waiters):
        thread.join(WAIT_S)
    assert computed == ["slow"] and cache.misses == 1
    assert results == [value] * 4


def test_latent_cache_failure_reaches_waiters_and_is_not_cached() -> None:
    cache = SpeakerLatentCache(capacity=1)

    def broken() -> SpeakerLatents:
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError):
        cache.get_or_compute("d", broken)
    assert "d" not in cache
    value = SpeakerLatents("latent", "embedding")
    assert cache.get_or_compute("d", lambda: value) is value
    assert cache.misses == 2


def test_warm_up_speaks_with_a_built_in_speaker(
    tiny_xtts: XttsBackend,  # noqa: F811
    forward_counts: dict[str, int],
) -> None:
    tiny_xtts.warm_up()
    assert forward_counts["decodes"] > 0
