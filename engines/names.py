"""Names shared by the voice library, the configuration and the router."""

from __future__ import annotations

from enum import StrEnum


class EngineName(StrEnum):
    """The engines this build ships, for code that names one of them. Which engines exist is
    the engine registry's to say (``engines.engine_registry``): an engine name is any ``str``
    it knows, and these members are equal to (and hash as) their plain strings."""

    PIPER = "piper"
    KOKORO = "kokoro"
    ESPEAK = "espeak-ng"
    SPEECHT5 = "speecht5"
    XTTS = "xtts"
    EDGE = "edge-tts"


class QualityTier(StrEnum):
    FAST = "fast"
    STANDARD = "standard"
    PREMIUM = "premium"


TIER_TTFA_BUDGET_MS: dict[QualityTier, float] = {
    QualityTier.FAST: 150.0,
    QualityTier.STANDARD: 250.0,
    QualityTier.PREMIUM: 400.0,
}


class SelectionStrategy(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"
    QUALITY_FIRST = "quality_first"
    SPEED_FIRST = "speed_first"


def primary_language(code: str) -> str:
    """``en-US`` / ``en_us`` / ``EN`` -> ``en``."""
    return code.strip().lower().replace("_", "-").split("-")[0]
