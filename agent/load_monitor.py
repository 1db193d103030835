"""The load a worker reports to the LiveKit server: the busiest of CPU, the engine queue and its
share of rooms."""

from __future__ import annotations

import threading
from collections import deque

import psutil

from agent.engine_host import EngineHost

SAMPLE_INTERVAL_S = 0.5
WINDOW_SAMPLES = 5
"""CPU is averaged over the last 2.5 s, so one busy moment does not turn rooms away."""
QUEUE_PER_THREAD_AT_FULL = 2.0
"""Pieces waiting per engine thread that count as fully loaded."""


class LoadMonitor:
    """Samples this worker's CPU in a background thread; ``load()`` is what the server sees.

    CPU is the worker process's own (every thread: engines, rooms, WebRTC), as a share of the
    machine's cores, so other programs on a shared machine do not turn rooms away. Rooms count
    too (``rooms / rooms_at_full_load``): a room joins idle and speaks later, so in a burst CPU
    says nothing yet, while LiveKit gives each room to the least loaded worker."""

    def __init__(self, host: EngineHost, rooms_at_full_load: int = 0) -> None:
        self._host = host
        self._rooms_at_full_load = rooms_at_full_load
        self.rooms = 0
        """Rooms this worker has taken (set by the worker as jobs start and end)."""
        self._samples: deque[float] = deque(maxlen=WINDOW_SAMPLES)
        self._stop = threading.Event()
        self._process = psutil.Process()
        self._cores = psutil.cpu_count() or 1
        self.last = 0.0
        self._process.cpu_percent(None)
        self._thread = threading.Thread(target=self._sample, name="load-monitor", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self._samples.append(self._process.cpu_percent(None) / 100 / self._cores)

    def cpu(self) -> float:
        samples = list(self._samples)
        return sum(samples) / len(samples) if samples else 0.0

    def queue(self) -> float:
        full = self._host.engine_threads() * QUEUE_PER_THREAD_AT_FULL
        return min(1.0, self._host.queue_depth() / full)

    def room_share(self) -> float:
        if self._rooms_at_full_load <= 0:
            return 0.0
        return min(1.0, self.rooms / self._rooms_at_full_load)

    def load(self) -> float:
        self.last = max(self.cpu(), self.queue(), self.room_share())
        return self.last

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
