"""SpeechT5 through its real loading code, on a tiny random model built by the tests.

The model's audio is noise (random weights), so these tests check what the engine promises
about audio — rate, frames, length bounds, speakers, streaming, cancellation — not speech.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import torch
from livekit.agents import tts

from engines.audio import FloatAudio
from engines.backend import EngineState
from engines.config import EngineThreads
from engines.errors import EngineError
from engines.names import EngineName, QualityTier
from engines.speecht5_engine import (
    MAX_FRAMES_PER_TOKEN,
    SPEAKERS_FILE,
    TTS_DIR,
    UNSPEAKABLE_PAUSE_MS,
    VOCODER_DIR,
    SpeechT5Backend,
    SpeechT5TTS,
)
from engines.voices import EspeakBinding, SpeechT5Binding, VoiceCatalog
from tests.speecht5_fixtures import (  # noqa: F401  (the fixtures are used by name)
    FIXTURE_SPEAKER_ROWS,
    copy_as_published_layout,
    speecht5_backend_fixture,
    speecht5_models_dir_fixture,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RATE_HZ = 16_000
THREE_SENTENCES = "Hello there. This is the second sentence. And here is the third one."
EVENT_TIMEOUT_S = 30.0
FETCH_HINT = "python -m tools.fetch_models speecht5"
EMITTER_PADDING_MS = 20
"""LiveKit's emitter may round the last frame up by a few milliseconds."""


def _max_samples(backend: SpeechT5Backend, sentence: str) -> int:
    """The cap on one sentence's audio: MAX_FRAMES_PER_TOKEN frames per input token."""
    frames = backend.token_count(sentence) * MAX_FRAMES_PER_TOKEN
    return int(frames) * backend.samples_per_frame


SynthesizePart = Callable[[str, int, float], FloatAudio]
T = TypeVar("T")


def _on_worker(backend: SpeechT5Backend, function: Callable[..., T], *args: object) -> T:
    """Run ``function`` on the engine's worker thread, with the engine's torch thread count
    (the test thread's default count crawls on a loaded machine: OpenMP waits for busy cores)."""
    return backend._executor.submit(function, *args).result(timeout=EVENT_TIMEOUT_S)


def _all_blocks(voice: SpeechT5TTS, text: str) -> list[FloatAudio]:
    return list(voice._render_text(text, threading.Event()))


def _instrument(
    backend: SpeechT5Backend,
    monkeypatch: pytest.MonkeyPatch,
    before_call: Callable[[int], None],
) -> list[str]:
    """Wrap the backend's per-sentence model call; ``before_call(n)`` runs before call n
    (1-based) in the worker thread. Returns the texts rendered, in order."""
    rendered: list[str] = []
    original: SynthesizePart = backend.synthesize_part

    def wrapped(text: str, speaker: int, speed: float) -> FloatAudio:
        rendered.append(text)
        before_call(len(rendered))
        return original(text, speaker, speed)

    monkeypatch.setattr(backend, "synthesize_part", wrapped)
    return rendered


async def _engine_idle(backend: SpeechT5Backend) -> None:
    """Wait until the (single) worker thread has finished what it was doing."""
    await asyncio.wait_for(
        asyncio.wrap_future(backend._executor.submit(lambda: None)), EVENT_TIMEOUT_S
    )


def test_loads_the_tiny_model_through_from_pretrained(
    speecht5_backend: SpeechT5Backend, speecht5_models_dir: Path
) -> None:
    for written in (
        TTS_DIR / "config.json",
        TTS_DIR / "model.safetensors",
        TTS_DIR / "spm_char.model",
        VOCODER_DIR / "config.json",
        VOCODER_DIR / "model.safetensors",
        SPEAKERS_FILE,
    ):
        assert (speecht5_models_dir / written).is_file(), written
    backend = speecht5_backend
    assert backend.state is EngineState.READY
    assert backend.name is EngineName.SPEECHT5
    assert backend.profile.tier is QualityTier.STANDARD
    assert backend.sample_rate == SAMPLE_RATE_HZ == backend._vocoder.config.sampling_rate
    assert backend.speaker_count == FIXTURE_SPEAKER_ROWS
    assert backend.languages() == frozenset({"en"})
    assert backend.worker_threads == 1
    assert not backend._model.training and not backend._vocoder.training


