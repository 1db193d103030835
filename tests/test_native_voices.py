"""Native voices of a language come before the bundled-style fallback: Kokoro's published voices
(``<models_dir>/kokoro/voices``) and the seed languages' Piper voices, when present.

The published weights are not reachable here, so the tests build stand-ins in a models
directory of their own: Kokoro's ``ef_dora`` and ``hf_alpha`` are copies of a bundled style
table written in the pack's file format, and Piper's ``es_ES-davefx-medium`` is the bundled joe
voice set to phonemize Spanish. They exercise the real loading, routing and synthesis; what they
sound like is not the published voices' sound.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from engines.config import ServiceConfig
from engines.kokoro_engine import PACK_DIR, SETTINGS, KokoroBackend, load_pack
from engines.names import EngineName, SelectionStrategy
from engines.piper_engine import bundled_voice_dir
from engines.router import EngineRouter
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest, build_backends
from engines.voices import VoiceCatalog
from tests.transcriber import Transcriber, word_error_rate

SOFIA = "es-mx-female-premium"  # kokoro: ef_dora, bundled jf_nezumi
CARLOS = "es-es-male-premium"  # piper: es_ES-davefx-medium; kokoro: em_alex, bundled jm_kumo
SPANISH = "El tren al aeropuerto sale del andén cuatro cada hora."
STAND_IN_OF = {"ef_dora": "jf_nezumi", "hf_alpha": "jf_alpha"}


def write_pack_voice(folder: Path, name: str, table: np.ndarray) -> None:
    """A voice in the published pack's format: the style table as raw float32."""
    folder.mkdir(parents=True, exist_ok=True)
    np.asarray(table, dtype="<f4").tofile(folder / f"{name}.bin")


def write_spanish_piper(models_dir: Path) -> None:
    bundled = bundled_voice_dir()
    assert bundled is not None
    shutil.copy(bundled / "en_US-joe-medium.onnx", models_dir / "es_ES-davefx-medium.onnx")
    config = json.loads((bundled / "en_US-joe-medium.onnx.json").read_text(encoding="utf-8"))
    config["espeak"] = {"voice": "es"}
    config["language"] = {"code": "es_ES", "family": "es"}
    (models_dir / "es_ES-davefx-medium.onnx.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, service_config: ServiceConfig) -> Path:
    folder = tmp_path_factory.mktemp("models")
    bundled = KokoroBackend(
        service_config.models_dir / ".cache", service_config.engines.section(SETTINGS)
    )
    bundled.load()
    for name, style in STAND_IN_OF.items():
        write_pack_voice(folder / PACK_DIR, name, bundled.style(style))
    bundled.close()
    write_spanish_piper(folder)
    # the Kokoro model and Piper's split parts are joined once, in the shared cache
    (folder / ".cache").symlink_to(service_config.models_dir / ".cache")
    return folder


@pytest.fixture(scope="module")
async def native(
    service_config: ServiceConfig, catalog: VoiceCatalog, models_dir: Path
) -> AsyncIterator[SpeechSynthesizer]:
    off = (EngineName.EDGE, EngineName.XTTS, EngineName.SPEECHT5)
    config = service_config.model_copy(update={"models_dir": models_dir, "disabled_engines": off})
    synth = SpeechSynthesizer(config, catalog, build_backends(config, deterministic=True))
    await synth.start()
    yield synth
    await synth.aclose()


def route(
    synth: SpeechSynthesizer, voice_id: str, strategy: SelectionStrategy | None = None
) -> list[str]:
    router: EngineRouter = synth.router
    resolved = router.resolve_voice(voice_id, None)
    return [str(c.engine) for c in router.plan(resolved, strategy=strategy)]


def rows(synth: SpeechSynthesizer, voice_id: str) -> dict[str, dict[str, object]]:
    voice = synth.router.resolve_voice(voice_id, None).voice
    assert voice is not None
    return {str(row["engine"]): row for row in synth.router.availability(voice)}


def test_a_pack_file_that_is_not_a_style_table_is_skipped(tmp_path: Path) -> None:
    write_pack_voice(tmp_path, "ef_dora", np.zeros((510, 1, 256)))
    (tmp_path / "em_alex.bin").write_bytes(b"\x00" * 1001)  # not whole floats of 256
    write_pack_voice(tmp_path, "if_sara", np.full((510, 1, 256), np.nan))
    loaded = load_pack(tmp_path)
    assert list(loaded) == ["ef_dora"] and loaded["ef_dora"].shape == (510, 1, 256)


async def test_the_published_voice_replaces_the_bundled_style(
    native: SpeechSynthesizer, synthesizer: SpeechSynthesizer, transcriber: Transcriber
) -> None:
    # without the pack: the bundled style, accented and labelled so
    before = rows(synthesizer, SOFIA)["kokoro"]
    assert before["label"] == "Kokoro, Japanese voice style jf_nezumi, accented"
    assert before["measured"] is not None  # the table measured jf_nezumi in Spanish
    after = rows(native, SOFIA)["kokoro"]
    assert after["available"] is True and after["label"] is None
    assert after["measured"] is None  # ef_dora is not in the shipped table: the prior ranks it
    kokoro = native.registry.backend(EngineName.KOKORO)
    assert isinstance(kokoro, KokoroBackend)
    binding = native.router.binding(native.router.resolve_voice(SOFIA, None), EngineName.KOKORO)
    assert binding is not None and kokoro.spoken_voice(binding) == "ef_dora"
    utterance = native.synthesize(SynthesisRequest(SPANISH, voice_id=SOFIA))
    pcm = np.concatenate([chunk.pcm async for chunk in utterance])
    assert utterance.result.engine == "kokoro"
    heard = transcriber.transcribe(pcm, 48_000, "es")
    assert word_error_rate(SPANISH, heard) <= 0.2, heard


@pytest.mark.parametrize(
    "strategy", [None, SelectionStrategy.QUALITY_FIRST, SelectionStrategy.SPEED_FIRST]
)
async def test_a_native_piper_voice_comes_before_the_accented_style(
    native: SpeechSynthesizer, synthesizer: SpeechSynthesizer, strategy: SelectionStrategy | None
) -> None:
    # Carlos: Piper's Spanish voice is present here, Kokoro's em_alex is not (jm_kumo speaks)
    assert route(synthesizer, CARLOS, strategy)[0] == "kokoro"  # no Piper voice: the style
    plan = route(native, CARLOS, strategy)
    assert plan[:2] == ["piper", "kokoro"] and plan[-1] == "espeak-ng", plan
    label = rows(native, CARLOS)["kokoro"]["label"]
    assert label == "Kokoro, Japanese voice style jm_kumo, accented"


async def test_carlos_is_spoken_by_the_piper_voice(native: SpeechSynthesizer) -> None:
    utterance = native.synthesize(SynthesisRequest(SPANISH, voice_id=CARLOS))
    pcm = np.concatenate([chunk.pcm async for chunk in utterance])
    assert utterance.result.engine == "piper" and pcm.size > 48_000


async def test_a_language_without_a_library_voice_gets_a_published_one(
    native: SpeechSynthesizer, synthesizer: SpeechSynthesizer
) -> None:
    assert synthesizer.router.resolve_voice(None, "hi").voice_id == "espeak-ng:hi"
    resolved = native.router.resolve_voice(None, "hi")
    assert resolved.voice_id == "kokoro:hi"
    utterance = native.synthesize(SynthesisRequest("नमस्ते, आप कैसे हैं?", language="hi"))
    pcm = np.concatenate([chunk.pcm async for chunk in utterance])
    assert utterance.result.engine == "kokoro" and pcm.size > 24_000
