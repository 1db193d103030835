"""The engines of this process: loaded once, shared by every session, watched for failures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from .backend import EngineBackend, EngineProfile, EngineState
from .config import HealthPolicy
from .engine_registry import engine_names
from .health import EngineHealth, HealthState
from .voices import Binding, VoiceCatalog

logger = logging.getLogger(__name__)

PROBE_TEXT = "Testing one two three."
PROBE_LANGUAGE = "en"

DISABLED = "disabled in the configuration (disabled_engines)"


class EngineRegistry:
    def __init__(
        self,
        backends: Iterable[EngineBackend],
        catalog: VoiceCatalog,
        health_policy: HealthPolicy,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._backends = {backend.name: backend for backend in backends}
        self._catalog = catalog
        self._policy = health_policy
        self._health = {
            name: EngineHealth(health_policy, clock) if clock else EngineHealth(health_policy)
            for name in self._backends
        }
        self._probes: dict[str, asyncio.Task[None]] = {}

    async def start(self, *, warm_up: bool = True) -> None:
        """Load every engine (in threads, concurrently) and warm the ready ones."""
        await asyncio.gather(*(asyncio.to_thread(b.load) for b in self._backends.values()))
        if warm_up:
            for backend in self._backends.values():
                if backend.ready:
                    await asyncio.to_thread(backend.warm_up)

    async def aclose(self) -> None:
        for task in self._probes.values():
            task.cancel()
        await asyncio.gather(*self._probes.values(), return_exceptions=True)
        for backend in self._backends.values():
            backend.close()

    def backend(self, name: str) -> EngineBackend | None:
        return self._backends.get(name)

    def backends(self) -> list[EngineBackend]:
        return list(self._backends.values())

    def health(self, name: str) -> EngineHealth | None:
        return self._health.get(name)

    def usable(self, name: str) -> bool:
        backend = self._backends.get(name)
        health = self._health.get(name)
        if backend is None or health is None or not backend.ready:
            return False
        if health.probe_due():
            self._start_probe(name)
        return health.usable()

    def profile(self, name: str) -> EngineProfile:
        return self._backends[name].profile

    def expected_ttfa_ms(self, name: str) -> float:
        health = self._health.get(name)
        if health is not None and health.ttfa_ms is not None:
            return health.ttfa_ms
        return self.profile(name).typical_ttfa_ms

    def record_success(self, name: str, ttfa_ms: float | None = None) -> None:
        self._health[name].record_success(ttfa_ms)

    def record_failure(self, name: str, error: BaseException) -> None:
        health = self._health[name]
        health.record_failure(error)
        logger.warning(
            "engine failed (%d in a row, %s): %s",
            health.consecutive_failures,
            health.state.value,
            error,
            extra={"engine": str(name)},
        )

    def _probe_binding(self, backend: EngineBackend) -> Binding | None:
        for voice in self._catalog:
            binding = voice.engines.get(backend.name)
            if binding is not None and backend.can_render(binding):
                return binding
        return backend.binding_for_language(PROBE_LANGUAGE)

    def _start_probe(self, name: str) -> None:
        if name in self._probes and not self._probes[name].done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (a synchronous caller): the next async caller probes
        self._health[name].start_probe()
        self._probes[name] = loop.create_task(self._probe(name), name=f"probe-{name}")

    async def _probe(self, name: str) -> None:
        backend = self._backends[name]
        health = self._health[name]
        binding = self._probe_binding(backend)
        try:
            if binding is None:
                raise RuntimeError("no voice to probe with")
            stream = backend.create_tts(binding, speed=1.0).synthesize(PROBE_TEXT)
            async with asyncio.timeout(self._policy.probe_timeout_s):
                frames = [event.frame async for event in stream]
            if not frames:
                raise RuntimeError("probe produced no audio")
        except Exception as exc:
            health.record_failure(exc)
            logger.warning("probe failed: %s", exc, extra={"engine": str(name)})
        else:
            health.record_success()
            logger.info("probe passed; engine trusted again", extra={"engine": str(name)})

    def status(self) -> list[dict[str, object]]:
        """Every engine with its state, for /health and `hive-tts voices`."""
        rows: list[dict[str, object]] = []
        for name in engine_names():
            backend = self._backends.get(name)
            row: dict[str, object] = {"engine": str(name)}
            if backend is not None:
                row.update(
                    tier=backend.profile.tier.value,
                    quality_mos_estimate=backend.profile.quality_mos,
                    description=backend.profile.description,
                )
            if backend is None:
                row.update(
                    state=EngineState.NOT_INSTALLED.value,
                    detail=DISABLED,
                    health=None,
                    languages=[],
                    available=False,
                )
            else:
                health = self._health[name]
                row.update(
                    state=backend.state.value,
                    detail=backend.detail,
                    streaming=backend.streaming() if backend.ready else None,
                    load_seconds=round(backend.load_seconds, 3),
                    languages=sorted(backend.languages()) if backend.ready else [],
                    health=health.snapshot(),
                    queue_depth=backend.queue_depth,
                    expected_wait_s=round(backend.expected_wait_s, 3),
                    available=backend.ready and health.state is HealthState.HEALTHY,
                )
            rows.append(row)
        return rows
