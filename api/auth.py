"""Bearer keys: every route but /health, the studio page and its files, and LiveKit's webhook
(which LiveKit signs with its own key, checked by the route) needs one when keys are configured."""

from __future__ import annotations

import fnmatch
import hmac
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Middleware

from .errors import Handler, json_error

OPEN_PATHS = frozenset({"/health", "/livekit/webhook", "/"})
OPEN_PREFIXES = ("/static/",)
"""The studio page (``/``) and its files hold no secrets; the page asks for a key itself."""
ANONYMOUS = "anonymous"
KEY_OF_REQUEST = web.RequestKey("api_key", str)


def _matches(candidate: str, keys: tuple[str, ...]) -> bool:
    # compare against every key so timing does not reveal which one nearly matched
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate.encode(), key.encode())
    return found


def presented_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[len("bearer ") :].strip()
    return request.query.get("token")  # browsers cannot set headers on WebSockets


ROOM_PATHS = ("/rooms",)
"""What a room-scoped key may call (its rooms' routes only)."""


def make_auth_middleware(
    api_keys: tuple[str, ...],
    admin_keys: tuple[str, ...],
    room_keys: Mapping[str, tuple[str, ...]] | None = None,
) -> Middleware:
    scoped = tuple(room_keys or {})
    every_key = (*api_keys, *admin_keys, *scoped)

    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not every_key or request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
            request[KEY_OF_REQUEST] = ANONYMOUS
            return await handler(request)
        key = presented_key(request)
        if key is None or not _matches(key, every_key):
            return json_error(
                401,
                "unauthorized",
                "a valid API key is required: 'Authorization: Bearer KEY' (or ?token=KEY)",
                {"WWW-Authenticate": 'Bearer realm="hive-tts"'},
            )
        if _matches(key, scoped) and not _matches(key, (*api_keys, *admin_keys)):
            if not (request.path == "/rooms" or request.path.startswith("/rooms/")):
                return json_error(403, "forbidden", "a room key opens only its rooms' routes")
        request[KEY_OF_REQUEST] = key
        return await handler(request)

    return auth_middleware


def may_speak_in(
    request: web.Request,
    room: str,
    api_keys: tuple[str, ...],
    admin_keys: tuple[str, ...],
    room_keys: Mapping[str, tuple[str, ...]],
) -> bool:
    """An admin key, a room key whose patterns match ``room``, or no keys configured at all."""
    if is_admin(request, (*api_keys, *room_keys), admin_keys):
        return True
    patterns = room_patterns(request, room_keys)
    return patterns is not None and any(fnmatch.fnmatchcase(room, p) for p in patterns)


def room_patterns(
    request: web.Request, room_keys: Mapping[str, tuple[str, ...]]
) -> tuple[str, ...] | None:
    """The room name patterns of the request's room key; None if it is not one."""
    key = request.get(KEY_OF_REQUEST)
    if key is None:
        return None
    return next((patterns for k, patterns in room_keys.items() if _matches(key, (k,))), None)


def is_admin(request: web.Request, api_keys: tuple[str, ...], admin_keys: tuple[str, ...]) -> bool:
    if not api_keys and not admin_keys:
        return True  # no keys at all: a development server on loopback
    key = request.get(KEY_OF_REQUEST)
    return key is not None and _matches(key, admin_keys)
