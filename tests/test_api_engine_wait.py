"""When a new reply would wait longer than ``api.max_engine_wait_s`` for the engine that would
speak it, the request is refused at once (429 ``engine_busy`` with Retry-After) instead of
starting seconds late; the backlog in these tests is real work held on the engine's own pool."""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from engines.config import ServiceConfig, load_config
from engines.deadline_executor import DeadlineExecutor, PieceDue, piece_due
from engines.names import EngineName
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest
from tests.api_fixtures import (
    ApiClient,
    api_client,
    error_of,
    receive_json,
    services_of,
    until_final,
    with_api,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
HOLD_TIMEOUT_S = 30.0
LIMIT_S = 1.0


@contextlib.contextmanager
def engine_backlog(synthesizer: SpeechSynthesizer, seconds: float) -> Iterator[DeadlineExecutor]:
    """Piper's workers held busy and one piece waiting that the pool estimates at ``seconds``
    of synthesis per worker. The waiting piece is cancelled, never run, so the pool's learned
    cost is left as it was."""
    backend = synthesizer.registry.backend(EngineName.PIPER)
    assert backend is not None
    executor = backend._executor  # type: ignore[attr-defined]
    assert isinstance(executor, DeadlineExecutor)
    gate = threading.Event()
    holds = [executor.submit(gate.wait, HOLD_TIMEOUT_S) for _ in range(executor.max_workers)]
    characters = math.ceil(seconds * executor.max_workers / executor.seconds_per_char)

    def submit_waiting() -> Future[None]:
        piece_due(PieceDue(time.perf_counter(), starts_reply=True, characters=characters))
        return executor.submit(time.sleep, 0)

    waiting = contextvars.copy_context().run(submit_waiting)
    try:
        yield executor
    finally:
        waiting.cancel()
        gate.set()
        for hold in holds:
            hold.result(HOLD_TIMEOUT_S)


def test_the_expected_wait_is_the_queued_cost_per_worker(synthesizer: SpeechSynthesizer) -> None:
    with engine_backlog(synthesizer, 3.0) as executor:
        assert 3.0 <= executor.expected_wait_s() < 3.1
        backend = synthesizer.registry.backend(EngineName.PIPER)
        assert backend is not None and 3.0 <= backend.expected_wait_s < 3.1
    assert executor.expected_wait_s() == 0.0  # cancelled work counts for nothing


def test_the_expected_wait_is_at_least_how_long_the_oldest_reply_has_waited() -> None:
    """Under overload later pieces keep going first; a small queue can still mean a long wait,
    which the oldest waiting first piece shows."""
    executor = DeadlineExecutor(1)
    gate = threading.Event()
    try:
        executor.submit(gate.wait, HOLD_TIMEOUT_S)

        def submit_first() -> Future[None]:
            piece_due(PieceDue(time.perf_counter(), starts_reply=True, characters=1))
            return executor.submit(time.sleep, 0)

        waiting = contextvars.copy_context().run(submit_first)
        time.sleep(0.2)
        assert executor.expected_wait_s() >= 0.2  # queued cost alone: 0.01 s
        gate.set()
        waiting.result(HOLD_TIMEOUT_S)
        assert executor.expected_wait_s() == 0.0
    finally:
        gate.set()
        executor.shutdown()


async def test_health_shows_each_engines_expected_wait(
    api: ApiClient, synthesizer: SpeechSynthesizer
) -> None:
    with engine_backlog(synthesizer, 1.5):
        health = await (await api.get("/health")).json()
    backlogs = {e["engine"]: e.get("expected_wait_s") for e in health["engines"]}
    assert 1.5 <= backlogs["piper"] < 1.6
    assert backlogs["espeak-ng"] == 0.0


@pytest.fixture(scope="module")
async def api(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer
) -> AsyncIterator[ApiClient]:
    """The control API with the shipped limit on the engine wait."""
    shipped = load_config(REPO_ROOT / "config.yaml").api.max_engine_wait_s
    assert shipped == LIMIT_S
    config = with_api(service_config, max_engine_wait_s=shipped)
    async with api_client(config, synthesizer) as client:
        yield client


async def test_http_requests_get_429_engine_busy_with_retry_after(
    api: ApiClient, synthesizer: SpeechSynthesizer
) -> None:
    with engine_backlog(synthesizer, LIMIT_S + 2.5):
        refused = await api.post("/synthesize", json={"text": "Are you there?"})
        error = await error_of(refused, 429)
        assert refused.headers["Retry-After"] == "3"  # the excess over the limit, rounded up
        openai = await api.post(
            "/v1/audio/speech", json={"model": "tts-1", "input": "Hello.", "voice": "alloy"}
        )
        openai_error = await error_of(openai, 429)
        assert openai.headers["Retry-After"] == "3"
    assert error["code"] == openai_error["code"] == "engine_busy"
    assert "'piper'" in error["message"] and f"limit {LIMIT_S:g} s" in error["message"]
    again = await api.post("/synthesize", json={"text": "Are you there?"})
    assert again.status == 200, await again.text()


async def test_a_websocket_request_is_refused_and_the_connection_goes_on(
    api: ApiClient, synthesizer: SpeechSynthesizer
) -> None:
    async with api.ws_connect("/ws/synthesize") as ws:
        with engine_backlog(synthesizer, LIMIT_S + 0.5):
            await ws.send_json({"text": "Good morning.", "request_id": "busy"})
            refused = await receive_json(ws)
            await ws.send_json({"type": "text", "text": "Streaming words in"})
            refused_stream = await receive_json(ws)
        for message in (refused, refused_stream):
            assert message["type"] == "error" and message["code"] == "engine_busy"
            assert message["retry_after_s"] == 1 and message["is_final"] is True
        assert refused["request_id"] == "busy"
        await ws.send_json({"text": "Good morning.", "request_id": "later"})
        reply = await until_final(ws)
    assert reply.audio and reply.final["type"] == "final"
    assert reply.final["request_id"] == "later"


async def test_below_the_limit_or_without_one_requests_are_taken(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer
) -> None:
    request = SynthesisRequest("Still here.", voice_id="en-us-male-premium")
    async with api_client(with_api(service_config, max_engine_wait_s=None), synthesizer) as c:
        unlimited = services_of(c)
        with engine_backlog(synthesizer, 60.0):
            utterance = synthesizer.synthesize(request)
            assert unlimited.admit(utterance) is utterance
    async with api_client(with_api(service_config, max_engine_wait_s=LIMIT_S), synthesizer) as c:
        limited = services_of(c)
        with engine_backlog(synthesizer, LIMIT_S - 0.5):
            utterance = synthesizer.synthesize(request)
            assert limited.admit(utterance) is utterance
