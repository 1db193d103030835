"""OpenTelemetry spans per utterance: receive -> route -> each piece's synthesis -> first audio,
and in a room the first frame published.

In process, the spans go to the SDK's in-memory exporter. Out of process (``hive-tts say``, a
``hive-tts agent`` worker in a real room), they go over OTLP/HTTP, as they would to Jaeger, to a
small collector run by the test that decodes the protobuf requests with OpenTelemetry's own
message types.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from agent.livekit_server import DevServer
from engines.config import ServiceConfig
from engines.names import EngineName
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest
from engines.tracing import configure_tracing
from engines.voices import VoiceCatalog
from tests.api_fixtures import rooms_api
from tests.fakes import FlakyBackend
from tests.livekit_fixtures import Participant, WorkerProcess, room_name, settings_for

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TWO_PIECES = "The first sentence is spoken here. And the second one follows it."
EXPORT_TIMEOUT_S = 60.0


@dataclass
class Collector:
    """Receives OTLP/HTTP trace exports (``POST /v1/traces``, protobuf)."""

    spans: list[dict[str, object]] = field(default_factory=list)
    services: set[str] = field(default_factory=set)
    url: str = ""
    changed: threading.Event = field(default_factory=threading.Event)

    def named(self, name: str) -> list[dict[str, object]]:
        return [span for span in self.spans if span["name"] == name]

    def wait_for(self, name: str, timeout: float = EXPORT_TIMEOUT_S) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while not self.named(name):
            assert time.monotonic() < deadline, f"no {name} span exported: {self.spans}"
            self.changed.wait(0.2)
            self.changed.clear()
        return self.named(name)


def _handler(collector: Collector) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                for attribute in resource_spans.resource.attributes:
                    if attribute.key == "service.name":
                        collector.services.add(attribute.value.string_value)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        collector.spans.append(
                            {
                                "name": span.name,
                                "trace": span.trace_id.hex(),
                                "id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(),
                                "start": span.start_time_unix_nano,
                                "end": span.end_time_unix_nano,
                                "events": [event.name for event in span.events],
                                "attributes": {a.key: a.value for a in span.attributes},
                            }
                        )
            collector.changed.set()
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    return Handler


@pytest.fixture
def collector() -> Iterator[Collector]:
    found = Collector()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(found))
    found.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield found
    server.shutdown()
    server.server_close()


def otlp_env(collector: Collector, service: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export within a fraction of a second
    }


@pytest.fixture
def exporter(synthesizer: SpeechSynthesizer) -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    before = synthesizer.tracer
    synthesizer.tracer = provider.get_tracer("test")
    yield memory
    synthesizer.tracer = before
    provider.shutdown()


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


async def test_an_utterance_is_one_trace_from_receipt_to_its_last_piece(
    synthesizer: SpeechSynthesizer, exporter: InMemorySpanExporter
) -> None:
    utterance = synthesizer.synthesize(SynthesisRequest(TWO_PIECES, voice_id="en-us-male-premium"))
    async for _ in utterance:
        pass
    spans = exporter.get_finished_spans()
    [root] = by_name(spans, "tts.utterance")
    [route] = by_name(spans, "tts.route")
    pieces = by_name(spans, "tts.piece")
    assert root.context is not None and root.parent is None
    assert len(pieces) == utterance.result.pieces >= 2
    for child in (route, *pieces):
        assert child.parent is not None and child.parent.span_id == root.context.span_id
        assert child.context is not None and child.context.trace_id == root.context.trace_id
    attributes = dict(root.attributes or {})
    assert attributes["tts.voice_id"] == "en-us-male-premium"
    assert attributes["tts.outcome"] == "ok"
    assert list(attributes["tts.engines"]) == ["piper"]  # type: ignore[arg-type]
    assert attributes["tts.audio_s"] == pytest.approx(utterance.result.audio_duration_s, abs=1e-3)
    assert list((route.attributes or {})["tts.plan"])[0] == "piper"  # type: ignore[arg-type]
    assert [dict(p.attributes or {})["tts.engine"] for p in pieces] == ["piper"] * len(pieces)
    assert dict(pieces[0].attributes or {})["tts.piece.first"] is True
    # in order: received, routed, pieces synthesized one after the other, then the end
    assert root.start_time is not None and root.end_time is not None
    assert route.start_time == root.start_time
    assert route.end_time is not None and pieces[0].start_time is not None
    assert route.end_time <= pieces[0].start_time
    starts = [p.start_time for p in pieces]
    assert starts == sorted(starts)  # type: ignore[type-var]
    assert max(p.end_time or 0 for p in pieces) <= root.end_time
    [first] = [event for event in root.events if event.name == "first_audio"]
    ttfa_ms = dict(first.attributes or {})["tts.ttfa_ms"]
    assert ttfa_ms == pytest.approx(utterance.result.ttfa_ms)


async def test_a_failed_engine_is_a_failed_piece_span_then_the_next_engine_s(
    service_config: ServiceConfig, catalog: VoiceCatalog, synthesizer: SpeechSynthesizer
) -> None:
    real = {backend.name: backend for backend in synthesizer.registry.backends()}
    piper = FlakyBackend(real[EngineName.PIPER], fail_on={0})
    piper.load()
    flaky = SpeechSynthesizer(service_config, catalog, [piper, real[EngineName.ESPEAK]])
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    flaky.tracer = provider.get_tracer("test")
    utterance = flaky.synthesize(SynthesisRequest("The backup engine speaks now."))
    async for _ in utterance:
        pass
    spans = memory.get_finished_spans()
    failed, spoken = by_name(spans, "tts.piece")[:2]
    assert dict(failed.attributes or {})["tts.engine"] == "piper"
    assert failed.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in failed.events)
    assert dict(spoken.attributes or {})["tts.engine"] == "espeak-ng"
    assert spoken.status.status_code is not StatusCode.ERROR
    [root] = by_name(spans, "tts.utterance")
    assert dict(root.attributes or {})["tts.fallbacks"] == 1
    provider.shutdown()


async def test_an_utterance_never_listened_to_leaves_no_span_open(
    synthesizer: SpeechSynthesizer, exporter: InMemorySpanExporter
) -> None:
    utterance = synthesizer.synthesize(SynthesisRequest("Hello there.", engine="piper"))
    await utterance.aclose()  # never iterated: no trace started, nothing left open
    assert exporter.get_finished_spans() == ()


def test_tracing_is_off_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert configure_tracing("hive-tts-test") is None


def test_the_cli_exports_its_spans_over_otlp(collector: Collector, tmp_path: Path) -> None:
    env = {**os.environ, **otlp_env(collector, "hive-tts-say-test")}
    done = subprocess.run(
        [sys.executable, "-m", "hive_tts.cli", "say", TWO_PIECES, "-o", str(tmp_path / "a.wav")],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    [root] = collector.wait_for("tts.utterance")
    pieces = collector.named("tts.piece")
    assert len(pieces) >= 2 and all(p["parent"] == root["id"] for p in pieces)
    # one trace, the engines' own spans (livekit-agents' tts_request) nested in the pieces'
    others = [(s["name"], s["trace"]) for s in collector.spans if s["trace"] != root["trace"]]
    assert not others, others
    piece_ids = {p["id"] for p in pieces}
    engine_spans = collector.named("tts_request")
    assert engine_spans and all(s["parent"] in piece_ids for s in engine_spans)
    assert "first_audio" in root["events"]  # type: ignore[operator]
    assert collector.services == {"hive-tts-say-test"}


async def test_a_room_s_trace_ends_with_its_first_frame_published(
    collector: Collector,
    livekit_server: DevServer,
    agent_config_file: Path,
    service_config: ServiceConfig,
    synthesizer: SpeechSynthesizer,
    tmp_path: Path,
) -> None:
    """A worker with tracing on, in a real room: the utterance's trace starts when the request
    reached the worker and holds the moment its first frame went to the track."""
    worker = WorkerProcess(
        livekit_server,
        agent_config_file,
        tmp_path / "worker.log",
        env=otlp_env(collector, "hive-tts-agent-test"),
    )
    try:
        await asyncio.to_thread(worker.wait_registered)
        name = room_name("traced")
        listener = await Participant("listener").join(livekit_server, name)
        settings = settings_for(livekit_server)
        try:
            async with rooms_api(service_config, synthesizer, settings) as api:
                reply = await api.post(
                    f"/rooms/{name}/speak",
                    json={"text": TWO_PIECES, "language": "en", "reply_to": "listener"},
                )
                body = await reply.json()
                assert reply.status == 202, body
                await listener.wait_event(str(body["id"]), "finished", 120.0)
        finally:
            await listener.leave()
        [published] = await asyncio.to_thread(collector.wait_for, "tts.first_frame_published")
        roots = [s for s in collector.named("tts.utterance") if s["trace"] == published["trace"]]
        assert len(roots) == 1 and published["parent"] == roots[0]["id"]
        root = roots[0]
        assert root["start"] == published["start"]  # both from the request's arrival
        assert published["end"] <= root["end"]  # type: ignore[operator]
        attributes = published["attributes"]
        assert isinstance(attributes, dict)
        assert attributes["tts.room"].string_value == name
        assert attributes["tts.ttfa_ms"].double_value > 0
        assert "hive-tts-agent-test" in collector.services
        print("\nroom trace:", json.dumps([s["name"] for s in collector.spans]))
    finally:
        await asyncio.to_thread(worker.stop)