def test_loads_the_layout_the_hub_publishes(tmp_path: Path, speecht5_models_dir: Path) -> None:
    published = copy_as_published_layout(speecht5_models_dir, tmp_path)
    assert not (published / TTS_DIR / "processor_config.json").exists()
    assert not (published / TTS_DIR / "model.safetensors").exists()
    backend = SpeechT5Backend(published, EngineThreads(workers=1, intra_op_threads=1))
    try:
        backend.load()
        assert backend.ready, backend.detail
        voice = backend.create_tts(SpeechT5Binding(speaker=1138), speed=1.0)
        blocks = _on_worker(backend, _all_blocks, voice, "Hello there.")
        assert len(blocks) == 1 and blocks[0].size > 0
    finally:
        backend.close()


def test_missing_weights_report_not_installed_with_the_fetch_hint(tmp_path: Path) -> None:
    backend = SpeechT5Backend(tmp_path, EngineThreads(workers=1, intra_op_threads=1))
    try:
        backend.load()  # never raises
        assert backend.state is EngineState.NOT_INSTALLED
        assert "SpeechT5 weights not found" in backend.detail
        assert FETCH_HINT in backend.detail
        assert backend.languages() == frozenset()
        assert not backend.can_render(SpeechT5Binding(speaker=0))
        assert "not_installed" in backend.missing_reason(SpeechT5Binding(speaker=0))
        with pytest.raises(EngineError):
            backend.create_tts(SpeechT5Binding(speaker=0), speed=1.0)
    finally:
        backend.close()


def test_a_partial_install_names_the_missing_file(
    tmp_path: Path, speecht5_models_dir: Path
) -> None:
    (tmp_path / TTS_DIR).parent.mkdir(parents=True)
    for part in (TTS_DIR, VOCODER_DIR):
        (tmp_path / part).symlink_to(speecht5_models_dir / part)
    backend = SpeechT5Backend(tmp_path, EngineThreads(workers=1, intra_op_threads=1))
    try:
        backend.load()
        assert backend.state is EngineState.NOT_INSTALLED
        assert "speakers.npy" in backend.detail and FETCH_HINT in backend.detail
        assert "model.safetensors" not in backend.detail
    finally:
        backend.close()
    (tmp_path / VOCODER_DIR).unlink()
    (tmp_path / VOCODER_DIR).mkdir()
    (tmp_path / VOCODER_DIR / "config.json").symlink_to(
        speecht5_models_dir / VOCODER_DIR / "config.json"
    )
    np.save(tmp_path / SPEAKERS_FILE, np.zeros((1, 32), dtype=np.float32))
    backend = SpeechT5Backend(tmp_path, EngineThreads(workers=1, intra_op_threads=1))
    try:
        backend.load()  # a vocoder without its weights is not installed, not a crash
        assert backend.state is EngineState.NOT_INSTALLED
        assert "hifigan/model.safetensors or pytorch_model.bin" in backend.detail
    finally:
        backend.close()


def test_a_speaker_table_of_the_wrong_width_fails_without_raising(
    tmp_path: Path, speecht5_models_dir: Path
) -> None:
    (tmp_path / TTS_DIR).parent.mkdir(parents=True)
    for part in (TTS_DIR, VOCODER_DIR):
        (tmp_path / part).symlink_to(speecht5_models_dir / part)
    np.save(tmp_path / SPEAKERS_FILE, np.zeros((4, 7), dtype=np.float32))
    backend = SpeechT5Backend(tmp_path, EngineThreads(workers=1, intra_op_threads=1))
    try:
        backend.load()
        assert backend.state is EngineState.FAILED
        assert "[4, 7]" in backend.detail
    finally:
        backend.close()


async def test_frames_are_16k_mono_with_one_final_and_real_audio(
    speecht5_backend: SpeechT5Backend,
) -> None:
    voice = speecht5_backend.create_tts(SpeechT5Binding(speaker=7306), speed=1.0)
    assert isinstance(voice, tts.TTS)
    assert voice.sample_rate == SAMPLE_RATE_HZ and voice.num_channels == 1
    events = [event async for event in voice.synthesize("Hello there. How are you?")]
    assert len(events) > 1
    assert all(e.frame.sample_rate == SAMPLE_RATE_HZ for e in events)
    assert [e.is_final for e in events].count(True) == 1 and events[-1].is_final
    pcm = np.concatenate([np.frombuffer(bytes(e.frame.data), dtype=np.int16) for e in events])
    assert np.count_nonzero(pcm) > pcm.size // 2
    audio = _on_worker(
        speecht5_backend, speecht5_backend.synthesize_part, "Hello there.", 7306, 1.0
    )
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    assert float(np.sqrt(np.mean(audio**2))) > 1e-3


