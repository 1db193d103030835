"""A real LiveKit server, real agent workers and real room participants for the tests:
``tools/benchkit/rooms.py``, shared with the tools that measure rooms."""

from __future__ import annotations

from tools.benchkit.rooms import (
    AGENT_JOIN_TIMEOUT_S,
    AUDIBLE_PEAK,
    EVENT_TIMEOUT_S,
    IDLE_LOAD,
    WORKER_START_TIMEOUT_S,
    Caption,
    Endpoint,
    LiveKitEndpoint,
    Participant,
    ReceivedTrack,
    WorkerProcess,
    dispatch_agent,
    room_name,
    running_workers,
    settings_for,
    start_server,
    token,
    wait_agent_ready,
)

__all__ = [
    "AGENT_JOIN_TIMEOUT_S",
    "AUDIBLE_PEAK",
    "Caption",
    "dispatch_agent",
    "Endpoint",
    "EVENT_TIMEOUT_S",
    "IDLE_LOAD",
    "LiveKitEndpoint",
    "Participant",
    "ReceivedTrack",
    "room_name",
    "running_workers",
    "settings_for",
    "start_server",
    "token",
    "wait_agent_ready",
    "WORKER_START_TIMEOUT_S",
    "WorkerProcess",
]
