"""Percentiles of measured samples and the summaries the tools print."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

MS_PER_S = 1000.0
P50 = 50.0
P95 = 95.0
P99 = 99.0
PERCENT = 100.0

PercentileMethod = Literal["linear", "nearest"]


def percentile(values: Sequence[float], q: float, method: PercentileMethod = "linear") -> float:
    """The ``q``-th percentile (0-100). ``linear`` interpolates between the two closest ranks
    (numpy's default); ``nearest`` takes the closest rank, ties to the even one."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q, method=method))


def percentile_or_none(values: Sequence[float], q: float) -> float | None:
    return percentile(values, q) if values else None


def summarize(values: Sequence[float]) -> dict[str, float]:
    """``n``, ``p50``, ``p95``, ``p99`` and ``max``; NaN for each figure when there is none."""
    if not values:
        return {"n": 0, "p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan}
    return {
        "n": len(values),
        "p50": percentile(values, P50),
        "p95": percentile(values, P95),
        "p99": percentile(values, P99),
        "max": max(values),
    }


def spread(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """p50, p95 and max, or three Nones when there is no value."""
    if not values:
        return None, None, None
    return percentile(values, P50), percentile(values, P95), max(values)
