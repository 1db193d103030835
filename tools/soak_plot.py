"""The soak's plot: six panels over time from a ``tools.soak`` report (the JSON it writes).

Run from the repository root to draw it again from a report::

    .venv/bin/python -m tools.soak_plot docs/soak/soak.json [--out docs/soak/soak.png]

Panels: RSS of the API and the worker (the drift windows shaded); their open descriptors and
threads; time to first audio p50 per traffic kind per minute; p95 and p99 the same way; errors
(client and server counted) and the worker's playback underruns, cumulative; CPU cores used by
each process and everyone else, with ``/health``'s active utterances and queue depth.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

S_PER_MIN = 60.0
FIGURE_SIZE_IN = (15.0, 13.0)
DPI = 100
PROCESS_COLORS = {
    "api": "tab:blue",
    "worker": "tab:orange",
    "livekit": "tab:green",
    "client": "tab:gray",
    "supervisor": "tab:olive",
}
OTHER_COLOR = "tab:red"
SHADE_ALPHA = 0.12
LINE_WIDTH = 1.4
LEGEND_HEADROOM = 1.6
"""The CPU panel's axes reach this far above the highest value, so its legend covers none."""


def _minutes(samples: Sequence[Mapping[str, Any]]) -> list[float]:
    return [float(s["t_s"]) / S_PER_MIN for s in samples]


def _series(
    samples: Sequence[Mapping[str, Any]], process: str, quantity: str
) -> tuple[list[float], list[float]]:
    times: list[float] = []
    values: list[float] = []
    for sample in samples:
        found = sample.get("processes", {}).get(process)
        if found is not None and found.get(quantity) is not None:
            times.append(float(sample["t_s"]) / S_PER_MIN)
            values.append(float(found[quantity]))
    return times, values


def _percent(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):+.1f} %"


def _rss_panel(ax: Axes, samples: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> None:
    windows = summary.get("windows_s", {})
    for name, color in (("baseline", "tab:green"), ("final", "tab:purple")):
        if name in windows:
            start, end = windows[name]
            ax.axvspan(start / S_PER_MIN, end / S_PER_MIN, color=color, alpha=SHADE_ALPHA)
    drift = summary.get("drift", {})
    for process in ("api", "worker"):
        times, values = _series(samples, process, "rss_mb")
        percent = drift.get(process, {}).get("rss_mb", {}).get("percent")
        ax.plot(
            times,
            values,
            color=PROCESS_COLORS[process],
            lw=LINE_WIDTH,
            label=f"{process} (drift {_percent(percent)})",
        )
    ax.set_title("RSS (shaded: baseline and final windows)")
    ax.set_ylabel("MB")
    ax.legend(loc="best", fontsize="small")


def _fds_panel(ax: Axes, samples: Sequence[Mapping[str, Any]]) -> None:
    for process in ("api", "worker"):
        color = PROCESS_COLORS[process]
        times, fds = _series(samples, process, "fds")
        ax.plot(times, fds, color=color, lw=LINE_WIDTH, label=f"{process} fds")
        times, threads = _series(samples, process, "threads")
        ax.plot(times, threads, color=color, lw=LINE_WIDTH, ls="--", label=f"{process} threads")
    ax.set_title("open file descriptors (solid) and threads (dashed)")
    ax.set_ylabel("count")
    ax.legend(loc="best", fontsize="small", ncols=2)


def _kind_colors(windows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    kinds = sorted({str(w["kind"]) for w in windows})
    palette = colormaps["tab10"]
    return {kind: palette(index % palette.N) for index, kind in enumerate(kinds)}


def _latency_panel(
    ax: Axes,
    windows: Sequence[Mapping[str, Any]],
    colors: Mapping[str, Any],
    keys: Sequence[tuple[str, str]],
    title: str,
) -> None:
    for kind, color in colors.items():
        mine = [w for w in windows if w["kind"] == kind]
        for key, style in keys:
            points = [
                ((float(w["start_s"]) + S_PER_MIN / 2) / S_PER_MIN, float(w[key]))
                for w in mine
                if w.get(key) is not None
            ]
            if not points:
                continue
            label = kind if style == keys[0][1] else None
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                color=color,
                ls=style,
                marker="o",
                ms=3,
                lw=LINE_WIDTH,
                label=label,
            )
    ax.set_yscale("log")
    ax.set_title(title)
    ax.set_ylabel("ms")
    if colors:
        ax.legend(loc="best", fontsize="x-small", ncols=2)


def _counter_series(
    samples: Sequence[Mapping[str, Any]], source: str, name: str | None
) -> list[float]:
    """Cumulative growth since the first sample: one counter, or every error code summed."""

    def reading(sample: Mapping[str, Any]) -> float:
        values = sample.get(source) or {}
        if name is None:
            return float(sum(values.values()))
        return float(values.get(name, 0.0))

    if not samples:
        return []
    first = reading(samples[0])
    return [reading(s) - first for s in samples]


def _errors_panel(ax: Axes, samples: Sequence[Mapping[str, Any]]) -> None:
    minutes = _minutes(samples)
    client = [float(s.get("errors", 0)) for s in samples]
    server = [
        a + w
        for a, w in zip(
            _counter_series(samples, "api_errors", None),
            _counter_series(samples, "worker_errors", None),
            strict=True,
        )
    ]
    underruns = _counter_series(samples, "worker_metrics", "tts_playback_underruns_total")
    ax.step(minutes, client, where="post", color=OTHER_COLOR, lw=LINE_WIDTH, label="client errors")
    ax.step(
        minutes,
        server,
        where="post",
        color="tab:brown",
        lw=LINE_WIDTH,
        ls="--",
        label="server-counted errors",
    )
    ax.step(
        minutes,
        underruns,
        where="post",
        color="tab:purple",
        lw=LINE_WIDTH,
        label="worker playback underruns",
    )
    ax.set_title("errors and underruns (cumulative)")
    ax.set_ylabel("count")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize="small")


