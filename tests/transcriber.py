"""Speech recognition for checking what the service said: ``tools/benchkit/transcriber.py``,
shared with the tools."""

from __future__ import annotations

from tools.benchkit.transcriber import (
    CACHE_DIR,
    WHISPER_SAMPLE_RATE,
    Transcriber,
    character_error_rate,
    english_model_dir,
    multilingual_model_dir,
    word_error_rate,
)

__all__ = [
    "CACHE_DIR",
    "character_error_rate",
    "english_model_dir",
    "multilingual_model_dir",
    "Transcriber",
    "WHISPER_SAMPLE_RATE",
    "word_error_rate",
]
