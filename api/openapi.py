"""OpenAPI 3.1 description of the control API, served at /openapi.json."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
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
    "properties": {
        "text": {"type": "string", "description": "Text to speak (at most limits.max_text_chars)"},
        "voice_id": {"type": "string", "example": "en-us-male-premium"},
        "language": {"type": "string", "example": "en"},
        "engine": {"enum": ["piper", "kokoro", "espeak-ng", "speecht5", "xtts", "edge-tts"]},
        "quality": {"enum": ["fast", "standard", "premium"]},
        "strategy": {"enum": ["auto", "manual", "quality_first", "speed_first"]},
        "speed": {"type": "number", "minimum": 0.5, "maximum": 2.0, "default": 1.0},
        "sample_rate": {"enum": [8000, 16000, 22050, 24000, 44100, 48000], "default": 48000},
        "format": {"enum": ["pcm16", "wav", "opus", "mp3", "flac"]},
        "enhance_audio": {"type": "boolean", "default": False},
        "request_id": {"type": "string"},
        "stream": {"type": "boolean", "default": True},
    },
}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {
            "description": "error",
            "content": {"application/json": {"schema": _ERROR_REF}},
        }
        for status in statuses
    }


OPENAPI_SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "HIVE TTS control API",
        "version": "0.1.0",
        "description": "Streaming multi-engine text-to-speech. Every route but /health needs "
        "'Authorization: Bearer KEY' (or ?token=KEY) when API keys are configured.",
    },
    "components": {
        "schemas": {"Error": _ERROR, "SynthesisRequest": _SYNTHESIS_REQUEST},
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
                "characters}. Errors: {type: error, code, message, is_final: true}.",
                "responses": {"101": {"description": "switching protocols"}, **_errors(401, 429)},
            }
        },
        "/synthesize": {
            "post": {
                "summary": "Synthesize a whole text",
                "parameters": [
                    {"name": "enhance_audio", "in": "query", "schema": {"type": "boolean"}}
                ],
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/SynthesisRequest"}
                        }
                    }
                },
                "responses": {
                    "200": {
                        "description": "base64 audio and a summary; with Accept: audio/wav the "
                        "audio bytes",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "audio_data": {"type": "string"},
                                        "sample_rate": {"type": "integer"},
                                        "duration_s": {"type": "number"},
                                        "engine": {"type": "string"},
                                        "voice_id": {"type": "string"},
                                        "ttfa_ms": {"type": "number"},
                                    },
                                }
                            },
                            "audio/wav": {},
                        },
                    },
                    **_errors(400, 401, 404, 413, 429, 503),
                },
            }
        },
        "/v1/audio/speech": {
            "post": {
                "summary": "OpenAI-compatible speech (streamed body)",
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["input"],
                                "properties": {
                                    "model": {"type": "string", "example": "tts-1"},
                                    "input": {"type": "string"},
                                    "voice": {"type": "string", "example": "alloy"},
                                    "response_format": {
                                        "enum": ["mp3", "opus", "wav", "pcm", "flac"]
                                    },
                                    "speed": {"type": "number"},
                                },
                            }
                        }
                    }
                },
                "responses": {"200": {"description": "audio"}, **_errors(400, 401, 413, 429)},
            }
        },
        "/voices": {
            "get": {
                "summary": "The voice library with availability",
                "responses": {"200": {"description": "voices"}},
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
                "responses": {"200": {"description": "voices"}, **_errors(404)},
            }
        },
        "/health": {
            "get": {
                "summary": "pass / warn / fail with engine states",
                "security": [],
                "responses": {
                    "200": {"description": "pass or warn"},
                    "503": {"description": "fail"},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text exposition"}},
            }
        },
        "/gc": {
            "post": {
                "summary": "Collect garbage (admin)",
                "responses": {
                    "200": {"description": "memory before and after"},
                    **_errors(401, 403),
                },
            }
        },
        "/rooms/{room}/speak": {
            "post": {
                "summary": "Make the LiveKit agent speak in a room (dispatching it if needed)",
                "description": "Waits (up to 45 s) until the agent listens, dispatching again a "
                "job LiveKit dropped; 504 agent_not_joined when no worker took it.",
                "parameters": [
                    {"name": "room", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["text"],
                                "properties": {
                                    "text": {"type": "string"},
                                    "id": {"type": "string"},
                                    "language": {"type": "string"},
                                    "voice_id": {"type": "string"},
                                    "engine": {"type": "string"},
                                    "quality": {"type": "string"},
                                    "speed": {"type": "number"},
                                    "mode": {"enum": ["queue", "interrupt"]},
                                    "reply_to": {
                                        "type": "string",
                                        "description": "identity that receives tts.events",
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "202": {
                        "description": "{id, room, dispatched, status}: status 'accepted' once "
                        "the agent lists the request, else 'sent'"
                    },
                    **_errors(400, 401, 502, 503, 504),
                },
            }
        },
        "/rooms": {
            "get": {
                "summary": "Rooms the agent is in, with its tracks",
                "responses": {"200": {"description": "{rooms: [...]}"}, **_errors(401, 503)},
            }
        },
        "/livekit/webhook": {
            "post": {
                "summary": "LiveKit's webhooks (participant_left, room_started, room_finished): "
                "bring a lost agent back to its room",
                "description": "Signed by LiveKit with the API key (Authorization header); "
                "no service API key is needed. Point every LiveKit node's `webhook.urls` here.",
                "requestBody": {
                    "required": True,
                    "content": {"application/webhook+json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "200": {"description": "{received: event name}"},
                    **_errors(401, 503),
                },
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}
        },
    },
}
