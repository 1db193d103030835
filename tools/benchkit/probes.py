"""Things watched while a workload runs: this process's event loop, a real-time player's
playback, and an agent worker seen from outside."""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from .machine import BYTES_PER_MB
from .stats import MS_PER_S

LAG_PROBE_S = 0.05
"""The lag probe sleeps this long and records how late it wakes."""
METRICS_TIMEOUT_S = 5.0


class LoopLagProbe:
    """How late this process's event loop wakes from short sleeps: its own load shows here (a
    load generator that lags distorts what it measures). Used as ``with LoopLagProbe():``
    inside a running loop."""

    def __init__(self, stall_after_s: float | None = None) -> None:
        self.lags_ms: list[float] = []
        self.stalls: list[tuple[float, float]] = []
        """(start, end) of wake-ups later than ``stall_after_s`` (when given)."""
        self._stall_after_s = stall_after_s
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(LAG_PROBE_S)
            woke = time.perf_counter()
            lag = max(0.0, woke - before - LAG_PROBE_S)
            self.lags_ms.append(lag * MS_PER_S)
            if self._stall_after_s is not None and lag > self._stall_after_s:
                self.stalls.append((woke - lag, woke))

    def stalled(self, start: float, end: float) -> bool:
        """Whether this process's loop stalled during (start, end)."""
        return any(a < end and b > start for a, b in self.stalls)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def __enter__(self) -> LoopLagProbe:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class PlaybackClock:
    """A real-time player that starts at the first chunk and plays without pause: a chunk that
    arrives after everything received before it has finished playing is an underrun, and the
    player waits for it (playback resumes when it arrives)."""

    def __init__(self) -> None:
        self.play_start: float | None = None
        self.received_s = 0.0
        self.underruns = 0
        self.largest_gap_s = 0.0

    def on_chunk(self, arrived: float, duration_s: float) -> None:
        """A chunk of ``duration_s`` seconds of audio arrived at ``arrived`` (perf_counter)."""
        if self.play_start is None:
            self.play_start = arrived
        else:
            late_s = (arrived - self.play_start) - self.received_s
            if late_s > 0:
                self.underruns += 1
                self.largest_gap_s = max(self.largest_gap_s, late_s)
                self.play_start += late_s
        self.received_s += duration_s

    @property
    def end(self) -> float | None:
        """When (perf_counter) everything received so far will have been played."""
        return None if self.play_start is None else self.play_start + self.received_s


class WorkerProbe:
    """An agent worker's CPU and RSS (psutil, children included) and its Prometheus metrics;
    each is ``None`` when the pid or the metrics URL is not known."""

    def __init__(self, pid: int | None, metrics_url: str | None) -> None:
        self._process = psutil.Process(pid) if pid is not None else None
        self.metrics_url = metrics_url

    def _tree(self) -> list[psutil.Process]:
        assert self._process is not None
        return [self._process, *self._process.children(recursive=True)]

    def _cpu_s(self) -> float | None:
        if self._process is None:
            return None
        total = 0.0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def _native_cpu_s(self) -> float | None:
        """CPU of the worker's threads that are not Python's (named by WebRTC and the LiveKit
        FFI: encoders, network, tokio); Python threads keep the process's name."""
        if self._process is None:
            return None
        own = self._process.name()
        total = 0.0
        for thread in self._process.threads():
            with contextlib.suppress(OSError):
                comm = Path(f"/proc/{self._process.pid}/task/{thread.id}/comm").read_text()
                if comm.strip() != own:
                    total += thread.user_time + thread.system_time
        return total

    def _rss_mb(self) -> float | None:
        if self._process is None:
            return None
        total = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total / BYTES_PER_MB

    async def cpu_s(self) -> tuple[float | None, float | None]:
        """(whole worker, its native threads) CPU seconds so far."""
        return await asyncio.to_thread(lambda: (self._cpu_s(), self._native_cpu_s()))

    async def rss_mb(self) -> float | None:
        return await asyncio.to_thread(self._rss_mb)

    def _metrics(self) -> dict[str, float]:
        if self.metrics_url is None:
            return {}
        with urllib.request.urlopen(self.metrics_url, timeout=METRICS_TIMEOUT_S) as reply:
            text = reply.read().decode()
        sums: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                sums[sample.name] = sums.get(sample.name, 0.0) + float(sample.value)
        return sums

    async def metric(self, name: str) -> float | None:
        """A metric summed over its labels; ``None`` when unknown or unreadable."""
        try:
            values = await asyncio.to_thread(self._metrics)
        except OSError:
            return None
        return values.get(name, 0.0) if self.metrics_url is not None else None
