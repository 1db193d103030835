"""Measure how well each engine speaks each seed language, into the table the router reads.

Run from the repository root::

    .venv/bin/python -m tools.calibrate_voices [--out engines/voice_quality.json]
                                               [--languages es,fr] [--styles jf_alpha,jm_kumo]

For each (engine, voice, language) it synthesizes held sentences (never the test sentences),
hears them back with whisper base (the multilingual faster-whisper model from PyPI packages),
and scores them with DNSMOS. A row's ``score`` is DNSMOS OVRL times intelligibility
(1 - word error rate, 1 - character error rate for Japanese, floored at 0): an unintelligible
voice scores near 0 however clean it sounds. Engines measured: Piper (English, the joe voice),
Kokoro with each bundled voice style in Japanese, Spanish, French, Italian, Portuguese and
German, and espeak-ng in every seed language. Prints the table; writes it with ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from api.quality import QualityScorer
from engines import kokoro_engine
from engines.audio import float_to_pcm16
from engines.config import EngineThreads, WindowedSettings, load_config
from engines.espeak_engine import EspeakBackend
from engines.kokoro_engine import KokoroBackend
from engines.names import EngineName
from engines.piper_engine import PiperBackend
from engines.voices import Binding, EspeakBinding, KokoroBinding, PiperBinding, VoiceCatalog
from tools.benchkit.transcriber import Transcriber, character_error_rate, word_error_rate

REPO_ROOT = Path(__file__).resolve().parent.parent
SENTENCES = {
    "en": [
        "Please take a seat, the presentation will start in a few minutes.",
        "We moved the delivery to Friday because the warehouse was closed.",
    ],
    "es": [
        "Por favor, tome asiento, la presentación empezará en unos minutos.",
        "Movimos la entrega al viernes porque el almacén estaba cerrado.",
    ],
    "fr": [
        "Veuillez vous asseoir, la présentation commencera dans quelques minutes.",
        "Nous avons déplacé la livraison à vendredi car l'entrepôt était fermé.",
    ],
    "de": [
        "Bitte nehmen Sie Platz, die Präsentation beginnt in wenigen Minuten.",
        "Wir haben die Lieferung auf Freitag verschoben, weil das Lager geschlossen war.",
    ],
    "it": [
        "Prego, si accomodi, la presentazione inizierà tra pochi minuti.",
        "Abbiamo spostato la consegna a venerdì perché il magazzino era chiuso.",
    ],
    "pt": [
        "Por favor, sente-se, a apresentação vai começar em poucos minutos.",
        "Mudamos a entrega para sexta-feira porque o armazém estava fechado.",
    ],
    "ja": [
        "どうぞお座りください。発表は数分後に始まります。",
        "倉庫が閉まっていたので、配達を金曜日に変更しました。",
    ],
}
GERMAN_ESPEAK = "de"
"""German is not among Kokoro's training languages; it is measured through espeak-ng's German
IPA like the others."""


@dataclass(frozen=True)
class Row:
    engine: str
    language: str
    voice: str
    wer: float
    dnsmos: float
    score: float


def score(dnsmos: float, error_rate: float) -> float:
    return round(dnsmos * max(0.0, 1.0 - error_rate), 3)


def error_rate(language: str, reference: str, heard: str) -> float:
    if language == "ja":
        return float(character_error_rate(reference, heard))
    return float(word_error_rate(reference, heard))


def render(backend: Any, binding: Binding, language: str, text: str) -> tuple[np.ndarray, int]:
    tts = backend.create_voice(binding, language=language, speed=1.0)
    audio = np.concatenate(list(tts.render(text)))
    return float_to_pcm16(audio), int(tts.sample_rate)


def measure(
    engine: EngineName,
    backend: Any,
    binding: Binding,
    voice: str,
    language: str,
    listen: Any,
    scorer: QualityScorer,
) -> Row:
    rates: list[float] = []
    moses: list[float] = []
    for text in SENTENCES[language]:
        pcm, rate = render(backend, binding, language, text)
        rates.append(error_rate(language, text, listen.transcribe(pcm, rate, language)))
        moses.append(float(scorer.score(pcm, rate).overall))
    wer, mos = statistics.mean(rates), statistics.mean(moses)
    return Row(engine.value, language, voice, round(wer, 3), round(mos, 3), score(mos, wer))


def espeak_voice(catalog: VoiceCatalog, language: str) -> EspeakBinding:
    for voice in catalog.for_language(language):
        binding = voice.engines.get(EngineName.ESPEAK)
        if isinstance(binding, EspeakBinding):
            return binding
    return EspeakBinding(voice=language)


def rows(languages: Sequence[str], styles: Sequence[str] | None) -> Iterator[Row]:
    config = load_config(REPO_ROOT / "config.yaml")
    catalog = VoiceCatalog.load(config.voices_file)
    listen, scorer = Transcriber(), QualityScorer()
    piper = PiperBackend(config.models_dir, WindowedSettings(workers=1, intra_op_threads=2))
    kokoro = KokoroBackend(
        config.models_dir / ".cache",
        EngineThreads(intra_op_threads=2),
        config.models_dir / kokoro_engine.PACK_DIR,
    )
    espeak = EspeakBackend()
    for backend in (piper, kokoro, espeak):
        backend.load()
    if piper.ready:  # every library voice whose Piper model is installed, in its language
        for voice in catalog:
            model = voice.engines.get(EngineName.PIPER)
            if (
                voice.language in languages
                and isinstance(model, PiperBinding)
                and piper.can_render(model)
            ):
                yield measure(
                    EngineName.PIPER, piper, model, model.model, voice.language, listen, scorer
                )
    kokoro_languages = [
        lang for lang in languages if lang in kokoro.languages() or lang == GERMAN_ESPEAK
    ]
    if kokoro.ready:
        kokoro_engine.ESPEAK_LANGUAGES.setdefault(GERMAN_ESPEAK, GERMAN_ESPEAK)
        for language in kokoro_languages:
            # the bundled Japanese styles, and the published voices of the language if fetched
            own = ("ja", language)
            names = [n for n in kokoro.voice_names() if kokoro_engine.voice_language(n) in own]
            for style in styles or names:
                binding = KokoroBinding(voice=style)
                yield measure(EngineName.KOKORO, kokoro, binding, style, language, listen, scorer)
        kokoro_engine.ESPEAK_LANGUAGES.pop(GERMAN_ESPEAK, None)
    for language in languages:
        formant = espeak_voice(catalog, language)
        label = formant.voice + (f"+{formant.variant}" if formant.variant else "")
        yield measure(EngineName.ESPEAK, espeak, formant, label, language, listen, scorer)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the table here")
    parser.add_argument("--languages", default=",".join(SENTENCES))
    parser.add_argument("--styles", default=None, help="Kokoro styles (default: every one)")
    args = parser.parse_args(argv)
    languages = [lang.strip() for lang in args.languages.split(",") if lang.strip()]
    styles = args.styles.split(",") if args.styles else None
    table: list[Row] = []
    print(f"{'engine':10} {'lang':4} {'voice':16} {'WER/CER':>7} {'DNSMOS':>6} {'score':>6}")
    for row in rows(languages, styles):
        table.append(row)
        print(
            f"{row.engine:10} {row.language:4} {row.voice:16} {row.wer:7.3f} {row.dnsmos:6.2f} "
            f"{row.score:6.2f}",
            flush=True,
        )
    if args.out is not None:
        document = {
            "measured": datetime.date.today().isoformat(),
            "how": "python -m tools.calibrate_voices: whisper base WER (CER for ja) and DNSMOS "
            "OVRL over held sentences; score = DNSMOS x (1 - error rate)",
            "rows": [asdict(row) for row in table],
        }
        args.out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
