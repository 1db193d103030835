"""Fakes for what a test must control: an engine that fails, hangs or slows when told to.

``FlakyBackend`` wraps a real, loaded engine and, inside its synthesis (in the worker thread, as
a real model would), raises on the calls listed in ``fail_on``, gives no audio on those in
``hang_on`` until told to stop, and waits before its audio on those in ``slow_on``. Everything
else is the real engine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from livekit.agents import tts

from engines.audio import FloatAudio
from engines.backend import EngineBackend
from engines.local_tts import LocalTTS
from engines.voices import Binding

HANG_LIMIT_S = 120.0
"""A hung call ends by itself after this, so a test that never stops it cannot hold a thread."""


class InjectedFailure(RuntimeError):
    pass


class FlakyBackend(EngineBackend):
    def __init__(
        self,
        inner: EngineBackend,
        fail_on: set[int] | None = None,
        *,
        hang_on: set[int] | None = None,
        slow_on: dict[int, float] | None = None,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.name = inner.name
        self.profile = inner.profile  # type: ignore[misc]
        self.fail_on = set(fail_on or set())
        self.hang_on = set(hang_on or set())
        """Calls that give no audio until told to stop (as a model stuck in a step would)."""
        self.slow_on = dict(slow_on or {})
        """Calls that wait this many seconds before their audio (a machine under load)."""
        self.stopped_while_hung = threading.Event()
        self.fail_always = False
        self.calls = 0
        self._lock = threading.Lock()

    def _load(self) -> None:
        if not self.inner.ready:
            self.inner.load()

    def warm_up(self) -> None:
        self.inner.warm_up()

    def close(self) -> None:
        """The wrapped engine belongs to the shared test synthesizer, which closes it."""

    def languages(self) -> frozenset[str]:
        return self.inner.languages()

    def can_render(self, binding: Binding) -> bool:
        return self.inner.can_render(binding)

    def binding_for_language(self, language: str) -> Binding | None:
        return self.inner.binding_for_language(language)

    def create_tts(
        self, binding: Binding, *, speed: float, latency_critical: bool = False
    ) -> tts.TTS[Any]:
        inner = self.inner.create_tts(binding, speed=speed, latency_critical=latency_critical)
        assert isinstance(inner, LocalTTS)
        return FlakyTTS(self, inner)

    def next_call(self) -> int:
        with self._lock:
            index = self.calls
            self.calls += 1
        return index

    def fails(self, index: int) -> bool:
        return self.fail_always or index in self.fail_on


class FlakyTTS(LocalTTS):
    def __init__(self, backend: FlakyBackend, inner: LocalTTS) -> None:
        super().__init__(
            engine=inner.engine,
            sample_rate=inner.sample_rate,
            executor=inner.executor,
            language=inner.language,
        )
        self._backend = backend
        self._inner = inner

    def _render(self, text: str, stop: threading.Event) -> Iterator[FloatAudio]:
        backend = self._backend
        call = backend.next_call()
        if backend.fails(call):
            raise InjectedFailure(f"injected failure while saying {text!r}")
        if call in backend.hang_on:
            if stop.wait(HANG_LIMIT_S):
                backend.stopped_while_hung.set()
            return
        if call in backend.slow_on:
            stop.wait(backend.slow_on[call])
        yield from self._inner._render(text, stop)
