"""How well each engine speaks each language with each voice, as measured, for the router.

``voice_quality.json`` beside this module is written by ``tools/calibrate_voices.py``: per
(engine, language, voice) the whisper word error rate (character error rate for Japanese),
DNSMOS OVRL and ``score`` = DNSMOS x (1 - error rate). The router ranks engines for a voice by
that score, so an engine that sounds clean but is not understood in a language ranks low in it.
A pair the table does not list falls back to the engine's own prior (``EngineProfile``); a
missing or unreadable table is reported once and every engine falls back.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .names import primary_language
from .voices import Binding

logger = logging.getLogger(__name__)

QUALITY_FILE = Path(__file__).with_name("voice_quality.json")


def voice_key(binding: Binding) -> str:
    """How the table names a binding's voice (``VoiceBinding.quality_key``): a Piper model, a
    Kokoro style, an espeak-ng voice with its variant; other engines by their binding's fields."""
    return binding.quality_key()


@dataclass(frozen=True)
class Measured:
    error_rate: float
    dnsmos: float
    score: float


@dataclass(frozen=True)
class QualityTable:
    rows: dict[tuple[str, str, str], Measured] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = QUALITY_FILE) -> QualityTable:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            rows = {
                (str(row["engine"]), str(row["language"]), str(row["voice"])): Measured(
                    float(row["wer"]), float(row["dnsmos"]), float(row["score"])
                )
                for row in document["rows"]
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("no measured voice quality (%s): engines rank by their priors", exc)
            return cls()
        return cls(rows)

    def measured(self, engine: str, language: str, binding: Binding) -> Measured | None:
        return self.rows.get((str(engine), primary_language(language), voice_key(binding)))

    def languages(self, engine: str) -> set[str]:
        return {language for name, language, _ in self.rows if name == engine}
