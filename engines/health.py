"""Per-engine circuit breaker: an engine that keeps failing is benched, then probed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from .config import HealthPolicy

TTFA_SMOOTHING = 0.2
"""Weight of the newest time-to-first-audio sample in the running average."""


class HealthState(StrEnum):
    HEALTHY = "healthy"
    COOLING_DOWN = "cooling_down"
    PROBING = "probing"


@dataclass
class EngineHealth:
    policy: HealthPolicy
    clock: Callable[[], float] = time.monotonic
    state: HealthState = HealthState.HEALTHY
    consecutive_failures: int = 0
    total_failures: int = 0
    total_successes: int = 0
    cooling_until: float = 0.0
    last_error: str = ""
    ttfa_ms: float | None = None
    """Running average of this engine's measured time to first audio."""
    _listeners: list[Callable[[HealthState], None]] = field(default_factory=list)

    def usable(self) -> bool:
        return self.state is HealthState.HEALTHY

    def probe_due(self) -> bool:
        return self.state is HealthState.COOLING_DOWN and self.clock() >= self.cooling_until

    def record_success(self, ttfa_ms: float | None = None) -> None:
        self.consecutive_failures = 0
        self.total_successes += 1
        self.state = HealthState.HEALTHY
        if ttfa_ms is not None:
            self.ttfa_ms = (
                ttfa_ms
                if self.ttfa_ms is None
                else (1 - TTFA_SMOOTHING) * self.ttfa_ms + TTFA_SMOOTHING * ttfa_ms
            )

    def record_failure(self, error: BaseException) -> None:
        self.consecutive_failures += 1
        self.total_failures += 1
        self.last_error = f"{type(error).__name__}: {error}"
        if (
            self.state is HealthState.PROBING
            or self.consecutive_failures >= self.policy.failures_before_cooldown
        ):
            self.bench()

    def bench(self) -> None:
        self.state = HealthState.COOLING_DOWN
        self.cooling_until = self.clock() + self.policy.cooldown_s

    def start_probe(self) -> None:
        self.state = HealthState.PROBING

    def snapshot(self) -> dict[str, object]:
        remaining = max(0.0, self.cooling_until - self.clock())
        return {
            "state": self.state.value,
            "consecutive_failures": self.consecutive_failures,
            "failures": self.total_failures,
            "successes": self.total_successes,
            "cooldown_remaining_s": round(remaining, 3)
            if self.state is HealthState.COOLING_DOWN
            else 0.0,
            "last_error": self.last_error or None,
            "ttfa_ms": None if self.ttfa_ms is None else round(self.ttfa_ms, 1),
        }
