"""The fake of Microsoft's Edge TTS service: ``tools/benchkit/fake_edge_service.py``, shared with
the tools."""

from __future__ import annotations

from tools.benchkit.fake_edge_service import (
    CLIENT_MESSAGE_TIMEOUT_S,
    FAKE_TRUSTED_CLIENT_TOKEN,
    RELEASE_TIMEOUT_S,
    REQUIRED_QUERY,
    SAMPLE_RATE_HZ,
    SERVICE_PATH,
    SHUTDOWN_TIMEOUT_S,
    TICKS_PER_SECOND,
    FakeEdgeService,
    FakeMode,
    ReceivedRequest,
)

__all__ = [
    "CLIENT_MESSAGE_TIMEOUT_S",
    "FAKE_TRUSTED_CLIENT_TOKEN",
    "FakeEdgeService",
    "FakeMode",
    "ReceivedRequest",
    "RELEASE_TIMEOUT_S",
    "REQUIRED_QUERY",
    "SAMPLE_RATE_HZ",
    "SERVICE_PATH",
    "SHUTDOWN_TIMEOUT_S",
    "TICKS_PER_SECOND",
]
