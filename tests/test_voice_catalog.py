"""voices.yaml holds the seed's voices; a mistake in it names the file, the voice and the key."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from engines.errors import UnknownVoiceError
from engines.names import EngineName, QualityTier
from engines.validation import ConfigError
from engines.voices import EspeakBinding, PiperBinding, VoiceCatalog

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED = REPO_ROOT / "voices.yaml"

SEED_VOICES = {
    "Sarah": ("en", "female"),
    "David": ("en", "male"),
    "Sofía": ("es", "female"),
    "Carlos": ("es", "male"),
    "Léa": ("fr", "female"),
    "Antoine": ("fr", "male"),
    "Anna": ("de", "female"),
    "Hans": ("de", "male"),
    "Giulia": ("it", "female"),
    "Marco": ("it", "male"),
    "Ana": ("pt", "female"),
    "João": ("pt", "male"),
    "Yuki": ("ja", "female"),
    "Hiroshi": ("ja", "male"),
}
ID_STYLE = r"^[a-z]{2}-[a-z]{2}-(female|male)-(fast|standard|premium)$"


@pytest.fixture(scope="module")
def shipped() -> VoiceCatalog:
    return VoiceCatalog.load(SHIPPED)


@pytest.fixture(scope="module")
def shipped_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    return document


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "voices.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        VoiceCatalog.load(path)
    message = caught.value.message
    assert str(path) in message
    return message


# --- the shipped library ----------------------------------------------------------------------


def test_shipped_library_has_exactly_the_seed_voices(shipped: VoiceCatalog) -> None:
    assert len(shipped) == 14
    assert {voice.name: (voice.language, voice.gender) for voice in shipped} == SEED_VOICES


def test_shipped_library_covers_the_seven_seed_languages(shipped: VoiceCatalog) -> None:
    assert shipped.languages() == {"en", "es", "fr", "de", "it", "pt", "ja"}
    for language in shipped.languages():
        genders = sorted(voice.gender for voice in shipped.for_language(language))
        assert genders == ["female", "male"], language


def test_voice_ids_follow_the_language_locale_gender_tier_style(shipped: VoiceCatalog) -> None:
    for voice in shipped:
        language, region, gender, tier = voice.id.split("-")
        assert language == voice.language
        assert f"{language}-{region.upper()}" == voice.locale
        assert gender == voice.gender
        assert tier == voice.tier.value
    assert {voice.id for voice in shipped} >= {"en-us-female-premium", "ja-jp-male-premium"}


def test_voice_ids_match_the_documented_pattern(shipped: VoiceCatalog) -> None:
    assert all(re.fullmatch(ID_STYLE, voice.id) for voice in shipped)


def test_every_shipped_voice_can_fall_back_to_espeak(shipped: VoiceCatalog) -> None:
    for voice in shipped:
        binding = voice.engines.get(EngineName.ESPEAK)
        assert isinstance(binding, EspeakBinding), voice.id
        assert binding.voice
        assert EngineName.ESPEAK in voice.engines.engines()


def test_bindings_are_read_into_their_engine_types(shipped: VoiceCatalog) -> None:
    david = shipped.get("en-us-male-premium")
    assert david.name == "David"
    assert david.tier is QualityTier.PREMIUM
    piper = david.engines.get(EngineName.PIPER)
    assert isinstance(piper, PiperBinding)
    assert piper.model == "en_US-joe-medium"
    espeak = david.engines.get(EngineName.ESPEAK)
    assert isinstance(espeak, EspeakBinding)
    assert (espeak.voice, espeak.variant) == ("en-us", "m3")
    yuki = shipped.get("ja-jp-female-premium")
    assert EngineName.KOKORO in yuki.engines.engines()
    assert yuki.engines.get(EngineName.PIPER) is None


def test_every_language_has_a_default_voice_that_speaks_it(
    shipped: VoiceCatalog, shipped_document: dict[str, Any]
) -> None:
    defaults: dict[str, str] = shipped_document["default_voice"]
    assert set(defaults) == shipped.languages()
    for language, voice_id in defaults.items():
        assert shipped.get(voice_id).language == language


def test_for_language_puts_the_default_voice_first(
    shipped: VoiceCatalog, shipped_document: dict[str, Any]
) -> None:
    for language, voice_id in shipped_document["default_voice"].items():
        voices = shipped.for_language(language)
        assert voices[0].id == voice_id
        assert {v.language for v in voices} == {language}
    assert shipped.for_language("en")[0].id == "en-us-male-premium"


@pytest.mark.parametrize("code", ["en-US", "EN", "en_us", " en-gb "])
def test_for_language_accepts_locales_and_any_case(shipped: VoiceCatalog, code: str) -> None:
    assert [v.id for v in shipped.for_language(code)] == [v.id for v in shipped.for_language("en")]


def test_for_language_of_an_unknown_language_is_empty(shipped: VoiceCatalog) -> None:
    assert shipped.for_language("xx") == []


def test_unknown_voice_id_is_an_error_listing_the_known_ids(shipped: VoiceCatalog) -> None:
    with pytest.raises(UnknownVoiceError) as caught:
        shipped.get("en-gb-robot")
    error = caught.value
    assert error.voice_id == "en-gb-robot"
    assert error.code == "unknown_voice"
    assert error.http_status == 404
    assert "en-gb-robot" in error.message
    for voice in shipped:
        assert voice.id in error.message


# --- broken files -----------------------------------------------------------------------------


def test_a_copy_of_the_shipped_document_loads(
    tmp_path: Path, shipped_document: dict[str, Any]
) -> None:
    catalog = VoiceCatalog.load(write(tmp_path, shipped_document))
    assert len(catalog) == 14


def _broken(
    document: dict[str, Any], voice_index: int = 2
) -> tuple[dict[str, Any], dict[str, Any]]:
    broken = copy.deepcopy(document)
    voice: dict[str, Any] = broken["voices"][voice_index]
    return broken, voice


def test_missing_key_names_the_voice_and_the_key(
    tmp_path: Path, shipped_document: dict[str, Any]
) -> None:
    document, voice = _broken(shipped_document)
    del voice["gender"]
    message = load_error(write(tmp_path, document))
    assert "'es-mx-female-premium'" in message
    assert "'gender'" in message
    assert "required" in message.lower()


def test_missing_id_names_the_voice_by_position(
    tmp_path: Path, shipped_document: dict[str, Any]
) -> None:
    document, voice = _broken(shipped_document)
    del voice["id"]
    message = load_error(write(tmp_path, document))
    assert "#3" in message
    assert "'id'" in message


def test_bad_gender_names_the_voice_the_key_and_the_allowed_values(
    tmp_path: Path, shipped_document: dict[str, Any]
) -> None:
    document, voice = _broken(shipped_document)
    voice["gender"] = "robot"
    message = load_error(write(tmp_path, document))
    assert "'es-mx-female-premium'" in message
    assert "'gender'" in message
    for allowed in ("female", "male", "neutral"):
        assert allowed in message


def test_bad_tier_names_the_allowed_tiers(tmp_path: Path, shipped_document: dict[str, Any]) -> None:
    document, voice = _broken(shipped_document)
    voice["tier"] = "ultra"
    message = load_error(write(tmp_path, document))
    assert "'tier'" in message
    for tier in QualityTier:
        assert tier.value in message


def test_unknown_engine_key_names_the_voice_and_the_engine(
    tmp_path: Path, shipped_document: dict[str, Any]
) -> None:
    document, voice = _broken(shipped_document)
    voice["engines"]["festival"] = {"voice": "kal"}
    message = load_error(write(tmp_path, document))
    assert "'es-mx-female-premium'" in message
    assert "'engines.festival'" in message


def test_bad_binding_names_the_engine_and_its_key(
    tmp_path: Path, shipped_document: dict[str, Any]
) -> None:
    document, voice = _broken(shipped_document, voice_index=0)
    voice["engines"]["piper"] = {"speaker": 1}
    message = load_error(write(tmp_path, document))
    assert "'en-us-female-premium'" in message
    assert "'engines.piper.model'" in message


def test_badly_formed_id_is_refused(tmp_path: Path, shipped_document: dict[str, Any]) -> None:
    document, voice = _broken(shipped_document)
    voice["id"] = "Sofia MX"
    message = load_error(write(tmp_path, document))
    assert "'Sofia MX'" in message
    assert "'id'" in message


def test_duplicate_id_names_the_voice(tmp_path: Path, shipped_document: dict[str, Any]) -> None:
    document, voice = _broken(shipped_document, voice_index=3)
    voice["id"] = "es-mx-female-premium"
    message = load_error(write(tmp_path, document))
    assert "'es-mx-female-premium'" in message
    assert "'id'" in message
    assert "twice" in message


def test_default_voice_naming_an_unknown_voice_names_the_key(
    tmp_path: Path, shipped_document: dict[str, Any]
) -> None:
    document = copy.deepcopy(shipped_document)
    document["default_voice"]["en"] = "en-gb-nobody"
    message = load_error(write(tmp_path, document))
    assert "'default_voice.en'" in message
    assert "'en-gb-nobody'" in message


def test_default_voice_of_another_language_is_refused(
    tmp_path: Path, shipped_document: dict[str, Any]
) -> None:
    """A French voice cannot be the English default: for_language('en') would silently ignore
    it and put whichever English voice comes first in the file."""
    document = copy.deepcopy(shipped_document)
    document["default_voice"]["en"] = "fr-fr-female-premium"
    message = load_error(write(tmp_path, document))
    assert "'default_voice.en'" in message
    assert "'fr-fr-female-premium'" in message


def test_a_voice_with_no_engine_is_refused(
    tmp_path: Path, shipped_document: dict[str, Any]
) -> None:
    """A voice no engine can render can never be spoken; the file should say so at load."""
    document, voice = _broken(shipped_document)
    voice["engines"] = {}
    message = load_error(write(tmp_path, document))
    assert "'es-mx-female-premium'" in message
    assert "'engines'" in message


def test_unknown_top_level_key_is_refused(tmp_path: Path, shipped_document: dict[str, Any]) -> None:
    document = copy.deepcopy(shipped_document)
    document["voice"] = []
    message = load_error(write(tmp_path, document))
    assert "'voice'" in message


def test_missing_voices_list_is_refused(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, {"default_voice": {}}))
    assert "'voices'" in message


@pytest.mark.parametrize("body", ["voices: [\n", "voices:\n  - id: a\n bad: indent\n", "\t- x\n"])
def test_text_that_is_not_yaml_is_refused(tmp_path: Path, body: str) -> None:
    path = tmp_path / "voices.yaml"
    path.write_text(body, encoding="utf-8")
    message = load_error(path)
    assert "not valid YAML" in message


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    message = load_error(tmp_path / "absent.yaml")
    assert "cannot read" in message
