"""Turn pydantic validation errors into messages that name the file and the key."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from .errors import HiveTTSError


class ConfigError(HiveTTSError):
    code = "config_error"


def describe(error: ValidationError, source: Path, prefix: str = "") -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        where = f"{prefix}key '{key}'" if key else prefix.rstrip(", ")
        lines.append(f"{source}: {where}: {item['msg']}")
    return "; ".join(lines)
