"""The web studio at ``GET /``: a page to hear the service (voices, a place to try them, the demo
room, health), served from the files shipped in ``api/static/``.

The page and its assets need no API key (they hold none); what the page then calls does, and
the page asks for a key when the server says so. The script (``static/build/``) is bundled from
``web/`` by ``make``; without it the page says how to build it.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from api.errors import json_error

STATIC_DIR = Path(__file__).resolve().with_name("static")
INDEX_FILE = "index.html"
STATIC_PREFIX = "/static/"
CONTENT_TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".map": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain",
}
"""What is served from ``static/``, by suffix; any other file is not found."""
PAGE_HEADERS = {
    # the page's own origin for scripts and styles; LiveKit's signalling is another origin
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self' blob: mediastream:; connect-src 'self' ws: wss: http: https:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
ASSET_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
"""``no-cache`` revalidates (ETag / Last-Modified): a rebuilt bundle is picked up at once."""


def _static_file(relative: str) -> Path | None:
    """The file ``relative`` names inside ``STATIC_DIR``, or None (outside it, a directory,
    a suffix not served, a name the file system refuses)."""
    try:
        path = (STATIC_DIR / relative).resolve()
        if STATIC_DIR not in path.parents or not path.is_file():
            return None
    except (OSError, ValueError):  # an embedded NUL, a name too long
        return None
    return path if path.suffix in CONTENT_TYPES else None


async def studio_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(
        STATIC_DIR / INDEX_FILE,
        headers={**PAGE_HEADERS, **ASSET_HEADERS, "Content-Type": CONTENT_TYPES[".html"]},
    )


async def static_file(request: web.Request) -> web.StreamResponse:
    relative = request.match_info["file"]
    path = _static_file(relative)
    if path is None:
        return json_error(404, "not_found", f"no static file {relative!r}")
    return web.FileResponse(
        path, headers={**ASSET_HEADERS, "Content-Type": CONTENT_TYPES[path.suffix]}
    )


def add_studio_routes(app: web.Application) -> None:
    app.router.add_get("/", studio_page)
    app.router.add_get(STATIC_PREFIX + "{file:.+}", static_file)
