"""What the router needs to know about an engine: can it load, what can it speak, how well."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from livekit.agents import tts

from .deadline_executor import DeadlineExecutor
from .errors import CloningUnsupportedError
from .names import QualityTier
from .voice_reference import VoiceReference
from .voices import Binding

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineProfile:
    """Priors the router ranks engines by, before it has measured anything itself."""

    quality_mos: float
    """Estimated overall MOS (DNSMOS OVRL scale)."""
    typical_ttfa_ms: float
    tier: QualityTier
    description: str


class EngineState(StrEnum):
    NOT_LOADED = "not_loaded"
    READY = "ready"
    NOT_INSTALLED = "not_installed"
    FAILED = "failed"


class EngineNotInstalled(Exception):
    """Raised by ``_load`` when the engine's package or weights are missing."""


class EngineBackend(ABC):
    """One engine family: its loaded model(s), shared by every session, and its TTS factory."""

    name: str
    """The engine's registered name (``engines.engine_registry``)."""
    profile: EngineProfile
    install_hint: str = ""
    supports_cloning: bool = False
    """Whether ``create_cloned_tts`` speaks in the voice of a reference recording."""
    streams_within_piece: bool = False
    """Whether the engine's audio for one piece of text arrives in several parts (a streaming
    model or a network stream), so the first piece can be played before it is complete."""

    def __init__(self) -> None:
        self.state = EngineState.NOT_LOADED
        self.detail = ""
        self.load_seconds = 0.0

    def load(self) -> None:
        """Blocking: load models once. Never raises; the outcome is in ``state``/``detail``."""
        started = time.perf_counter()
        try:
            self._load()
        except EngineNotInstalled as exc:
            self.state = EngineState.NOT_INSTALLED
            self.detail = f"{exc} — {self.install_hint}" if self.install_hint else str(exc)
            logger.warning("engine not installed: %s", self.detail, extra={"engine": self.name})
        except Exception as exc:
            self.state = EngineState.FAILED
            self.detail = f"{type(exc).__name__}: {exc}"
            logger.exception("engine failed to load", extra={"engine": self.name})
        else:
            self.state = EngineState.READY
            self.detail = "loaded"
        self.load_seconds = time.perf_counter() - started

    @property
    def pool(self) -> DeadlineExecutor | None:
        """The engine's own synthesis pool (engines without one, like Edge, have none)."""
        return None

    @property
    def queue_depth(self) -> int:
        """Syntheses waiting for a free worker thread of this engine."""
        pool = self.pool
        return pool.waiting if pool is not None else 0

    @property
    def expected_wait_s(self) -> float:
        """About how long a new reply would wait for this engine's pool (0 without a pool;
        see ``DeadlineExecutor.expected_wait_s``)."""
        pool = self.pool
        return pool.expected_wait_s() if pool is not None else 0.0

    @property
    def worker_threads(self) -> int:
        """Threads this engine synthesizes on (0 when it has no pool of its own)."""
        pool = self.pool
        return pool.max_workers if pool is not None else 0

    def streaming(self) -> dict[str, object]:
        """How the engine's audio for one piece arrives (``/health``)."""
        return {"within_piece": self.streams_within_piece}

    @property
    def ready(self) -> bool:
        return self.state is EngineState.READY

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def languages(self) -> frozenset[str]:
        """Primary language codes this engine can speak now."""

    @abstractmethod
    def can_render(self, binding: Binding) -> bool:
        """Whether this binding's model/voice is present and loaded."""

    @abstractmethod
    def create_tts(
        self, binding: Binding, *, speed: float, latency_critical: bool = False
    ) -> tts.TTS[Any]:
        """A LiveKit TTS speaking with ``binding``; cheap, the model is shared.

        ``latency_critical`` asks for the fastest first audio over throughput (used for the
        first piece of an utterance); engines without such a mode ignore it."""

    def create_voice(
        self, binding: Binding, *, language: str, speed: float, latency_critical: bool = False
    ) -> tts.TTS[Any]:
        """``create_tts`` for a library voice speaking ``language``. Most engines' bindings fix
        the language; one whose speakers speak many languages (XTTS) uses it."""
        return self.create_tts(binding, speed=speed, latency_critical=latency_critical)

    def create_cloned_tts(
        self,
        reference: VoiceReference,
        *,
        language: str,
        speed: float,
        latency_critical: bool = False,
    ) -> tts.TTS[Any]:
        """A LiveKit TTS speaking ``language`` in the voice of ``reference``."""
        raise CloningUnsupportedError(f"engine {str(self.name)!r} cannot clone a voice")

    def missing_reason(self, binding: Binding) -> str:
        """Why ``can_render(binding)`` is False, for people reading /voices."""
        return f"{binding.model_dump(exclude_none=True)} is not installed"

    def spoken_binding(self, binding: Binding) -> Binding:
        """The binding that actually speaks ``binding`` now (a stand-in while its own voice is
        not fetched); how the quality table names what is heard."""
        return binding

    def accented(self, binding: Binding, language: str) -> bool:
        """Whether ``binding`` speaks ``language`` with another language's voice: the router
        puts native voices of a language first."""
        return False

    def describe(self, binding: Binding, language: str) -> str | None:
        """How this engine speaks ``language`` with ``binding``, when it is not plainly a
        native voice of that language (``/voices`` shows it); None otherwise."""
        return None

    def binding_for_language(self, language: str) -> Binding | None:
        """A binding for a language that has no voice in the library (none by default)."""
        return None

    @abstractmethod
    def warm_up(self) -> None:
        """Blocking: run one tiny synthesis so the first request pays no lazy start-up."""

    @abstractmethod
    def close(self) -> None:
        """Release threads and native resources."""


class LocalBackend(EngineBackend):
    """An engine whose model runs in this process, on a bounded pool of its own threads
    (``_executor``, made by the subclass); its TTS objects run their syntheses there."""

    _executor: DeadlineExecutor

    @property
    def pool(self) -> DeadlineExecutor:
        return self._executor
