"""Choose the engines that will try to speak a request, best first.

The order follows the configured strategy (auto / manual / quality_first / speed_first) and the
request's quality tier, then the configured fallback chain; espeak-ng always comes last as the
engine that can say something in any language. ``quality_first`` follows the engines' declared
``quality_rank`` (``engines.engine_registry``). Engines that are not loaded, cannot render the
voice, or are benched by their circuit breaker are left out. Engines are ranked by the measured
quality of the voice in its language (``engines.voice_quality``); an engine speaking it with
another language's voice (Kokoro's bundled Japanese styles in Spanish) comes after every native
voice above the quality threshold (Piper's or Kokoro's published voices of that language).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from livekit.agents import tts

from .backend import EngineBackend
from .config import EngineSelection
from .engine_registry import engine_names, quality_first_order
from .errors import (
    CloningUnsupportedError,
    EngineUnavailableError,
    InvalidOptionError,
    UnknownLanguageError,
)
from .names import (
    TIER_TTFA_BUDGET_MS,
    EngineName,
    QualityTier,
    SelectionStrategy,
    primary_language,
)
from .registry import DISABLED, EngineRegistry
from .voice_quality import QualityTable
from .voice_reference import VoiceReference
from .voices import Binding, Voice, VoiceCatalog

LAST_RESORT: str = EngineName.ESPEAK
"""Last in every plan: it speaks any language, if robotically."""
CLONING_ENGINE: str = EngineName.XTTS
DEFAULT_LANGUAGE = "en"
_LANGUAGE_CODE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


def _check_language_code(language: str | None) -> None:
    if language is not None and not _LANGUAGE_CODE.match(language):
        raise InvalidOptionError(
            f"language {language!r} is not a language code such as 'en' or 'pt-BR'"
        )


@dataclass(frozen=True)
class ResolvedVoice:
    voice_id: str
    language: str
    """Language code as asked (``es-419``) or the voice's primary language."""
    voice: Voice | None
    """None for a language that has no voice in the library (spoken by espeak-ng)."""


@dataclass(frozen=True)
class Candidate:
    engine: str
    backend: EngineBackend
    binding: Binding | None
    """None for a cloned voice, which ``reference`` describes instead."""
    reference: VoiceReference | None = None
    accented: bool = False
    """Speaks the language with another language's voice (``EngineBackend.accented``)."""

    def create_tts(self, *, language: str, speed: float, latency_critical: bool) -> tts.TTS[Any]:
        if self.reference is not None:
            return self.backend.create_cloned_tts(
                self.reference, language=language, speed=speed, latency_critical=latency_critical
            )
        assert self.binding is not None
        return self.backend.create_voice(
            self.binding, language=language, speed=speed, latency_critical=latency_critical
        )


