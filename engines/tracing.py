"""OpenTelemetry spans of each utterance, exported over OTLP when asked.

One trace per utterance: ``tts.utterance`` from the moment the request was received to its last
audio, with ``tts.route`` (validation, voice resolution and the engine plan), one ``tts.piece``
per piece synthesized (its engine; a failed try is a span with an error status, then the next
engine's), a ``first_audio`` event when the first chunk is handed over, and, in a room,
``tts.first_frame_published`` when the first 10 ms frame goes to the LiveKit track.

Tracing is off (OpenTelemetry's no-op tracer, no cost beyond a call) unless
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set: then
``configure_tracing`` installs a batching OTLP/HTTP exporter (Jaeger and the OpenTelemetry
Collector take it on port 4318). ``OTEL_SERVICE_NAME`` names the process in the traces.
"""

from __future__ import annotations

import os
import time

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
TRACER_NAME = "hive_tts"


def tracer() -> trace.Tracer:
    """The service's tracer: the installed provider's, or a no-op one."""
    return trace.get_tracer(TRACER_NAME)


def configure_tracing(default_service_name: str) -> TracerProvider | None:
    """Export spans over OTLP/HTTP when an endpoint is set in the environment; else nothing.
    Returns the provider (``shutdown()`` flushes it) or None."""
    if not any(os.environ.get(name) for name in ENDPOINT_VARIABLES):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    name = os.environ.get("OTEL_SERVICE_NAME") or default_service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


_EPOCH_OFFSET_NS = time.time_ns() - time.perf_counter_ns()


def epoch_ns(perf_counter_s: float) -> int:
    """A ``time.perf_counter()`` reading as the wall-clock nanoseconds spans are stamped in
    (one offset per process, so the same reading is always the same instant)."""
    return _EPOCH_OFFSET_NS + round(perf_counter_s * 1e9)
