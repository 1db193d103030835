"""How the tools print and save what they measured: tables, headings, ``--json``."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns as wide as their widest cell: headers left-aligned, cells right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line, rule, *body])


def heading(title: str) -> None:
    print(f"\n== {title}", flush=True)


def fmt(value: float | None, digits: int = 1) -> str:
    """``value`` with ``digits`` decimals; ``-`` for None or NaN (nothing measured)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def add_report_arguments(
    parser: argparse.ArgumentParser, *, wait_quiet_s: float, wait_quiet_help: str | None = None
) -> None:
    """The options every tool has: ``--json FILE`` and ``--wait-quiet SECONDS``."""
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=wait_quiet_s,
        metavar="SECONDS",
        help=(
            wait_quiet_help
            or "before starting, wait up to this long for other processes to leave the CPU idle"
        )
        + f" (default {wait_quiet_s:.0f})",
    )


def write_report(path: Path | None, report: dict[str, Any]) -> None:
    """Write ``report`` as JSON to ``path`` (nothing when None), and say so."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    print(f"figures written to {path}")
