"""New work is refused while memory runs short, before the process or the machine dies of it:
the process's resident memory over ``limits.max_rss_mb``, or the machine's memory in use over
``limits.max_memory_percent``. Work already accepted goes on; new requests get 503
``memory_pressure`` with a time to retry."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from engines.config import Limits

from .errors import RetryLaterError

READING_TTL_S = 0.5
"""Readings are reused this long: a burst of requests costs one look at the memory."""
RETRY_AFTER_S = 5


class MemoryPressureError(RetryLaterError):
    code = "memory_pressure"
    http_status = 503


@dataclass(frozen=True)
class MemoryReading:
    rss_bytes: int
    system_percent: float


def read_memory() -> MemoryReading:
    return MemoryReading(psutil.Process().memory_info().rss, psutil.virtual_memory().percent)


class MemoryGuard:
    def __init__(
        self,
        limits: Limits,
        read: Callable[[], MemoryReading] = read_memory,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = limits
        self._read = read
        self._clock = clock
        self._last: tuple[float, MemoryReading] | None = None

    def reading(self) -> MemoryReading:
        now = self._clock()
        if self._last is None or now - self._last[0] > READING_TTL_S:
            self._last = (now, self._read())
        return self._last[1]

    def problem(self) -> str | None:
        """Why new work would be refused now, or None."""
        limits = self._limits
        reading = self.reading()
        if limits.max_rss_mb is not None and reading.rss_bytes > limits.max_rss_mb * 2**20:
            return (
                f"the process uses {reading.rss_bytes / 2**20:.0f} MB, over its limit of "
                f"{limits.max_rss_mb} MB"
            )
        if reading.system_percent > limits.max_memory_percent:
            return (
                f"the machine's memory is {reading.system_percent:.0f} % in use, over "
                f"{limits.max_memory_percent:g} %"
            )
        return None

    def check(self) -> None:
        """Raise ``MemoryPressureError`` while memory is short."""
        problem = self.problem()
        if problem is not None:
            raise MemoryPressureError(
                f"no new work while memory is short: {problem}; retry later", RETRY_AFTER_S
            )
