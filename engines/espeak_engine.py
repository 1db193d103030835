"""espeak-ng through ``espeakng-loader``: formant synthesis for 100+ languages, no weights.

The last resort: it can always say something, in basic quality. libespeak-ng keeps global
state, so every call goes through one thread and one lock.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .audio import FloatAudio, pcm16_to_float
from .backend import EngineNotInstalled, EngineProfile, LocalBackend
from .config import ServiceConfig
from .deadline_executor import DeadlineExecutor
from .engine_registry import EngineSpec
from .local_tts import LocalTTS
from .names import EngineName, QualityTier, primary_language
from .voices import Binding, EspeakBinding

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_BUFFER_MS = 20
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
DEFAULT_RATE_WPM = 175
MIN_RATE_WPM, MAX_RATE_WPM = 80, 450

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclass(frozen=True)
class _Options:
    voice: str
    rate_wpm: int


def espeak_voice_names(data_dir: Path) -> frozenset[str]:
    """Lower-cased voice identifiers (``en-us``, ``es-419``, ``ja``...) in the data dir."""
    return frozenset(p.name.lower() for p in (data_dir / "lang").rglob("*") if p.is_file())


class _EspeakLibrary:
    """The process's one libespeak-ng: initialized once, one callback, one lock.

    The library keeps a single global synthesis callback, so every backend in the process must
    share this object; a second initialization would replace the callback and leave the first
    backend's audio going nowhere (or to freed memory)."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:
            raise EngineNotInstalled("espeakng-loader is not installed") from exc
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        data_dir = espeakng_loader.get_data_path()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_dir.encode(), 0)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({rate})")
        self.sample_rate: int = rate
        self.voices = espeak_voice_names(Path(data_dir))
        self.lock = threading.Lock()
        self._sink: list[np.ndarray] = []
        self._abort = threading.Event()
        self._callback = _SynthCallback(self._on_audio)  # referenced for the process's lifetime
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib

    def _on_audio(self, wav: Any, count: int, _events: Any) -> int:
        if count > 0 and wav:
            self._sink.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 1 if self._abort.is_set() else 0

    def synthesize(self, text: str, options: _Options, stop: threading.Event) -> FloatAudio:
        encoded = text.encode("utf-8") + b"\0"
        with self.lock:
            self._sink = []
            self._abort = stop
            if self._lib.espeak_SetVoiceByName(options.voice.encode()) != 0:
                raise RuntimeError(f"espeak-ng has no voice {options.voice!r}")
            self._lib.espeak_SetParameter(_PARAM_RATE, options.rate_wpm, 0)
            status = self._lib.espeak_Synth(
                encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            chunks, self._sink = self._sink, []
        if status != 0 and not stop.is_set():
            raise RuntimeError(f"espeak_Synth failed ({status})")
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return pcm16_to_float(np.concatenate(chunks))


_LIBRARY: _EspeakLibrary | None = None
_LIBRARY_LOCK = threading.Lock()


def _espeak_library() -> _EspeakLibrary:
    global _LIBRARY
    with _LIBRARY_LOCK:
        if _LIBRARY is None:
            _LIBRARY = _EspeakLibrary()
        return _LIBRARY


_LANGUAGE_ALIASES = {"zh": "cmn", "zh-cn": "cmn", "zh-tw": "cmn", "zh-hk": "yue"}
"""ISO 639-1 codes that espeak-ng names by their ISO 639-3 language (Mandarin, Cantonese)."""


class EspeakBackend(LocalBackend):
    name = EngineName.ESPEAK
    profile = EngineProfile(
        quality_mos=2.8,
        typical_ttfa_ms=5.0,
        tier=QualityTier.FAST,
        description="espeak-ng formant synthesis: robotic but intelligible, 100+ languages; "
        "the last resort",
    )
    install_hint = "pip install espeakng-loader"

    def __init__(self) -> None:
        super().__init__()
        self._executor = DeadlineExecutor(1, thread_name_prefix="espeak")
        self._library: _EspeakLibrary | None = None
        self._voices: frozenset[str] = frozenset()
        self.sample_rate = 22_050

    def _load(self) -> None:
        self._library = _espeak_library()
        self.sample_rate = self._library.sample_rate
        self._voices = self._library.voices

    def warm_up(self) -> None:
        tts = self.create_tts(EspeakBinding(voice="en-us"), speed=1.0)
        for _ in tts.render("ready"):
            pass

    def languages(self) -> frozenset[str]:
        return frozenset(primary_language(v) for v in self._voices)

    def voice_names(self) -> list[str]:
        return sorted(self._voices)

    def can_render(self, binding: Binding) -> bool:
        return isinstance(binding, EspeakBinding) and binding.voice.lower() in self._voices

    def binding_for_language(self, language: str) -> Binding | None:
        code = language.strip().lower().replace("_", "-")
        code = _LANGUAGE_ALIASES.get(code, code)
        for candidate in (
            code,
            primary_language(code),
            _LANGUAGE_ALIASES.get(primary_language(code), ""),
        ):
            if candidate in self._voices:
                return EspeakBinding(voice=candidate)
        return None

    def create_tts(
        self, binding: Binding, *, speed: float, latency_critical: bool = False
    ) -> EspeakTTS:
        assert isinstance(binding, EspeakBinding)
        name = binding.voice if binding.variant is None else f"{binding.voice}+{binding.variant}"
        rate = int(min(MAX_RATE_WPM, max(MIN_RATE_WPM, DEFAULT_RATE_WPM * speed)))
        return EspeakTTS(self, _Options(name, rate), primary_language(binding.voice))

    def synthesize_blocking(
        self, text: str, options: _Options, stop: threading.Event
    ) -> FloatAudio:
        """Blocking: the whole of ``text`` as float audio at ``sample_rate``."""
        if self._library is None:
            raise RuntimeError("espeak-ng is not loaded")
        return self._library.synthesize(text, options, stop)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class EspeakTTS(LocalTTS):
    def __init__(self, backend: EspeakBackend, options: _Options, language: str) -> None:
        super().__init__(
            engine=backend.name,
            sample_rate=backend.sample_rate,
            executor=backend.pool,
            language=language,
        )
        self._backend = backend
        self._opts = options

    def _render(self, text: str, stop: threading.Event) -> Iterator[FloatAudio]:
        audio = self._backend.synthesize_blocking(text, self._opts, stop)
        if audio.size:
            yield audio


QUALITY_RANK = 100.0
"""Never ranked in practice: the router keeps espeak-ng as the last resort of every plan."""


def build_backend(config: ServiceConfig, *, deterministic: bool) -> EspeakBackend:
    """Nothing to configure; espeak-ng's output has no randomness."""
    return EspeakBackend()


SPEC = EngineSpec(
    name=EspeakBackend.name,
    binding=EspeakBinding,
    tier=EspeakBackend.profile.tier,
    quality_rank=QUALITY_RANK,
    build=build_backend,
)
