"""Every seed language is spoken by its default route and heard back by whisper base; the route
follows the measured quality table (``engines/voice_quality.json``), and an accented voice says
so in ``/voices``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.names import EngineName
from engines.router import EngineRouter
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest
from engines.voice_listing import voice_listing
from engines.voice_quality import QUALITY_FILE, Measured, QualityTable
from engines.voices import KokoroBinding
from tests.transcriber import Transcriber, character_error_rate, word_error_rate

ON_THE_SESSION_LOOP = pytest.mark.asyncio(loop_scope="session")

# held text: not the calibration sentences the table was measured on
SPOKEN = {
    "en": ("The train to the airport leaves from platform four every hour.", 0.2),
    "es": ("El tren al aeropuerto sale del andén cuatro cada hora.", 0.2),
    "it": ("Il treno per l'aeroporto parte dal binario quattro ogni ora.", 0.2),
    "fr": ("Le train pour l'aéroport part du quai quatre toutes les heures.", 0.35),
    "pt": ("O trem para o aeroporto sai da plataforma quatro a cada hora.", 0.35),
    "ja": ("お客様のご注文は明日の午前中にお届けします。", 0.15),
}
GERMAN = "Der Zug zum Flughafen fährt jede Stunde von Gleis vier ab."
NEURAL_ROUTE = {"en": "piper", "es": "kokoro", "it": "kokoro", "fr": "kokoro", "pt": "kokoro"}


async def spoken(
    synthesizer: SpeechSynthesizer, transcriber: Transcriber, text: str, language: str
) -> tuple[str, str]:
    utterance = synthesizer.synthesize(SynthesisRequest(text, language=language))
    pcm = np.concatenate([chunk.pcm async for chunk in utterance])
    engine = utterance.result.engine
    assert engine is not None and pcm.size
    return engine, transcriber.transcribe(pcm, 48_000, language)


FRENCH_GAP = pytest.mark.xfail(
    strict=True,
    reason="French with Kokoro's bundled Japanese styles: whisper base WER 0.55 over three "
    "sentences for every style and blend tried (espeak-ng: 0.88); 0.35 needs Kokoro's French "
    "voice (its published pack, not fetched here)",
)


@ON_THE_SESSION_LOOP
@pytest.mark.parametrize(
    "language", [pytest.param(lang, marks=FRENCH_GAP) if lang == "fr" else lang for lang in SPOKEN]
)
async def test_each_seed_language_is_heard_back(
    synthesizer: SpeechSynthesizer, transcriber: Transcriber, language: str
) -> None:
    text, most = SPOKEN[language]
    engine, heard = await spoken(synthesizer, transcriber, text, language)
    if language in NEURAL_ROUTE:
        assert engine == NEURAL_ROUTE[language], engine  # a neural voice, not espeak-ng
    rate = character_error_rate if language == "ja" else word_error_rate
    assert rate(text, heard) <= most, heard


@ON_THE_SESSION_LOOP
async def test_german_is_spoken_and_its_figure_recorded(
    synthesizer: SpeechSynthesizer, transcriber: Transcriber
) -> None:
    """Best effort: no neural German voice runs offline here; the route and what whisper heard
    are printed (``-s``) for the record."""
    engine, heard = await spoken(synthesizer, transcriber, GERMAN, "de")
    print(f"\nGerman by {engine}: WER {word_error_rate(GERMAN, heard):.2f} heard {heard!r}")
    assert heard


def test_an_accented_voice_says_which_engine_and_style_speak_it(
    synthesizer: SpeechSynthesizer,
) -> None:
    listing = voice_listing(synthesizer, "es")
    for voice in listing["voices"]:
        kokoro = next(row for row in voice["engines"] if row["engine"] == "kokoro")
        assert kokoro["available"]
        assert kokoro["label"].startswith("Kokoro, Japanese voice style ")
        assert kokoro["label"].endswith(", accented")
        assert kokoro["measured"]["score"] > 0
    japanese = voice_listing(synthesizer, "ja")["voices"][0]
    assert next(r for r in japanese["engines"] if r["engine"] == "kokoro")["label"] is None


def test_the_shipped_table_is_loaded() -> None:
    table = QualityTable.load()
    assert {"es", "fr", "it", "pt", "ja"} <= table.languages(EngineName.KOKORO)
    assert {"en", "es", "fr", "de", "it", "pt", "ja"} <= table.languages(EngineName.ESPEAK)
    assert QUALITY_FILE.is_file()


def test_a_missing_table_or_entry_falls_back_to_the_engines_priors(
    synthesizer: SpeechSynthesizer, tmp_path: Path
) -> None:
    assert QualityTable.load(tmp_path / "missing.json").rows == {}
    router = synthesizer.router
    resolved = router.resolve_voice("es-mx-female-premium", None)
    bare = EngineRouter(
        synthesizer.config.engines, synthesizer.catalog, synthesizer.registry, QualityTable()
    )
    plan = bare.plan(resolved)
    assert plan[-1].engine is EngineName.ESPEAK  # still last
    kokoro = next(c for c in plan if c.engine is EngineName.KOKORO)
    prior = synthesizer.registry.profile(EngineName.KOKORO).quality_mos
    assert bare.quality_of(resolved, kokoro) == prior


def test_the_route_follows_the_measured_scores(synthesizer: SpeechSynthesizer) -> None:
    """Kokoro measured as intelligible in Spanish goes first; measured as unintelligible, it
    goes below the threshold, after every engine at or above it; espeak-ng stays last."""
    resolved = synthesizer.router.resolve_voice("es-mx-female-premium", None)
    binding = resolved.voice.engines.get(EngineName.KOKORO) if resolved.voice else None
    assert isinstance(binding, KokoroBinding) and binding.bundled is not None
    spoken = binding.bundled  # the published voice is not fetched here: the style speaks
    selection = synthesizer.config.engines
    threshold = selection.auto_selection.quality_threshold
    plans = {}
    for score in (threshold + 0.5, threshold - 2.0):
        table = QualityTable({("kokoro", "es", spoken): Measured(0.1, 3.4, score)})
        router = EngineRouter(selection, synthesizer.catalog, synthesizer.registry, table)
        plan = router.plan(resolved)
        assert plan[-1].engine is EngineName.ESPEAK
        kokoro = next(c for c in plan if c.engine is EngineName.KOKORO)
        assert router.quality_of(resolved, kokoro) == score
        plans[score] = [c.engine for c in plan]
        if score < threshold:  # every engine above the threshold is tried first
            ahead = plans[score][: plans[score].index(EngineName.KOKORO)]
            for engine in plans[score][plans[score].index(EngineName.KOKORO) + 1 : -1]:
                assert engine not in ahead
                assert synthesizer.registry.profile(engine).quality_mos < threshold
    good, bad = plans[threshold + 0.5], plans[threshold - 2.0]
    assert good.index(EngineName.KOKORO) <= bad.index(EngineName.KOKORO)