async def test_duration_is_bounded_by_text_length_when_the_model_never_stops(
    speecht5_backend: SpeechT5Backend,
) -> None:
    # the fixture's stop head never fires: every sentence runs to the cap, and no further
    voice = speecht5_backend.create_tts(SpeechT5Binding(speaker=1138), speed=1.0)
    sentences = ["Hello there.", "This is the second sentence.", "And the third one."]
    blocks = _on_worker(speecht5_backend, _all_blocks, voice, " ".join(sentences))
    assert len(blocks) == len(sentences)
    for block, sentence in zip(blocks, sentences, strict=True):
        cap = _max_samples(speecht5_backend, sentence)
        assert 0.9 * cap <= block.size <= cap, sentence
        assert block.size / SAMPLE_RATE_HZ < 0.2 * len(sentence)  # under 200 ms a character
    events = [event async for event in voice.synthesize(" ".join(sentences))]
    emitted = sum(e.frame.samples_per_channel for e in events)
    emitter_padding = SAMPLE_RATE_HZ * EMITTER_PADDING_MS // 1000
    assert emitted <= sum(block.size for block in blocks) + emitter_padding


def test_long_sentences_are_cut_between_words_into_model_sized_parts(
    speecht5_backend: SpeechT5Backend,
) -> None:
    backend = speecht5_backend
    sentence = " ".join(["remember"] * 40) + " and then, quickly, stop"
    assert backend.token_count(sentence) > backend.max_input_tokens
    parts = backend.model_sized_parts(sentence)
    assert len(parts) > 1
    assert all(backend.token_count(part) <= backend.max_input_tokens for part in parts)
    assert " ".join(parts).split() == sentence.split()  # nothing lost, no word cut
    one_word = "x" * (3 * backend.max_input_tokens)
    assert "".join(backend.model_sized_parts(one_word)) == one_word
    voice = backend.create_tts(SpeechT5Binding(speaker=3), speed=1.0)
    blocks = _on_worker(backend, _all_blocks, voice, " ".join(["remember"] * 14))
    assert len(blocks) == 2 and all(block.size > 0 for block in blocks)


def test_each_speaker_row_is_its_own_voice(speecht5_backend: SpeechT5Backend) -> None:
    text = "The same words for both voices."
    render = speecht5_backend.synthesize_part
    first = _on_worker(speecht5_backend, render, text, 7306, 1.0)
    again = _on_worker(speecht5_backend, render, text, 7306, 1.0)
    other = _on_worker(speecht5_backend, render, text, 1138, 1.0)
    np.testing.assert_array_equal(first, again)  # deterministic backend
    assert first.shape == other.shape  # same cap: the fixture never stops
    assert float(np.abs(first - other).mean()) > 0.1 * float(np.abs(first).mean())


def test_speakers_out_of_the_table_cannot_render_and_say_why(
    speecht5_backend: SpeechT5Backend,
) -> None:
    beyond = SpeechT5Binding(speaker=FIXTURE_SPEAKER_ROWS)
    assert not speecht5_backend.can_render(beyond)
    reason = speecht5_backend.missing_reason(beyond)
    assert str(FIXTURE_SPEAKER_ROWS) in reason and f"0..{FIXTURE_SPEAKER_ROWS - 1}" in reason
    with pytest.raises(EngineError) as raised:
        speecht5_backend.create_tts(beyond, speed=1.0)
    assert not raised.value.retryable
    assert not speecht5_backend.can_render(EspeakBinding(voice="en-us"))
    catalog = VoiceCatalog.load(REPO_ROOT / "voices.yaml")
    library_bindings = [
        b for v in catalog if isinstance(b := v.engines.get(EngineName.SPEECHT5), SpeechT5Binding)
    ]
    assert {b.speaker for b in library_bindings} >= {7306, 1138}
    assert all(speecht5_backend.can_render(binding) for binding in library_bindings)


