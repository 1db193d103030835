"""OpenAPI 3.1 description of the control API, served at /openapi.json.

Replies are described as the routes write them (tests/test_api_schema_fuzz.py has schemathesis
check every status, content type and body against this document)."""

from __future__ import annotations

from typing import Any

from engines.engine_registry import engine_names

_ENGINE_NAME_REF = {"$ref": "#/components/schemas/EngineName"}
"""An engine's name: the registered engines' (``engines.engine_registry``), filled in when the
document is made (``openapi_spec``)."""
OPENAI_FORMATS = ["mp3", "opus", "wav", "pcm", "flac", "aac"]
AUDIO_MEDIA_TYPES = ["audio/mpeg", "audio/ogg", "audio/wav", "audio/flac", "audio/aac", "audio/pcm"]
"""What synthesis answers with per ``format``; ``audio/pcm`` carries ``rate`` and ``channels``
parameters, ``audio/ogg`` ``codecs=opus``."""
ROOM_NAME_MAX_CHARS = 128
LANGUAGE_CODE_PATTERN = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$"
"""What ``language`` may be (``engines.router``): "en", "pt-BR", "en_US"."""

_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_NUMBER = {"type": ["number", "null"]}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_SYNTHESIS_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "additionalProperties": False,
    "properties": {
        "text": {"type": "string", "description": "Text to speak (at most limits.max_text_chars)"},
        "voice_id": {"type": "string", "example": "en-us-male-premium"},
        "language": {"type": "string", "pattern": LANGUAGE_CODE_PATTERN, "example": "en"},
        "engine": _ENGINE_NAME_REF,
        "quality": {"enum": ["fast", "standard", "premium"]},
        "strategy": {"enum": ["auto", "manual", "quality_first", "speed_first"]},
        "speed": {"type": "number", "minimum": 0.5, "maximum": 2.0, "default": 1.0},
        "sample_rate": {"enum": [8000, 16000, 22050, 24000, 44100, 48000], "default": 48000},
        "format": {"enum": ["pcm16", "wav", "opus", "mp3", "flac", "aac"]},
        "enhance_audio": {"type": "boolean", "default": False},
        "normalize": {
            "type": "boolean",
            "default": True,
            "description": "speak numbers, dates, money, units and abbreviations as words",
        },
        "timings": {
            "type": "boolean",
            "default": False,
            "description": "when each word is spoken: 'words' messages on the WebSocket, "
            "'timings' in the reply of POST /synthesize",
        },
        "captions": {
            "enum": ["srt", "vtt"],
            "description": "a caption file of the reply, timed to its words ('captions' in the "
            "reply; the file itself with Accept: application/x-subrip or text/vtt)",
        },
        "request_id": {"type": ["string", "integer"]},
        "stream": {"type": "boolean", "default": True},
        "voice_clone_reference": {
            "type": "string",
            "description": "Base64 WAV, MP3 or OGG recording of the voice to clone (XTTS)",
        },
    },
}
_SYNTHESIS_RESULT_PROPERTIES: dict[str, Any] = {
    "engine": {**_NULLABLE_STRING, "description": "the engine that spoke first"},
    "engines": {"type": "array", "items": {"type": "string"}},
    "voice_id": {"type": "string"},
    "language": {"type": "string"},
    "ttfa_ms": {**_NULLABLE_NUMBER, "description": "time to first audio (ms)"},
    "audio_duration_s": {"type": "number"},
    "characters": {"type": "integer"},
    "pieces": {"type": "integer"},
    "chunks": {"type": "integer"},
    "fallbacks": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"engine": {"type": "string"}, "error": {"type": "string"}},
        },
    },
}
_SYNTHESIS_REPLY: dict[str, Any] = {
    "type": "object",
    "required": [
        "audio_data",
        "format",
        "sample_rate",
        "duration_s",
        *_SYNTHESIS_RESULT_PROPERTIES,
    ],
    "properties": {
        "audio_data": {"type": "string", "contentEncoding": "base64"},
        "format": {"enum": ["pcm", "wav", "opus", "mp3", "flac", "aac"]},
        "sample_rate": {"type": "integer", "description": "Hz"},
        "duration_s": {"type": "number"},
        **_SYNTHESIS_RESULT_PROPERTIES,
        "enhancement": {
            "type": "object",
            "description": "what enhance_audio measured and changed",
        },
        "timings": {
            "type": "array",
            "description": "each word and when it is heard (s from the start), with timings",
            "items": {
                "type": "object",
                "required": ["word", "start", "end"],
                "properties": {
                    "word": {"type": "string"},
                    "start": {"type": "number"},
                    "end": {"type": "number"},
                },
            },
        },
        "captions": {"type": "string", "description": "the SRT or WebVTT file, with captions"},
    },
}
_ENGINE_STATUS: dict[str, Any] = {
    "type": "object",
    "required": ["engine", "state", "detail", "available", "languages"],
    "properties": {
        "engine": _ENGINE_NAME_REF,
        "state": {"type": "string", "example": "ready"},
        "detail": {"type": "string"},
        "available": {"type": "boolean"},
        "languages": {"type": "array", "items": {"type": "string"}},
        "tier": {"type": "string"},
        "quality_mos_estimate": {"type": "number"},
        "description": {"type": "string"},
        "streaming": {"type": ["object", "null"]},
        "load_seconds": {"type": "number"},
        "health": {"type": ["object", "null"]},
        "queue_depth": {"type": "integer"},
        "expected_wait_s": {"type": "number"},
    },
}
_VOICE: dict[str, Any] = {
    "type": "object",
    "required": ["id", "name", "language", "tier", "available", "engines"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "language": {"type": "string"},
        "locale": _NULLABLE_STRING,
        "accent": _NULLABLE_STRING,
        "gender": _NULLABLE_STRING,
        "tier": {"type": "string"},
        "clone_capable": {"type": "boolean"},
        "available": {"type": "boolean"},
        "engines": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["engine", "available"],
                "properties": {
                    "engine": _ENGINE_NAME_REF,
                    "available": {"type": "boolean"},
                    "reason": _NULLABLE_STRING,
                    "binding": {"type": ["object", "null"]},
                    "label": _NULLABLE_STRING,
                    "measured": {"type": ["object", "null"]},
                },
            },
        },
    },
}
_VOICE_LISTING: dict[str, Any] = {
    "type": "object",
    "required": ["voices", "engines", "languages"],
    "properties": {
        "voices": {"type": "array", "items": {"$ref": "#/components/schemas/Voice"}},
        "engines": {"type": "array", "items": {"$ref": "#/components/schemas/EngineStatus"}},
        "languages": {"type": "array", "items": {"type": "string"}},
        "note": {"type": "string", "description": "a language only espeak-ng speaks"},
    },
}
_MEMORY: dict[str, Any] = {
    "type": "object",
    "required": ["rss_bytes", "percent", "system_available_bytes"],
    "properties": {
        "rss_bytes": {"type": "integer"},
        "percent": {"type": "number"},
        "system_available_bytes": {"type": "integer"},
    },
}
_MEMORY_REF = {"$ref": "#/components/schemas/MemoryUsage"}
_HEALTH: dict[str, Any] = {
    "type": "object",
    "required": [
        "status",
        "problems",
        "engines",
        "active_sessions",
        "active_utterances",
        "queue_depth",
        "uptime_s",
        "memory_usage",
        "livekit",
    ],
    "properties": {
        "status": {"enum": ["pass", "warn", "fail"]},
        "problems": {"type": "array", "items": {"type": "string"}},
        "engines": {"type": "array", "items": {"$ref": "#/components/schemas/EngineStatus"}},
        "active_sessions": {"type": "integer"},
        "active_utterances": {"type": "integer"},
        "queue_depth": {"type": "integer"},
        "uptime_s": {"type": "number"},
        "memory_usage": _MEMORY_REF,
        "livekit": {
            "type": "object",
            "required": ["configured", "workers", "agents_redispatched"],
            "properties": {
                "configured": {"type": "boolean"},
                "workers": {"type": "array", "items": {"type": "object"}},
                "agents_redispatched": {"type": "integer"},
            },
        },
    },
}
_HEALTH_REF = {"$ref": "#/components/schemas/Health"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _audio() -> dict[str, Any]:
    return {
        media_type: {"schema": {"type": "string", "format": "binary"}}
        for media_type in AUDIO_MEDIA_TYPES
    }


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {"description": "error", "content": _json(_ERROR_REF)} for status in statuses
    }


