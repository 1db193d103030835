"""The voice library as reported to users: each voice, its engines, and what works now."""

from __future__ import annotations

from typing import Any

from .names import primary_language
from .synthesizer import SpeechSynthesizer


def voice_listing(synthesizer: SpeechSynthesizer, language: str | None = None) -> dict[str, Any]:
    """``{"voices": [...], "engines": [...], "languages": [...]}``, JSON-ready."""
    router = synthesizer.router
    voices: list[dict[str, Any]] = []
    for voice in synthesizer.catalog:
        if language and voice.language != primary_language(language):
            continue
        engines = router.availability(voice)
        voices.append(
            {
                "id": voice.id,
                "name": voice.name,
                "language": voice.language,
                "locale": voice.locale,
                "accent": voice.accent,
                "gender": voice.gender,
                "tier": voice.tier.value,
                "clone_capable": voice.clone_capable,
                "available": any(row["available"] for row in engines),
                "engines": engines,
            }
        )
    return {
        "voices": voices,
        "engines": synthesizer.registry.status(),
        "languages": sorted(router.known_languages()),
    }
