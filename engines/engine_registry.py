"""Which engines exist: each engine module declares itself here, in one ``EngineSpec``.

An engine is one file. Its module holds a module-level ``SPEC`` saying what the engine is
called, how a voice in ``voices.yaml`` binds to it, what its ``config.yaml`` section under
``engines:`` holds, its quality tier, its place in the ``quality_first`` order and how to build
its backend. The voice library, the configuration, the router, ``build_backends`` and the
OpenAPI document read the engines from here, so none of them lists engines itself.

The engines this build ships are the modules of ``BUILTIN_ENGINE_MODULES``, imported (cheaply:
models load in ``EngineBackend.load``) the first time anyone asks. Another engine registers
itself when its module is imported, as livekit-agents plugins do::

    SPEC = EngineSpec(name="festival", binding=FestivalBinding, ...)
    register(SPEC)

Not to be confused with ``engines.registry.EngineRegistry``: the engines *running* in one
process, with their health.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from .names import QualityTier

if TYPE_CHECKING:
    from .backend import EngineBackend
    from .config import ServiceConfig
    from .voices import VoiceBinding

BUILTIN_ENGINE_MODULES = (
    "engines.piper_engine",
    "engines.kokoro_engine",
    "engines.espeak_engine",
    "engines.speecht5_engine",
    "engines.xtts_engine",
    "engines.edge_engine",
)
"""The engines this build ships, in the order they are listed (``/health``, ``/voices``)."""

SettingsT = TypeVar("SettingsT", bound=BaseModel)


@dataclass(frozen=True)
class SettingsSection(Generic[SettingsT]):
    """An engine's section under ``engines:`` in ``config.yaml``."""

    key: str
    """The key in the file, e.g. ``edge-tts``."""
    default: SettingsT
    """What the section holds when the file leaves it out; its class validates the section."""

    @property
    def model(self) -> type[SettingsT]:
        return type(self.default)

    @property
    def field_name(self) -> str:
        """The attribute of ``EngineSelection`` that holds it (``edge_tts``)."""
        return self.key.replace("-", "_")


class BackendFactory(Protocol):
    def __call__(self, config: ServiceConfig, *, deterministic: bool) -> EngineBackend:
        """The engine's backend, configured from ``config`` and not yet loaded.
        ``deterministic``: the same audio for the same text (tests), where the engine can."""
        ...


@dataclass(frozen=True)
class EngineSpec:
    """Everything the service needs to know about an engine before it is loaded."""

    name: str
    """How requests, ``voices.yaml``, ``config.yaml`` and replies call the engine."""
    binding: type[VoiceBinding]
    """What a voice's ``engines.<name>`` entry in ``voices.yaml`` holds."""
    tier: QualityTier
    quality_rank: float
    """Place in the ``quality_first`` order: lower is tried first (only the order matters)."""
    build: BackendFactory
    settings: SettingsSection[Any] | None = None
    """The engine's ``config.yaml`` section, if it has one."""

    @property
    def settings_key(self) -> str | None:
        return self.settings.key if self.settings is not None else None


_specs: dict[str, EngineSpec] = {}
_builtins_loaded = False
_loading = threading.RLock()


def _load_builtins() -> None:
    """Register the shipped engines, in their listed order, before any other."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    with _loading:
        if _builtins_loaded:
            return
        for module_name in BUILTIN_ENGINE_MODULES:
            spec = getattr(importlib.import_module(module_name), "SPEC", None)
            if not isinstance(spec, EngineSpec):
                raise RuntimeError(f"{module_name} declares no engine (a module-level SPEC)")
            _add(spec)
        _builtins_loaded = True


def _add(spec: EngineSpec) -> None:
    known = _specs.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(f"engine {spec.name!r} is already registered")
    taken = {s.settings_key for s in _specs.values() if s.name != spec.name}
    if spec.settings_key is not None and spec.settings_key in taken:
        raise ValueError(f"config section engines.{spec.settings_key} is another engine's")
    _specs[spec.name] = spec


def register(spec: EngineSpec) -> None:
    """Make ``spec``'s engine known (again: a no-op). Another engine of that name is an error."""
    _load_builtins()
    with _loading:
        _add(spec)


def unregister(name: str) -> None:
    """Forget an engine (tests' throwaway engines); the shipped ones come back on next use."""
    with _loading:
        _specs.pop(name, None)


def engine_specs() -> list[EngineSpec]:
    """Every known engine, the shipped ones first in their listed order."""
    _load_builtins()
    return list(_specs.values())


def engine_names() -> list[str]:
    return [spec.name for spec in engine_specs()]


def find_engine(name: str) -> EngineSpec | None:
    _load_builtins()
    return _specs.get(name)


def engine_spec(name: str) -> EngineSpec:
    """The spec of ``name``; ``ValueError`` naming the known engines when there is none."""
    spec = find_engine(name)
    if spec is None:
        raise ValueError(f"unknown engine {name!r}; allowed values: {', '.join(engine_names())}")
    return spec


def quality_first_order() -> list[str]:
    """``quality_first``: engines by their declared ``quality_rank``, best first."""
    return [spec.name for spec in sorted(engine_specs(), key=lambda spec: spec.quality_rank)]


def validate_engine_name(name: str) -> str:
    """For configuration fields: the registered name (``ValueError`` listing them if unknown)."""
    return engine_spec(name).name