def _cpu_panel(ax: Axes, samples: Sequence[Mapping[str, Any]]) -> None:
    highest = 1.0
    for process in ("api", "worker", "livekit", "client"):
        times, cores = _series(samples, process, "cores")
        highest = max([highest, *cores])
        ax.plot(times, cores, color=PROCESS_COLORS[process], lw=LINE_WIDTH, label=process)
    others = [
        (float(s["t_s"]) / S_PER_MIN, float(s["other_cores"]))
        for s in samples
        if s.get("other_cores") is not None
    ]
    ax.plot(
        [p[0] for p in others],
        [p[1] for p in others],
        color=OTHER_COLOR,
        lw=1.0,
        ls=":",
        label="other processes",
    )
    highest = max([highest, *(p[1] for p in others)])
    ax.set_title("CPU (cores) and /health")
    ax.set_ylabel("cores")
    ax.set_ylim(0, highest * LEGEND_HEADROOM)
    twin = ax.twinx()
    counts = 1.0
    for key, style in (("active_utterances", "-."), ("queue_depth", "--")):
        points = [
            (float(s["t_s"]) / S_PER_MIN, float(s["health"][key]))
            for s in samples
            if isinstance(s.get("health"), dict) and s["health"].get(key) is not None
        ]
        counts = max([counts, *(p[1] for p in points)])
        twin.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            color="black",
            ls=style,
            lw=1.0,
            label=f"/health {key}",
        )
    twin.set_ylabel("count")
    twin.set_ylim(0, counts * LEGEND_HEADROOM)
    lines, labels = ax.get_legend_handles_labels()
    twin_lines, twin_labels = twin.get_legend_handles_labels()
    ax.legend(
        lines + twin_lines, labels + twin_labels, loc="upper left", fontsize="x-small", ncols=2
    )


def title_of(report: Mapping[str, Any]) -> str:
    summary = report.get("summary", {})
    plan = report.get("plan") or {}
    load = plan.get("load")
    verdict = (
        "passed" if summary.get("passed") else "MISSED: " + "; ".join(summary.get("failures", []))
    )
    head = (
        f"HIVE TTS soak, {float(summary.get('duration_s', 0)) / S_PER_MIN:.0f} min"
        + (f" at {float(load):.0%} of capacity" if load is not None else "")
        + f": {summary.get('requests', 0)} requests, {summary.get('errors_total', 0)} errors"
    )
    return f"{head}\n{verdict}"[:400]


def plot_report(report: Mapping[str, Any], path: Path) -> None:
    """Draw the six panels of a soak report into ``path`` (PNG)."""
    samples: list[Mapping[str, Any]] = list(report.get("samples") or [])
    windows: list[Mapping[str, Any]] = list(report.get("windows") or [])
    summary: Mapping[str, Any] = report.get("summary") or {}
    figure = Figure(figsize=FIGURE_SIZE_IN)  # no pyplot: nothing global, no display
    axes = figure.subplots(3, 2, sharex=True)
    _rss_panel(axes[0][0], samples, summary)
    _fds_panel(axes[0][1], samples)
    colors = _kind_colors(windows)
    _latency_panel(axes[1][0], windows, colors, (("ttfa_p50_ms", "-"),), "time to first audio p50")
    _latency_panel(
        axes[1][1],
        windows,
        colors,
        (("ttfa_p95_ms", "-"), ("ttfa_p99_ms", ":")),
        "time to first audio p95 (solid) and p99 (dotted)",
    )
    _errors_panel(axes[2][0], samples)
    _cpu_panel(axes[2][1], samples)
    for ax in axes[2]:
        ax.set_xlabel("minutes since the soak began")
    for row in axes:
        for ax in row:
            ax.grid(True, alpha=0.3)
    figure.suptitle(title_of(report), fontsize="medium")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.soak_plot", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("report", type=Path, help="a tools.soak JSON report")
    parser.add_argument("--out", type=Path, default=None, help="PNG (default: beside the JSON)")
    args = parser.parse_args(argv)
    report = json.loads(args.report.read_text(encoding="utf-8"))
    out = args.out or args.report.with_suffix(".png")
    plot_report(report, out)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
