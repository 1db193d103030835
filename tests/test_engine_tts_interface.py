"""Each engine is a LiveKit TTS: native rate, audio through the emitter, is_final once."""

from __future__ import annotations

from pathlib import Path

import pytest
from livekit.agents import tokenize, tts

from engines.config import WindowedSettings
from engines.names import EngineName
from engines.piper_engine import PiperBackend, bundled_voice_dir
from engines.synthesizer import SpeechSynthesizer
from engines.voices import Binding, EspeakBinding, KokoroBinding, PiperBinding

CASES: list[tuple[EngineName, Binding, str, int]] = [
    (EngineName.PIPER, PiperBinding(model="en_US-joe-medium"), "Hello there. How are you?", 22_050),
    (EngineName.KOKORO, KokoroBinding(voice="jf_alpha"), "こんにちは。元気ですか。", 24_000),
    (EngineName.ESPEAK, EspeakBinding(voice="en-us"), "Hello there. How are you?", 22_050),
]


@pytest.mark.parametrize(("engine", "binding", "text", "native_rate"), CASES)
async def test_engine_streams_frames_at_its_native_rate_with_one_final(
    synthesizer: SpeechSynthesizer,
    engine: EngineName,
    binding: Binding,
    text: str,
    native_rate: int,
) -> None:
    backend = synthesizer.registry.backend(engine)
    assert backend is not None and backend.ready
    voice = backend.create_tts(binding, speed=1.0)
    assert voice.sample_rate == native_rate
    assert voice.num_channels == 1
    assert isinstance(voice, tts.TTS)
    events = [event async for event in voice.synthesize(text)]
    assert len(events) > 1  # audio arrives in frames, not as one blob
    assert all(e.frame.sample_rate == native_rate for e in events)
    assert [e.is_final for e in events].count(True) == 1
    assert events[-1].is_final
    assert sum(e.frame.duration for e in events) > 1.0


async def test_engine_works_behind_livekit_stream_adapter(synthesizer: SpeechSynthesizer) -> None:
    backend = synthesizer.registry.backend(EngineName.PIPER)
    assert backend is not None
    voice = backend.create_tts(PiperBinding(model="en_US-joe-medium"), speed=1.0)
    adapter = tts.StreamAdapter(tts=voice, sentence_tokenizer=tokenize.basic.SentenceTokenizer())
    stream = adapter.stream()
    for word in "Streaming text arrives word by word. Then another sentence follows.".split():
        stream.push_text(word + " ")
    stream.end_input()
    events = [event async for event in stream]
    assert sum(e.frame.duration for e in events) > 2.0
    assert any(e.is_final for e in events)
    await stream.aclose()


async def test_speed_changes_duration(synthesizer: SpeechSynthesizer) -> None:
    backend = synthesizer.registry.backend(EngineName.PIPER)
    assert backend is not None
    durations = []
    for speed in (0.8, 1.25):
        voice = backend.create_tts(PiperBinding(model="en_US-joe-medium"), speed=speed)
        events = [event async for event in voice.synthesize("This sentence is read at two speeds.")]
        durations.append(sum(e.frame.duration for e in events))
    assert durations[0] > durations[1] * 1.3


def test_piper_picks_up_voices_dropped_in_the_models_directory(tmp_path: Path) -> None:
    bundled = bundled_voice_dir()
    assert bundled is not None
    for suffix in (".onnx", ".onnx.json"):
        (tmp_path / f"en_US-extra-medium{suffix}").symlink_to(bundled / f"en_US-joe-medium{suffix}")
    (tmp_path / "orphan.onnx").write_bytes(b"no config beside it")
    backend = PiperBackend(tmp_path, WindowedSettings(workers=1, intra_op_threads=1))
    backend.load()
    try:
        assert backend.ready, backend.detail
        assert backend.voice_names() == ["en_US-extra-medium", "en_US-joe-medium"]
        assert backend.can_render(PiperBinding(model="en_US-extra-medium"))
        assert not backend.can_render(PiperBinding(model="orphan"))
        assert "not installed" in backend.missing_reason(PiperBinding(model="fr_FR-siwis-medium"))
    finally:
        backend.close()
