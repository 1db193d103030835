"""What leaves the service without secrets or server paths.

Access logs: an API key sent as ``?token=KEY`` (browsers' WebSockets cannot send headers) is
logged as ``token=<redacted>``, whoever runs the app (``hive-tts serve``, ``hive-tts dev``, an
``AppRunner``). Replies: absolute paths of this machine (a missing model file's) are shown
relative to the models directory, or by their last component; logs keep them whole."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

SECRET_PARAMETERS = ("token", "access_token", "api_key", "key")
_SECRET = re.compile(
    r"(?P<name>(?:^|[?&;])(?:" + "|".join(SECRET_PARAMETERS) + r")=)[^&;\s\"']*", re.IGNORECASE
)
REDACTED = "<redacted>"
ACCESS_LOGGER = "aiohttp.access"


def redact(text: str) -> str:
    """``text`` with the values of secret query parameters replaced."""
    return _SECRET.sub(lambda match: match.group("name") + REDACTED, text)


class RedactSecrets(logging.Filter):
    """Rewrites each record's message, and the string fields aiohttp adds to it (the request
    line), with secret query parameters redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        for name, value in list(vars(record).items()):
            if isinstance(value, str) and name not in ("msg", "name", "levelname", "pathname"):
                setattr(record, name, redact(value))
        return True


def redact_access_log() -> None:
    """Install the filter on aiohttp's access logger (once per process)."""
    access = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactSecrets) for f in access.filters):
        access.addFilter(RedactSecrets())


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s/'\"(),;:<>\[\]{}]+/)+[^\s/'\"(),;:<>\[\]{}]*")
_models_dirs: dict[str, str] = {}
"""Resolved models directories -> how replies name them (``models_dir``)."""


def name_models_dir(path: Path, shown: str = "models_dir") -> None:
    """Show paths under ``path`` as ``models_dir/...`` in replies."""
    _models_dirs[str(path.resolve())] = shown
    _models_dirs[str(path.absolute())] = shown


def _public_path(match: re.Match[str]) -> str:
    path = match.group(0)
    for root, shown in sorted(_models_dirs.items(), key=lambda item: -len(item[0])):
        if path == root or path.startswith(root + "/"):
            return shown + path[len(root) :]
    top = "/" + path.strip("/").split("/")[0]
    if not os.path.isdir(top):  # not this machine's path: a route such as /rooms/x/speak
        return path
    return ".../" + path.rstrip("/").rsplit("/", 1)[-1]


def scrub_paths(text: str) -> str:
    """``text`` with this machine's absolute paths hidden: a path under the models directory
    becomes ``models_dir/...``, any other its last component. Logs keep the whole path."""
    return _ABSOLUTE_PATH.sub(_public_path, text)


def scrubbed(value: object) -> object:
    """A JSON value with every string scrubbed (``scrub_paths``)."""
    if isinstance(value, str):
        return scrub_paths(value) if "/" in value else value
    if isinstance(value, dict):
        return {key: scrubbed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrubbed(item) for item in value]
    return value


def public_dumps(value: object) -> str:
    """``json.dumps`` for replies: no server paths."""
    return json.dumps(scrubbed(value))


def scrubbed_dict(value: dict[str, object]) -> dict[str, object]:
    """A JSON object with every string scrubbed (``scrub_paths``)."""
    return {key: scrubbed(item) for key, item in value.items()}
