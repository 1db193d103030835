"""Adding an engine is adding one file: a module written here, and nothing else edited, makes an
engine that is listed, configurable, bindable and routable, and that speaks."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import yaml

from api.openapi import openapi_spec
from engines.config import ServiceConfig, load_config
from engines.engine_registry import engine_names, quality_first_order, unregister
from engines.names import EngineName, SelectionStrategy
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest, build_backends
from engines.validation import ConfigError
from engines.voice_listing import voice_listing
from engines.voices import VoiceCatalog

HUM = "hum-tts"
HUM_MODULE = "hum_engine"
PITCH_HZ = 220.0
PITCH_TOLERANCE_HZ = 5.0
HUM_VOICE = "en-us-hum"

HUM_ENGINE_SOURCE = '''
"""A throwaway engine: a hum at the voice's pitch, a hundredth of a second per character."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engines.audio import FloatAudio
from engines.backend import EngineProfile, LocalBackend
from engines.config import ServiceConfig
from engines.deadline_executor import DeadlineExecutor
from engines.engine_registry import EngineSpec, SettingsSection, register
from engines.local_tts import LocalTTS
from engines.names import QualityTier
from engines.voices import Binding, VoiceBinding

SAMPLE_RATE_HZ = 16_000
MIN_SECONDS = 0.2


class HumBinding(VoiceBinding):
    pitch_hz: float = Field(gt=0, le=2000)


class HumSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: int = Field(default=1, ge=1, le=8)
    seconds_per_char: float = Field(default=0.01, gt=0)


class HumBackend(LocalBackend):
    name = "hum-tts"
    profile = EngineProfile(
        quality_mos=4.5, typical_ttfa_ms=1.0, tier=QualityTier.PREMIUM, description="a hum"
    )

    def __init__(self, settings: HumSettings) -> None:
        super().__init__()
        self.settings = settings
        self._executor = DeadlineExecutor(settings.workers, thread_name_prefix="hum")

    def _load(self) -> None:
        pass

    def languages(self) -> frozenset[str]:
        return frozenset({"en"})

    def can_render(self, binding: Binding) -> bool:
        return isinstance(binding, HumBinding)

    def create_tts(
        self, binding: Binding, *, speed: float, latency_critical: bool = False
    ) -> HumTTS:
        assert isinstance(binding, HumBinding)
        return HumTTS(self, binding.pitch_hz)

    def warm_up(self) -> None:
        for _ in self.create_tts(HumBinding(pitch_hz=100.0), speed=1.0).render("hm"):
            pass

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class HumTTS(LocalTTS):
    def __init__(self, backend: HumBackend, pitch_hz: float) -> None:
        super().__init__(
            engine=backend.name, sample_rate=SAMPLE_RATE_HZ, executor=backend.pool, language="en"
        )
        self._pitch_hz = pitch_hz
        self._seconds_per_char = backend.settings.seconds_per_char

    def _render(self, text: str, stop: threading.Event) -> Iterator[FloatAudio]:
        seconds = max(MIN_SECONDS, len(text) * self._seconds_per_char)
        t = np.arange(int(SAMPLE_RATE_HZ * seconds)) / SAMPLE_RATE_HZ
        yield (0.3 * np.sin(2 * np.pi * self._pitch_hz * t)).astype(np.float32)


SETTINGS = SettingsSection("hum-tts", HumSettings())


def build_backend(config: ServiceConfig, *, deterministic: bool) -> HumBackend:
    return HumBackend(config.engines.section(SETTINGS))