_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "HIVE TTS control API",
        "version": "0.1.0",
        "description": "Streaming multi-engine text-to-speech. Every route but /health and "
        "/livekit/webhook needs 'Authorization: Bearer KEY' (or ?token=KEY) when API keys are "
        "configured. Any route may answer 429 (rate_limited) when api.rate_limit is set.",
    },
    "components": {
        "schemas": {
            "Error": _ERROR,
            "SynthesisRequest": _SYNTHESIS_REQUEST,
            "SynthesisReply": _SYNTHESIS_REPLY,
            "EngineStatus": _ENGINE_STATUS,
            "Voice": _VOICE,
            "VoiceListing": _VOICE_LISTING,
            "MemoryUsage": _MEMORY,
            "Health": _HEALTH,
        },
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{"bearer": []}],
    "paths": {
        "/ws/synthesize": {
            "get": {
                "summary": "WebSocket streaming synthesis",
                "description": "Send SynthesisRequest objects (or {type: text}/{type: flush} "
                "for incremental text, {type: cancel}); receive {type: audio, audio_chunk "
                "(base64), sequence, sample_rate, format, request_id} messages, then one "
                "{type: final, is_final: true, engine, voice_id, ttfa_ms, audio_duration_s, "
                "characters}. Errors: {type: error, code, message, is_final: true}. A request "
                "that is not a WebSocket upgrade gets 400.",
                "responses": {
                    "101": {"description": "switching protocols"},
                    **_errors(400, 401, 429),
                },
            }
        },
        "/synthesize": {
            "post": {
                "summary": "Synthesize a whole text",
                "parameters": [
                    {"name": "enhance_audio", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "timings", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "captions", "in": "query", "schema": {"enum": ["srt", "vtt"]}},
                ],
                "requestBody": {
                    "required": True,
                    "content": _json({"$ref": "#/components/schemas/SynthesisRequest"}),
                },
                "responses": {
                    "200": {
                        "description": "base64 audio and a summary; with Accept: audio/wav the "
                        "audio bytes; with captions and Accept: text/vtt (or "
                        "application/x-subrip) the caption file",
                        "content": {
                            **_json({"$ref": "#/components/schemas/SynthesisReply"}),
                            **_audio(),
                            "text/vtt": {"schema": {"type": "string"}},
                            "application/x-subrip": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors(400, 401, 404, 413, 422, 429, 503),
                },
            }
        },
        "/v1/audio/speech": {
            "post": {
                "summary": "OpenAI-compatible speech (streamed body)",
                "requestBody": {
                    "required": True,
                    "content": _json(
                        {
                            "type": "object",
                            "required": ["input"],
                            "properties": {
                                "model": {"type": "string", "example": "tts-1"},
                                "input": {"type": "string"},
                                "voice": {"type": "string", "example": "alloy"},
                                "response_format": {"enum": OPENAI_FORMATS},
                                "speed": {"type": "number", "minimum": 0.5, "maximum": 2.0},
                                "instructions": {
                                    "type": "string",
                                    "description": "accepted; no engine here steers by it",
                                },
                            },
                        }
                    ),
                },
                "responses": {
                    "200": {"description": "audio, streamed as it is made", "content": _audio()},
                    **_errors(400, 401, 404, 413, 429, 503),
                },
            }
        },
        "/voices": {
            "get": {
                "summary": "The voice library with availability",
                "responses": {
                    "200": {
                        "description": "voices",
                        "content": _json({"$ref": "#/components/schemas/VoiceListing"}),
                    },
                    **_errors(401),
                },
            }
        },
        "/voices/{language}": {
            "get": {
                "summary": "Voices of one language",
                "parameters": [
                    {
                        "name": "language",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "voices",
                        "content": _json({"$ref": "#/components/schemas/VoiceListing"}),
                    },
                    **_errors(401, 404),
                },
            }
        },
        "/health": {
            "get": {
                "summary": "pass / warn / fail with engine states",
                "security": [],
                "responses": {
                    "200": {"description": "pass or warn", "content": _json(_HEALTH_REF)},
                    "503": {"description": "fail", "content": _json(_HEALTH_REF)},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "text exposition",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(401),
                },
            }
        },
        "/gc": {
            "post": {
                "summary": "Collect garbage (admin)",
                "responses": {
                    "200": {
                        "description": "memory before and after",
                        "content": _json(
                            {
                                "type": "object",
                                "required": [
                                    "collected_objects",
                                    "malloc_trim",
                                    "memory_before",
                                    "memory_after",
                                    "freed_bytes",
                                ],
                                "properties": {
                                    "collected_objects": {"type": "integer"},
                                    "malloc_trim": {"type": "boolean"},
                                    "memory_before": _MEMORY_REF,
                                    "memory_after": _MEMORY_REF,
                                    "freed_bytes": {"type": "integer"},
                                },
                            }
                        ),
                    },
                    **_errors(401, 403),
                },
            }
        },
        "/rooms/{room}/speak": {
            "post": {
                "summary": "Make the LiveKit agent speak in a room (dispatching it if needed)",
                "description": "Waits (up to 45 s) until the agent listens, dispatching again a "
                "job LiveKit dropped; 504 agent_not_joined when no worker took it. 503 "
                "livekit_not_configured without LIVEKIT_URL, LIVEKIT_API_KEY and "
                "LIVEKIT_API_SECRET.",
                "parameters": [
                    {
                        "name": "room",
                        "in": "path",
                        "required": True,
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": ROOM_NAME_MAX_CHARS,
                        },
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": _json(
                        {
                            "type": "object",
                            "required": ["text"],
                            "additionalProperties": False,
                            "properties": {
                                "text": {"type": "string"},
                                "id": {"type": ["string", "integer"]},
                                "language": {"type": "string"},
                                "voice_id": {"type": "string"},
                                "engine": {"type": "string"},
                                "quality": {"type": "string"},
                                "strategy": {"type": "string"},
                                "speed": {"type": "number"},
                                "mode": {"enum": ["queue", "interrupt"]},
                                "reply_to": {
                                    "type": "string",
                                    "description": "identity that receives tts.events",
                                },
                                "voice_clone_reference": {"type": "string"},
                                "normalize": {"type": "boolean", "default": True},
                            },
                        }
                    ),
                },
                "responses": {
                    "202": {
                        "description": "status 'accepted' once the agent lists the request, "
                        "else 'sent'",
                        "content": _json(
                            {
                                "type": "object",
                                "required": ["id", "room", "dispatched", "status"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "room": {"type": "string"},
                                    "dispatched": {"type": "boolean"},
                                    "status": {"enum": ["accepted", "sent"]},
                                },
                            }
                        ),
                    },
                    **_errors(400, 401, 403, 404, 413, 429, 502, 503, 504),
                },
            }
        },
        "/rooms": {
            "get": {
                "summary": "Rooms the agent is in, with its tracks",
                "responses": {
                    "200": {
                        "description": "the rooms",
                        "content": _json(
                            {
                                "type": "object",
                                "required": ["rooms"],
                                "properties": {
                                    "rooms": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["room", "agent_identity", "tracks"],
                                            "properties": {
                                                "room": {"type": "string"},
                                                "agent_identity": {"type": "string"},
                                                "participants": {"type": "integer"},
                                                "tracks": {
                                                    "type": "array",
                                                    "items": {"type": "object"},
                                                },
                                            },
                                        },
                                    }
                                },
                            }
                        ),
                    },
                    **_errors(401, 403, 502, 503),
                },
            }
        },
        "/livekit/webhook": {
            "post": {
                "summary": "LiveKit's webhooks (participant_left, room_started, room_finished): "
                "bring a lost agent back to its room",
                "description": "Signed by LiveKit with the API key (Authorization header); "
                "no service API key is needed. Point every LiveKit node's `webhook.urls` here. "
                "An unsigned or badly signed body gets 401 bad_webhook.",
                "security": [],
                "requestBody": {
                    "required": True,
                    "content": {"application/webhook+json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "200": {
                        "description": "the event's name",
                        "content": _json(
                            {
                                "type": "object",
                                "required": ["received"],
                                "properties": {"received": {"type": "string"}},
                            }
                        ),
                    },
                    **_errors(401, 413, 503),
                },
            }
        },
        "/rooms/{room}/token": {
            "post": {
                "summary": "A short-lived LiveKit token for a browser to join a room (the studio)",
                "description": "Any valid key gets a listener token (subscribe, send data such "
                "as tts.speak; no audio); role speaker (publishes audio) and a chosen identity "
                "need an admin key; a room key opens only its rooms. The agent is brought to "
                "the room first (as /rooms/{room}/speak does) unless agent is false. Tokens "
                "expire after 10 minutes; url is LIVEKIT_PUBLIC_URL when set.",
                "parameters": [
                    {
                        "name": "room",
                        "in": "path",
                        "required": True,
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": ROOM_NAME_MAX_CHARS,
                        },
                    }
                ],
                "requestBody": {
                    "required": False,
                    "content": _json(
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "role": {"enum": ["listener", "speaker"], "default": "listener"},
                                "identity": {"type": "string", "minLength": 1, "maxLength": 64},
                                "agent": {"type": "boolean", "default": True},
                            },
                        }
                    ),
                },
                "responses": {
                    "200": {
                        "description": "the LiveKit URL and a token for it",
                        "content": _json(
                            {
                                "type": "object",
                                "required": ["url", "token", "room", "identity", "role"],
                                "properties": {
                                    "url": {"type": "string"},
                                    "token": {"type": "string"},
                                    "room": {"type": "string"},
                                    "identity": {"type": "string"},
                                    "role": {"enum": ["listener", "speaker"]},
                                    "expires_in_s": {"type": "integer"},
                                    "agent_dispatched": {"type": "boolean"},
                                },
                            }
                        ),
                    },
                    **_errors(400, 401, 403, 404, 413, 429, 502, 503, 504),
                },
            }
        },
        "/": {
            "get": {
                "summary": "The studio page: voices, try them, the demo room, health",
                "security": [],
                "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
            }
        },
        "/static/{file}": {
            "get": {
                "summary": "The studio page's files (script, styles)",
                "security": [],
                "parameters": [
                    {
                        "name": "file",
                        "in": "path",
                        "required": True,
                        "schema": {
                            "type": "string",
                            "maxLength": 200,
                            "pattern": "^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$",
                            "example": "build/studio.js",
                        },
                    }
                ],
                "responses": {
                    "200": {
                        "description": "the file",
                        "content": {
                            media_type: {}
                            for media_type in (
                                "text/html",
                                "text/css",
                                "text/javascript",
                                "application/json",
                                "image/png",
                                "image/svg+xml",
                                "text/plain",
                            )
                        },
                    },
                    **_errors(404),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI",
                        "content": _json(
                            {"type": "object", "required": ["openapi", "info", "paths"]}
                        ),
                    },
                    **_errors(401),
                },
            }
        },
    },
}


def openapi_spec() -> dict[str, Any]:
    """The document as served: ``EngineName`` lists the engines registered now."""
    components = _DOCUMENT["components"]
    schemas = {**components["schemas"], "EngineName": {"type": "string", "enum": engine_names()}}
    return {**_DOCUMENT, "components": {**components, "schemas": schemas}}
