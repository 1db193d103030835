"""Whether this worker is registered with LiveKit right now (``/worker`` and start-up lines).

livekit-agents emits ``worker_registered`` on every (re)registration and logs each failed
connection attempt before it retries; those two moments are the whole state. A worker whose
connection dropped is reported as not registered until it registers again, so a health check
never calls a worker that cannot get rooms ready.
"""

from __future__ import annotations

import logging
import threading
import time

from livekit.agents import AgentServer

logger = logging.getLogger(__name__)

SDK_LOGGER = "livekit.agents"
CONNECTION_FAILED_PREFIX = "failed to connect to livekit"
"""How livekit-agents words a lost or refused connection (then it retries)."""


class Registration:
    """Registered or not, with the worker id LiveKit gave and how often it reconnected."""

    def __init__(self, livekit_url: str = "") -> None:
        self.livekit_url = livekit_url
        self.registered = False
        self.worker_id: str | None = None
        self.registrations = 0
        self.connection_failures = 0
        self.since = time.time()
        self.last_error = ""
        self._lock = threading.Lock()
        self._filter = _ConnectionFailures(self)

    def watch(self, server: AgentServer) -> None:
        server.on("worker_registered", self._on_registered)
        logging.getLogger(SDK_LOGGER).addFilter(self._filter)

    def close(self) -> None:
        logging.getLogger(SDK_LOGGER).removeFilter(self._filter)

    def _on_registered(self, worker_id: str, *_: object) -> None:
        with self._lock:
            self.registered = True
            self.worker_id = worker_id
            self.registrations += 1
            self.since = time.time()
            self.last_error = ""
        # the line people and supervisors wait for (tests read it too)
        print(f"registered worker {worker_id}", flush=True)

    def connection_failed(self, message: str) -> None:
        with self._lock:
            if self.registered:
                self.since = time.time()
            self.registered = False
            self.connection_failures += 1
            self.last_error = message

    def to_dict(self) -> dict[str, object]:
        with self._lock:
            return {
                "registered": self.registered,
                "worker_id": self.worker_id,
                "livekit_url": self.livekit_url,
                "registrations": self.registrations,
                "connection_failures": self.connection_failures,
                "state_since": round(self.since, 3),
                "last_error": self.last_error,
            }


class _ConnectionFailures(logging.Filter):
    """Notes the SDK's "failed to connect" records; lets every record through."""

    def __init__(self, registration: Registration) -> None:
        super().__init__()
        self._registration = registration

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(CONNECTION_FAILED_PREFIX):
            self._registration.connection_failed(message)
        return True
