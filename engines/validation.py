"""Turn pydantic validation errors into messages that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from .errors import HiveTTSError


class ConfigError(HiveTTSError):
    code = "config_error"


def read_yaml_mapping(path: Path, what: str, expected: str) -> dict[str, object]:
    """Parse the YAML file ``path`` (a ``what``), whose top level must be a mapping."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: the document must be a mapping ({expected}), not {type(raw).__name__}"
        )
    return raw


def describe(error: ValidationError, source: Path, prefix: str = "") -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        where = f"{prefix}key '{key}'" if key else (prefix.rstrip(", ") or "the document")
        lines.append(f"{source}: {where}: {item['msg']}")
    return "; ".join(lines)
