"""Who used the CPU meanwhile: this is a shared 2-core machine, so every figure says how much
other processes took, and a run can wait for them to leave the CPU idle first."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from .report import heading, render_table

BYTES_PER_MB = 1024 * 1024
KIB_PER_MB = 1024  # resource.getrusage().ru_maxrss is in KiB on Linux

QUIET_WINDOW_S = 2.0
"""How long each look at the CPU lasts while waiting for quiet."""
QUIET_OTHER_CORES = 0.1
"""Quiet: other processes use at most this many cores on average over a window."""
DEFAULT_WAIT_QUIET_S = 60.0
BUSY_OTHER_CORES = 0.2
"""A section during which other processes used more than this many cores is flagged."""


@dataclass(frozen=True)
class CpuSnapshot:
    wall_s: float
    busy_s: float
    """CPU seconds spent by every process (all cores), from /proc/stat."""
    steal_s: float
    own_s: float
    """CPU seconds of this process."""


def cpu_snapshot() -> CpuSnapshot:
    times = psutil.cpu_times()
    busy = sum(
        float(getattr(times, name, 0.0)) for name in ("user", "nice", "system", "irq", "softirq")
    )
    own = psutil.Process().cpu_times()
    return CpuSnapshot(
        time.perf_counter(), busy, float(getattr(times, "steal", 0.0)), own.user + own.system
    )


def cpu_use_since(start: CpuSnapshot) -> dict[str, float]:
    """Cores used on average since ``start``: by this process, by all others, stolen by the host."""
    now = cpu_snapshot()
    wall = now.wall_s - start.wall_s
    own = (now.own_s - start.own_s) / wall
    return {
        "wall_s": wall,
        "own_cores": own,
        "other_cores": max(0.0, (now.busy_s - start.busy_s) / wall - own),
        "steal_cores": (now.steal_s - start.steal_s) / wall,
    }


def process_cpu_s(process: psutil.Process | None) -> float:
    """User + system CPU seconds of ``process`` (0 when it is None or gone)."""
    if process is None:
        return 0.0
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


@dataclass(frozen=True)
class ThreadCpu:
    cpu_s: float
    nice: int


def thread_cpu(pid: int) -> dict[int, ThreadCpu]:
    """CPU seconds and niceness of each thread of ``pid`` (Linux /proc; empty elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK")
    threads: dict[int, ThreadCpu] = {}
    task_dir = Path(f"/proc/{pid}/task")
    with contextlib.suppress(OSError):
        for entry in task_dir.iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()  # fields from the 3rd on
                utime, stime, nice = int(fields[11]), int(fields[12]), int(fields[16])
                threads[int(entry.name)] = ThreadCpu((utime + stime) / ticks, nice)
    return threads


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / BYTES_PER_MB


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_MB


def wait_for_quiet(max_wait_s: float, ours: Sequence[psutil.Process] = ()) -> dict[str, float]:
    """Wait (up to ``max_wait_s``) until processes other than this one and ``ours`` (servers it
    started) leave the CPU mostly idle. Returns the last window's figures: ``other_cores``,
    ``own_cores`` (this process), ``steal_cores``, ``wall_s`` (the window), ``waited_s`` and
    ``load_average_1min``."""
    started = time.perf_counter()
    deadline = started + max_wait_s
    while True:
        start = cpu_snapshot()
        ours_start = sum(process_cpu_s(p) for p in ours)
        time.sleep(QUIET_WINDOW_S)
        end = cpu_snapshot()
        wall = end.wall_s - start.wall_s
        own = (end.own_s - start.own_s) / wall
        servers = (sum(process_cpu_s(p) for p in ours) - ours_start) / wall
        other = max(0.0, (end.busy_s - start.busy_s) / wall - own - servers)
        if other <= QUIET_OTHER_CORES or time.perf_counter() >= deadline:
            return {
                "wall_s": wall,
                "own_cores": own,
                "other_cores": other,
                "steal_cores": (end.steal_s - start.steal_s) / wall,
                "waited_s": time.perf_counter() - started,
                "load_average_1min": os.getloadavg()[0],
            }


@contextlib.contextmanager
def track(name: str, sections: dict[str, dict[str, float]]) -> Iterator[None]:
    """Record a section's wall time, CPU use (own / others / steal) and memory afterwards."""
    start = cpu_snapshot()
    yield
    use = cpu_use_since(start)
    use.update(rss_mb=rss_mb(), peak_rss_mb=peak_rss_mb())
    sections[name] = use
    busy = use["other_cores"] > BUSY_OTHER_CORES
    print(
        f"  [{name}] {use['wall_s']:.1f} s; cores used: this process {use['own_cores']:.2f}, "
        f"other processes {use['other_cores']:.2f}, host steal {use['steal_cores']:.2f}; "
        f"RSS {use['rss_mb']:.0f} MB (peak {use['peak_rss_mb']:.0f} MB)"
        + ("  <-- other processes competed for the CPU" if busy else ""),
        flush=True,
    )


def print_sections(sections: dict[str, dict[str, float]]) -> None:
    heading(
        "Conditions per section (average cores busy; the machine has "
        f"{psutil.cpu_count()} logical CPUs)"
    )
    print(
        render_table(
            [
                "section",
                "wall s",
                "this process",
                "other processes",
                "host steal",
                "RSS after MB",
                "peak RSS MB",
            ],
            [
                [
                    name,
                    f"{u['wall_s']:.1f}",
                    f"{u['own_cores']:.2f}",
                    f"{u['other_cores']:.2f}",
                    f"{u['steal_cores']:.2f}",
                    f"{u['rss_mb']:.0f}",
                    f"{u['peak_rss_mb']:.0f}",
                ]
                for name, u in sections.items()
            ],
        )
    )


def dump_tasks_on_sigusr1() -> None:
    """``kill -USR1`` the bench: every task of the running loop prints where it waits (to
    stderr), for a run that seems stuck."""
    loop = asyncio.get_running_loop()

    def dump() -> None:
        for task in asyncio.all_tasks(loop):
            print(f"--- {task.get_name()}", file=sys.stderr)
            task.print_stack(limit=12, file=sys.stderr)
        sys.stderr.flush()

    loop.add_signal_handler(signal.SIGUSR1, dump)
