"""One error family for the whole service.

Request errors describe what the caller asked for wrongly; engine errors describe a model that
failed. Both carry a stable ``code`` and an HTTP status so the edges (HTTP, WebSocket, data
channel, CLI) translate them once, in one place.
"""

from __future__ import annotations

from collections.abc import Iterable

from livekit.agents import APIError


class HiveTTSError(Exception):
    """Base of every error this service raises on purpose."""

    code = "internal_error"
    http_status = 500
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class RequestError(HiveTTSError):
    """The request itself is wrong; retrying it unchanged will not help."""

    code = "bad_request"
    http_status = 400


class EmptyTextError(RequestError):
    code = "empty_text"


class TextTooLongError(RequestError):
    code = "text_too_long"
    http_status = 413

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"text has {length} characters; the limit is {limit}")
        self.length = length
        self.limit = limit


def _listing(values: Iterable[str]) -> str:
    return ", ".join(sorted(values))


class UnknownVoiceError(RequestError):
    code = "unknown_voice"
    http_status = 404

    def __init__(self, voice_id: str, known: Iterable[str]) -> None:
        super().__init__(f"unknown voice_id {voice_id!r}; known voices: {_listing(known)}")
        self.voice_id = voice_id


class UnknownEngineError(RequestError):
    code = "unknown_engine"

    def __init__(self, engine: str, known: Iterable[str]) -> None:
        super().__init__(f"unknown engine {engine!r}; allowed values: {_listing(known)}")
        self.engine = engine


class UnknownLanguageError(RequestError):
    code = "unknown_language"
    http_status = 404

    def __init__(self, language: str, known: Iterable[str]) -> None:
        super().__init__(
            f"no voice speaks language {language!r}; known languages: {_listing(known)}"
        )
        self.language = language


class InvalidOptionError(RequestError):
    code = "invalid_option"


class CloningUnsupportedError(RequestError):
    """A voice clone was asked of an engine that cannot clone."""

    code = "cloning_unsupported"
    http_status = 422


class EngineUnavailableError(HiveTTSError):
    """No engine that could serve the request is loaded and healthy right now."""

    code = "engine_unavailable"
    http_status = 503
    retryable = True


class EngineError(APIError):
    """A model failed while synthesizing. Shaped like livekit-agents' ``APIError``."""

    def __init__(self, engine: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(f"{engine}: {message}", retryable=retryable)
        self.engine = engine