async def test_first_audio_arrives_before_the_last_sentence_is_rendered(
    speecht5_backend: SpeechT5Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_audio = threading.Event()
    last_waited: list[bool] = []

    def before_call(call: int) -> None:
        if call == 3:  # the last sentence renders only once the listener has audio
            last_waited.append(first_audio.wait(EVENT_TIMEOUT_S))

    rendered = _instrument(speecht5_backend, monkeypatch, before_call)
    voice = speecht5_backend.create_tts(SpeechT5Binding(speaker=7306), speed=1.0)
    started = time.perf_counter()
    first_audio_s: float | None = None
    async for _event in voice.synthesize(THREE_SENTENCES):
        if first_audio_s is None:
            first_audio_s = time.perf_counter() - started
            first_audio.set()
    assert len(rendered) == 3
    assert last_waited == [True]
    assert first_audio_s is not None
    print(f"tiny SpeechT5: first audio after {first_audio_s * 1000:.0f} ms")


async def test_closing_the_stream_stops_the_thread_at_the_next_sentence(
    speecht5_backend: SpeechT5Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    second_started = threading.Event()
    closed = threading.Event()

    def before_call(call: int) -> None:
        if call == 2:  # the listener leaves while the second sentence is being rendered
            second_started.set()
            closed.wait(EVENT_TIMEOUT_S)

    rendered = _instrument(speecht5_backend, monkeypatch, before_call)
    voice = speecht5_backend.create_tts(SpeechT5Binding(speaker=7306), speed=1.0)
    text = " ".join(f"Sentence number {n} is here." for n in range(1, 6))
    stream = voice.synthesize(text)
    async for _event in stream:
        break
    assert await asyncio.to_thread(second_started.wait, EVENT_TIMEOUT_S)
    await stream.aclose()
    closed.set()
    await _engine_idle(speecht5_backend)
    assert rendered == ["Sentence number 1 is here.", "Sentence number 2 is here."]


async def test_speed_stretches_the_frames_and_is_clamped(
    speecht5_backend: SpeechT5Backend,
) -> None:
    text = "Speed changes how long this lasts."
    lengths = {}
    for speed in (0.5, 1.0, 2.0, 4.0):
        voice = speecht5_backend.create_tts(SpeechT5Binding(speaker=5), speed=speed)
        blocks = _on_worker(speecht5_backend, _all_blocks, voice, text)
        lengths[speed] = sum(block.size for block in blocks)
    assert lengths[0.5] == pytest.approx(2 * lengths[1.0], rel=0.02)
    assert lengths[2.0] == pytest.approx(lengths[1.0] / 2, rel=0.02)
    assert lengths[4.0] == lengths[2.0]  # outside 0.5..2.0 is clamped, like Kokoro


async def test_blank_text_gives_no_audio_and_punctuation_a_pause_without_the_model(
    speecht5_backend: SpeechT5Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = _instrument(speecht5_backend, monkeypatch, lambda call: None)
    voice = speecht5_backend.create_tts(SpeechT5Binding(speaker=7306), speed=1.0)
    emitter_padding = SAMPLE_RATE_HZ * EMITTER_PADDING_MS // 1000
    assert [event async for event in voice.synthesize("")] == []
    assert [event async for event in voice.synthesize("   ")] == []
    for text in ("...", "?! —"):
        # LiveKit wants audio for any non-blank text: a short pause, as espeak-ng gives
        events = [event async for event in voice.synthesize(text)]
        pcm = np.concatenate([np.frombuffer(bytes(e.frame.data), dtype=np.int16) for e in events])
        assert 0 < pcm.size <= SAMPLE_RATE_HZ * UNSPEAKABLE_PAUSE_MS // 1000 + emitter_padding
        assert not pcm.any()
    assert rendered == []
    # odd characters outside the tokenizer's alphabet are spoken (as <unk>), not an error
    events = [event async for event in voice.synthesize("Ünïcödé ☃ 42 日本")]
    assert sum(e.frame.samples_per_channel for e in events) > 0


def test_worker_threads_use_their_own_torch_thread_count(tmp_path: Path) -> None:
    def fresh_thread_default() -> int:
        seen: list[int] = []
        probe = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        probe.start()
        probe.join()
        return seen[0]

    before = fresh_thread_default()
    wanted = 1 if before != 1 else 2
    backend = SpeechT5Backend(tmp_path, EngineThreads(workers=1, intra_op_threads=wanted))
    try:
        assert backend._executor.submit(torch.get_num_threads).result() == wanted
        assert fresh_thread_default() == before  # other torch engines keep the default
    finally:
        backend.close()


def test_warm_up_runs_one_synthesis_on_a_worker(
    speecht5_backend: SpeechT5Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    rendered = _instrument(
        speecht5_backend,
        monkeypatch,
        lambda call: threads.append(threading.current_thread().name),
    )
    speecht5_backend.warm_up()
    assert len(rendered) == 1
    assert threads[0].startswith("speecht5")