SPEC = EngineSpec(
    name=HumBackend.name,
    binding=HumBinding,
    tier=QualityTier.PREMIUM,
    quality_rank=5.0,
    build=build_backend,
    settings=SETTINGS,
)
register(SPEC)
'''


@pytest.fixture
def hum_engine(tmp_path: Path) -> Iterator[ModuleType]:
    """The throwaway engine, imported from a file in ``tmp_path``; gone again afterwards."""
    (tmp_path / f"{HUM_MODULE}.py").write_text(textwrap.dedent(HUM_ENGINE_SOURCE), "utf-8")
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(HUM_MODULE)
    finally:
        unregister(HUM)
        sys.modules.pop(HUM_MODULE, None)
        sys.path.remove(str(tmp_path))


def write_yaml(path: Path, document: object) -> Path:
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


def hum_voices(tmp_path: Path, hum_binding: object) -> Path:
    """A library of one English voice, bound to the hum, Piper and espeak-ng."""
    voice = {
        "id": HUM_VOICE,
        "name": "Hum",
        "language": "en",
        "locale": "en-US",
        "accent": "none",
        "gender": "neutral",
        "tier": "premium",
        "engines": {
            HUM: hum_binding,
            "piper": {"model": "en_US-joe-medium"},
            "espeak-ng": {"voice": "en-us"},
        },
    }
    return write_yaml(
        tmp_path / "voices.yaml", {"default_voice": {"en": HUM_VOICE}, "voices": [voice]}
    )


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in caught.value.message
    return caught.value.message


def test_a_new_engine_is_listed_and_ranked_by_its_declared_order(hum_engine: ModuleType) -> None:
    assert engine_names()[-1] == HUM  # after the shipped engines, which keep their order
    assert engine_names()[: len(EngineName)] == list(EngineName)
    assert quality_first_order()[:2] == [HUM, EngineName.XTTS]
    schemas = openapi_spec()["components"]["schemas"]
    assert HUM in schemas["EngineName"]["enum"]
    assert schemas["SynthesisRequest"]["properties"]["engine"] == {
        "$ref": "#/components/schemas/EngineName"
    }


def test_a_new_engine_has_its_own_config_section(hum_engine: ModuleType, tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "config.yaml",
        {
            "engines": {
                HUM: {"workers": 3},
                "default_engine": HUM,
                "auto_selection": {"fallback_chain": [HUM, "piper"]},
            }
        },
    )
    config = load_config(path)
    assert config.engines.section(hum_engine.SETTINGS).workers == 3
    assert config.engines.default_engine == HUM
    assert config.engines.auto_selection.fallback_chain == (HUM, EngineName.PIPER)
    defaults = ServiceConfig().engines.section(hum_engine.SETTINGS)
    assert defaults == hum_engine.HumSettings()

    message = config_error(write_yaml(path, {"engines": {HUM: {"workers": 0}}}))
    assert f"'engines.{HUM}.workers'" in message and "greater than or equal to 1" in message
    message = config_error(write_yaml(path, {"engines": {HUM: {"volume": 11}}}))
    assert f"'engines.{HUM}.volume'" in message and "not permitted" in message
    message = config_error(write_yaml(path, {"disabled_engines": ["festival"]}))
    assert "'disabled_engines.0'" in message
    assert all(name in message for name in [HUM, *EngineName])


def test_a_voice_binds_to_a_new_engine(hum_engine: ModuleType, tmp_path: Path) -> None:
    catalog = VoiceCatalog.load(hum_voices(tmp_path, {"pitch_hz": PITCH_HZ}))
    voice = catalog.get(HUM_VOICE)
    assert voice.engines.get(HUM) == hum_engine.HumBinding(pitch_hz=PITCH_HZ)
    assert voice.engines.engines() == [EngineName.PIPER, EngineName.ESPEAK, HUM]
    with pytest.raises(ConfigError) as caught:
        VoiceCatalog.load(hum_voices(tmp_path, {"pitch_hz": -1}))
    assert f"'{HUM_VOICE}'" in caught.value.message
    assert f"'engines.{HUM}.pitch_hz'" in caught.value.message


async def test_a_new_engine_is_routed_to_and_speaks(
    hum_engine: ModuleType, service_config: ServiceConfig, tmp_path: Path
) -> None:
    shipped_but_piper_and_espeak = [
        name for name in EngineName if name not in (EngineName.PIPER, EngineName.ESPEAK)
    ]
    config = service_config.model_copy(update={"disabled_engines": shipped_but_piper_and_espeak})
    catalog = VoiceCatalog.load(hum_voices(tmp_path, {"pitch_hz": PITCH_HZ}))
    synth = SpeechSynthesizer(config, catalog, build_backends(config, deterministic=True))
    await synth.start()
    try:
        assert synth.registry.backend(HUM) is not None
        rows = {row["engine"]: row for row in voice_listing(synth)["engines"]}
        assert rows[HUM]["available"] and rows[HUM]["tier"] == "premium"

        resolved = synth.router.resolve_voice(HUM_VOICE, None)
        quality_first = synth.router.plan(resolved, strategy=SelectionStrategy.QUALITY_FIRST)
        assert [c.engine for c in quality_first] == [HUM, EngineName.PIPER, EngineName.ESPEAK]
        asked = synth.router.plan(resolved, engine=EngineName.PIPER)
        assert asked[0].engine == EngineName.PIPER

        request = SynthesisRequest(text="Hello there.", voice_id=HUM_VOICE, engine=HUM)
        utterance = synth.synthesize(request)
        chunks = [chunk async for chunk in utterance]
    finally:
        await synth.aclose()
    assert utterance.result.engines == [HUM]
    audio = np.concatenate([np.asarray(chunk.pcm, dtype=np.float32) for chunk in chunks])
    rate = chunks[0].sample_rate
    spectrum = np.abs(np.fft.rfft(audio))
    peak_hz = float(np.fft.rfftfreq(audio.size, 1 / rate)[int(np.argmax(spectrum))])
    assert abs(peak_hz - PITCH_HZ) < PITCH_TOLERANCE_HZ


def test_an_unregistered_engine_is_forgotten(tmp_path: Path) -> None:
    assert HUM not in engine_names()
    message = config_error(write_yaml(tmp_path / "config.yaml", {"engines": {HUM: {}}}))
    assert f"'engines.{HUM}'" in message and "not permitted" in message
