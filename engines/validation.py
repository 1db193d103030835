"""Turn pydantic validation errors into messages that name the file and the key."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from .errors import HiveTTSError


class ConfigError(HiveTTSError):
    code = "config_error"


def require_mapping(raw: object, source: Path, expected: str) -> dict[str, object]:
    """The top level of a YAML file must be a mapping; say what it should hold if not."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: the document must be a mapping ({expected}), not {type(raw).__name__}"
        )
    return raw


def describe(error: ValidationError, source: Path, prefix: str = "") -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        where = f"{prefix}key '{key}'" if key else (prefix.rstrip(", ") or "the document")
        lines.append(f"{source}: {where}: {item['msg']}")
    return "; ".join(lines)