class EngineRouter:
    def __init__(
        self,
        selection: EngineSelection,
        catalog: VoiceCatalog,
        registry: EngineRegistry,
        quality: QualityTable | None = None,
    ) -> None:
        self._selection = selection
        self._catalog = catalog
        self._registry = registry
        self.quality = quality if quality is not None else QualityTable.load()

    def quality_of(self, resolved: ResolvedVoice, candidate: Candidate) -> float:
        """The measured score of this engine speaking this voice in this language
        (``engines.voice_quality``), else the engine's prior."""
        if candidate.binding is not None:
            spoken = candidate.backend.spoken_binding(candidate.binding)
            measured = self.quality.measured(candidate.engine, resolved.language, spoken)
            if measured is not None:
                return measured.score
        return self._registry.profile(candidate.engine).quality_mos

    def known_languages(self) -> set[str]:
        spoken = set(self._catalog.languages())
        for backend in self._registry.backends():
            if backend.ready:
                spoken |= backend.languages()
        return spoken

    def resolve_voice(self, voice_id: str | None, language: str | None) -> ResolvedVoice:
        _check_language_code(language)
        if voice_id:
            voice = self._catalog.get(voice_id)
            if language and primary_language(language) != voice.language:
                raise InvalidOptionError(
                    f"voice {voice_id!r} speaks {voice.language!r}, not {language!r}; "
                    f"omit language or pick a {primary_language(language)!r} voice"
                )
            return ResolvedVoice(voice.id, voice.language, voice)
        wanted = language or DEFAULT_LANGUAGE
        voices = self._catalog.for_language(wanted)
        if voices:
            renderable = [v for v in voices if self._renderable_engines(v)]
            chosen = (renderable or voices)[0]
            return ResolvedVoice(chosen.id, chosen.language, chosen)
        for backend in self._registry.backends():
            if backend.ready and backend.binding_for_language(wanted) is not None:
                code = wanted.lower().replace("_", "-")
                return ResolvedVoice(f"{backend.name}:{code}", code, None)
        raise UnknownLanguageError(wanted, self.known_languages())

    def binding(self, resolved: ResolvedVoice, engine: str) -> Binding | None:
        if resolved.voice is not None:
            return resolved.voice.engines.get(engine)
        backend = self._registry.backend(engine)
        return backend.binding_for_language(resolved.language) if backend else None

    def _capable(self, resolved: ResolvedVoice, engine: str) -> Candidate | None:
        backend = self._registry.backend(engine)
        binding = self.binding(resolved, engine)
        if backend is None or not backend.ready or binding is None:
            return None
        if not backend.can_render(binding):
            return None
        return Candidate(
            engine, backend, binding, accented=backend.accented(binding, resolved.language)
        )

    def _renderable_engines(self, voice: Voice) -> list[str]:
        resolved = ResolvedVoice(voice.id, voice.language, voice)
        return [name for name in voice.engines.engines() if self._capable(resolved, name)]

    def availability(self, voice: Voice) -> list[dict[str, object]]:
        """Each bound engine of ``voice``: whether it can render it now, and if not, why."""
        resolved = ResolvedVoice(voice.id, voice.language, voice)
        rows: list[dict[str, object]] = []
        for name in voice.engines.engines():
            binding = voice.engines.get(name)
            assert binding is not None
            backend = self._registry.backend(name)
            if backend is None:
                reason = f"engine {DISABLED}"
            elif not backend.ready:
                reason = f"engine {backend.state.value}: {backend.detail}"
            elif not backend.can_render(binding):
                reason = backend.missing_reason(binding)
            elif not self._registry.usable(name):
                reason = "engine cooling down after failures"
            else:
                reason = ""
            spoken = backend.spoken_binding(binding) if backend else binding
            measured = self.quality.measured(name, voice.language, spoken)
            rows.append(
                {
                    "engine": str(name),
                    "available": not reason and self._capable(resolved, name) is not None,
                    "reason": reason or None,
                    "binding": binding.model_dump(exclude_none=True),
                    "label": backend.describe(binding, voice.language) if backend else None,
                    "measured": None
                    if measured is None
                    else {
                        "error_rate": measured.error_rate,
                        "dnsmos": measured.dnsmos,
                        "score": measured.score,
                    },
                }
            )
        return rows

    def plan(
        self,
        resolved: ResolvedVoice,
        *,
        engine: str | None = None,
        quality: QualityTier | None = None,
        strategy: SelectionStrategy | None = None,
    ) -> list[Candidate]:
        """Engines to try for this voice, best first (see module doc)."""
        if engine is not None:
            self._check_requested(resolved, engine)
        capable = {
            name: candidate
            for name in engine_names()
            if (candidate := self._capable(resolved, name)) is not None
        }
        scores = {name: self.quality_of(resolved, c) for name, c in capable.items()}
        accented = {name for name, c in capable.items() if c.accented}
        order = self._order(scores, accented, quality, strategy)
        if engine is not None:
            order.insert(0, engine)
        seen: set[str] = set()
        plan: list[Candidate] = []
        for name in order:
            if name in seen or name not in capable or not self._registry.usable(name):
                continue
            seen.add(name)
            plan.append(capable[name])
        if not plan:
            raise EngineUnavailableError(
                f"no engine can speak voice {resolved.voice_id!r} right now; engine states: "
                + ", ".join(f"{row['engine']}={row['state']}" for row in self._registry.status())
            )
        return plan

    def resolve_clone(
        self, voice_id: str | None, language: str | None, reference: VoiceReference
    ) -> ResolvedVoice:
        """A cloned voice speaks any language its engine speaks; a library voice, if named,
        only gives the language."""
        if voice_id:
            language = self.resolve_voice(voice_id, language).language
        _check_language_code(language)
        return ResolvedVoice(f"clone:{reference.digest[:12]}", language or DEFAULT_LANGUAGE, None)

    def plan_clone(
        self, resolved: ResolvedVoice, reference: VoiceReference, *, engine: str | None
    ) -> list[Candidate]:
        """The one engine that can speak in a reference recording's voice. No fallback: another
        engine would speak in a different voice, which is not what was asked."""
        if engine is not None and engine != CLONING_ENGINE:
            raise CloningUnsupportedError(
                f"engine {str(engine)!r} cannot clone a voice; only {str(CLONING_ENGINE)!r} "
                "can: omit 'engine' or ask for it"
            )
        backend = self._registry.backend(CLONING_ENGINE)
        if backend is None or not backend.ready or not backend.supports_cloning:
            detail = backend.detail if backend else DISABLED
            raise EngineUnavailableError(
                f"voice cloning needs the {str(CLONING_ENGINE)!r} engine, which is not "
                f"available: {detail}"
            )
        language = primary_language(resolved.language)
        if language not in backend.languages():
            raise InvalidOptionError(
                f"{str(CLONING_ENGINE)!r} cannot clone a voice in {language!r}; it speaks "
                + ", ".join(sorted(backend.languages()))
            )
        if not self._registry.usable(CLONING_ENGINE):
            raise EngineUnavailableError(
                f"{str(CLONING_ENGINE)!r} is cooling down after failures; retry shortly"
            )
        return [Candidate(CLONING_ENGINE, backend, None, reference)]

    def _check_requested(self, resolved: ResolvedVoice, engine: str) -> None:
        backend = self._registry.backend(engine)
        if backend is None or not backend.ready:
            detail = backend.detail if backend else DISABLED
            raise EngineUnavailableError(f"engine {str(engine)!r} is not available: {detail}")
        if self._capable(resolved, engine) is None:
            able = [str(n) for n in engine_names() if self._capable(resolved, n)]
            raise InvalidOptionError(
                f"engine {str(engine)!r} cannot speak voice {resolved.voice_id!r}; "
                f"engines that can: {', '.join(able) or 'none'}"
            )

    def _order(
        self,
        scores: dict[str, float],
        accented: set[str],
        quality: QualityTier | None,
        strategy: SelectionStrategy | None,
    ) -> list[str]:
        """``scores``: each capable engine's quality for this voice (``quality_of``);
        ``accented``: those speaking it with another language's voice, which come after every
        native voice above the threshold, whatever their scores (an accent is not measured by
        intelligibility or DNSMOS)."""
        selection = self._selection
        strategy = strategy or selection.selection_strategy
        tier = quality or selection.default_quality
        threshold = selection.auto_selection.quality_threshold
        registry = self._registry
        capable = list(scores)
        good = [n for n in capable if n != LAST_RESORT and scores[n] >= threshold]
        # below the threshold, still best measured first, before espeak-ng
        weak = sorted(
            (n for n in capable if n != LAST_RESORT and n not in good), key=lambda n: -scores[n]
        )
        by_quality = sorted(good, key=lambda n: (n in accented, -scores[n]))
        by_speed = sorted(good, key=lambda n: (n in accented, registry.expected_ttfa_ms(n)))
        chain = list(selection.auto_selection.fallback_chain)
        if strategy is SelectionStrategy.QUALITY_FIRST:
            # measured below the threshold in this language: after those that are not
            order = sorted(
                (n for n in quality_first_order() if n in good), key=lambda n: n in accented
            )
        elif strategy is SelectionStrategy.SPEED_FIRST:
            order = by_speed
        elif strategy is SelectionStrategy.MANUAL:
            order = [selection.default_engine, *chain, *by_quality]
        else:
            budget = min(selection.auto_selection.ttft_threshold_ms, TIER_TTFA_BUDGET_MS[tier])
            in_budget = [n for n in by_quality if registry.expected_ttfa_ms(n) <= budget]
            if tier is QualityTier.FAST:
                in_budget.sort(key=lambda n: (n in accented, registry.expected_ttfa_ms(n)))
            primary = in_budget[:1] or by_speed[:1]
            order = [*primary, *chain, *by_quality]
        return [*order, *weak, LAST_RESORT]
