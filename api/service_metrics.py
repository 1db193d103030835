"""Prometheus metrics of the service (the design's names, Prometheus conventions).

Each app owns its registry, so several apps (tests, workers) never share counters by accident.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from engines.backend import EngineState
from engines.health import HealthState
from engines.names import primary_language
from engines.registry import EngineRegistry
from engines.synthesizer import UtteranceResult

# around the 250 ms goal, finer below it
TTFA_BUCKETS_S = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.0,
    5.0,
)
DURATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
GAP_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


OTHER_LANGUAGE = "other"


class ServiceMetrics:
    def __init__(self) -> None:
        self._languages: frozenset[str] = frozenset()
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tts_synthesis_requests",
            "Synthesis requests by engine, language and outcome",
            ["engine", "language", "outcome"],
            registry=r,
        )
        self.ttfa = Histogram(
            "tts_ttft_duration_seconds",
            "Time from request to the first audio chunk",
            ["engine"],
            buckets=TTFA_BUCKETS_S,
            registry=r,
        )
        self.duration = Histogram(
            "tts_synthesis_duration_seconds",
            "Time from request to the last audio chunk",
            ["engine"],
            buckets=DURATION_BUCKETS_S,
            registry=r,
        )
        self.active_sessions = Gauge(
            "tts_active_sessions", "Synthesis sessions in progress", registry=r
        )
        self.quality = Gauge(
            "tts_audio_quality_score",
            "DNSMOS overall MOS estimate of sampled output",
            ["engine"],
            registry=r,
        )
        self.chunk_gap = Histogram(
            "tts_chunk_gap_seconds",
            "Wait for the next chunk beyond the audio already sent (0 when ahead of playback)",
            ["engine"],
            buckets=GAP_BUCKETS_S,
            registry=r,
        )
        self.fallbacks = Counter(
            "tts_fallbacks",
            "Engine failures that handed an utterance to the next engine",
            ["engine"],
            registry=r,
        )
        self.audio_seconds = Counter(
            "tts_audio_output_seconds", "Seconds of audio produced", ["engine"], registry=r
        )
        self.errors = Counter(
            "tts_request_errors",
            "Requests refused or failed, by error code",
            ["code"],
            registry=r,
        )

    def observe_utterance(self, result: UtteranceResult, outcome: str, duration_s: float) -> None:
        engine = result.engine or "none"
        self.requests.labels(engine, self.language_label(result.language), outcome).inc()
        if result.ttfa_ms is not None:
            self.ttfa.labels(engine).observe(result.ttfa_ms / 1000)
        self.duration.labels(engine).observe(duration_s)
        self.audio_seconds.labels(engine).inc(result.audio_duration_s)
        for fallback in result.fallbacks:
            self.fallbacks.labels(fallback["engine"]).inc()

    def know_languages(self, languages: Iterable[str]) -> None:
        """The languages the service speaks: the only ``language`` label values besides
        ``other``, however many language tags callers send."""
        self._languages = frozenset(primary_language(language) for language in languages)

    def language_label(self, language: str) -> str:
        primary = primary_language(language)
        return primary if primary in self._languages else OTHER_LANGUAGE

    def watch_engines(self, engines: EngineRegistry) -> None:
        """Export each engine's state, circuit and queue, read at every scrape."""
        self.registry.register(EngineStateCollector(engines))


class EngineStateCollector(Collector):
    """``tts_engine_state{engine,state}`` (1 for the engine's state, 0 for the others),
    ``tts_engine_circuit_open{engine}`` (1 while its circuit breaker benches it: cooling down
    or probing), ``tts_engine_queue_depth{engine}``. Read from the registry at scrape time, so
    a scrape never sees a stale state."""

    def __init__(self, engines: EngineRegistry) -> None:
        self._engines = engines

    def collect(self) -> Iterator[GaugeMetricFamily]:
        states = GaugeMetricFamily(
            "tts_engine_state", "Engine state (1 = current)", labels=["engine", "state"]
        )
        circuit = GaugeMetricFamily(
            "tts_engine_circuit_open",
            "1 while the engine's circuit breaker benches it after failures",
            labels=["engine"],
        )
        queue = GaugeMetricFamily(
            "tts_engine_queue_depth", "Synthesis waiting for the engine", labels=["engine"]
        )
        for row in self._engines.status():
            engine = str(row["engine"])
            for state in EngineState:
                current = 1.0 if row["state"] == state.value else 0.0
                states.add_metric([engine, state.value], current)
            health = row.get("health")
            benched = isinstance(health, dict) and health.get("state") != HealthState.HEALTHY
            circuit.add_metric([engine], 1.0 if benched else 0.0)
            depth = row.get("queue_depth")
            queue.add_metric([engine], float(depth) if isinstance(depth, int | float) else 0.0)
        yield states
        yield circuit
        yield queue


class WorkerMetrics(ServiceMetrics):
    """The service's metrics plus what a LiveKit worker adds, per room."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.rooms = Gauge("tts_rooms_active", "Rooms this worker is in", registry=r)
        self.room_queue = Gauge(
            "tts_room_queue_depth",
            "Utterances waiting to be spoken, per room",
            ["room"],
            registry=r,
        )
        self.room_tracks = Gauge(
            "tts_room_tracks", "Audio tracks published, per room", ["room"], registry=r
        )
        self.room_speaking = Gauge(
            "tts_room_speaking_tracks", "Tracks speaking now, per room", ["room"], registry=r
        )
        self.underruns = Counter(
            "tts_playback_underruns",
            "Times a track's audio ran out before the utterance ended",
            ["room"],
            registry=r,
        )
        self.worker_load = Gauge(
            "tts_worker_load", "Load reported to the LiveKit server (0..1)", registry=r
        )
        self.loop_lag = Histogram(
            "tts_room_loop_lag_seconds",
            "How much later than asked a room's event loop woke (probed once a second per room)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )

    def forget_room(self, room: str) -> None:
        for family in (self.room_queue, self.room_tracks, self.room_speaking, self.underruns):
            try:
                family.remove(room)
            except KeyError:
                pass
