"""Errors leave the service once, here: JSON bodies for HTTP, error messages for WebSockets."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from engines.errors import HiveTTSError

from .redaction import scrub_paths

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "too_many_sessions",
}


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": scrub_paths(message)}}


def json_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(error_body(code, message), status=status, headers=headers)


def ws_error(
    code: str, message: str, request_id: str | None = None, retry_after_s: int | None = None
) -> dict[str, object]:
    message_body: dict[str, object] = {
        "type": "error",
        "code": code,
        "message": scrub_paths(message),
    }
    if request_id is not None:
        message_body["request_id"] = request_id
    if retry_after_s is not None:
        message_body["retry_after_s"] = retry_after_s
    return message_body


class RetryLaterError(HiveTTSError):
    """The server is busy; the same request may succeed after ``retry_after_s`` seconds."""

    code = "busy"
    http_status = 429
    retryable = True

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooManySessionsError(RetryLaterError):
    code = "too_many_sessions"


class EngineBusyError(RetryLaterError):
    """A new reply would wait longer than ``api.max_engine_wait_s`` for the engine that would
    speak it, so it is refused at once instead of starting seconds late."""

    code = "engine_busy"


class ServerDrainingError(RetryLaterError):
    """The server is shutting down: it finishes what it accepted and takes nothing new."""

    code = "draining"
    http_status = 503


class QueueFullError(RetryLaterError):
    """A connection's or room's queue of waiting requests is at its limit."""

    code = "queue_full"


def retry_after(error: HiveTTSError) -> int | None:
    return error.retry_after_s if isinstance(error, RetryLaterError) else None


def response_for(error: HiveTTSError) -> web.Response:
    wait = retry_after(error)
    headers = {"Retry-After": str(wait)} if wait is not None else None
    return json_error(error.http_status, error.code, error.message, headers)


ERROR_COUNTER: web.AppKey[Callable[[str], None]] = web.AppKey("error_counter")
"""Where the error middleware reports each refusal's code (the app's metrics)."""


def _count(request: web.Request, code: str) -> None:
    counter = request.app.get(ERROR_COUNTER)
    if counter is not None:
        counter(code)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HiveTTSError as exc:
        _count(request, exc.code)
        return response_for(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.text or exc.reason
        if exc.status == 413:
            message = f"request body is larger than {request.client_max_size} bytes"
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        _count(request, code)
        return json_error(exc.status, code, message, headers)
    except Exception:
        logger.exception("unhandled error", extra={"path": request.path})
        _count(request, "internal_error")
        return json_error(500, "internal_error", "the server failed; the error was logged")
