"""SIGTERM during load: a real ``hive-tts serve`` process with WebSocket sessions speaking and
queued. Every request it accepted ends with its final message; new ones are refused with
``draining`` (or, once the server stops reading, not read at all: the close tells the client);
the sockets close with 1001 and the process exits 0."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType

from agent.livekit_server import free_port
from tests.test_api_server_process import REPO_ROOT, Server, start_serve, wait_until_healthy

SESSIONS = 3
LONG = (
    "This reply is long on purpose, so that the server is still speaking it when it is told "
    "to stop. It goes on about trains and platforms and the weather for a good while."
)
SHORT = "And this one waits its turn."
DRAIN_S = 40
CONFIG = f"""\
api:
  drain_timeout_s: {DRAIN_S}
  quality_sample_every: 0
  rate_limit: null
disabled_engines: [kokoro, xtts, speecht5, edge-tts]
voices_file: {REPO_ROOT / "voices.yaml"}
models_dir: {REPO_ROOT / "models"}
"""


@pytest.fixture
async def serving(tmp_path: Path) -> AsyncIterator[tuple[Server, asyncio.subprocess.Process]]:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    started = Server(free_port(), tmp_path / "serve.log")
    process = await start_serve(started, config)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_until_healthy(process, started, session)
        yield started, process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sigterm_finishes_what_was_accepted_then_exits(
    serving: tuple[Server, asyncio.subprocess.Process],
) -> None:
    server, process = serving
    url = server.url("/ws/synthesize").replace("http", "ws")
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(url) for _ in range(SESSIONS)]
        for n, ws in enumerate(sockets):
            await ws.send_json({"text": LONG, "request_id": f"long-{n}"})
            await ws.send_json({"text": SHORT, "request_id": f"short-{n}"})
        for ws in sockets:  # every session is speaking
            first = await ws.receive_json(timeout=120)
            assert first["type"] == "audio", first
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.0)
        await sockets[0].send_json({"text": SHORT, "request_id": "too-late"})
        for n, ws in enumerate(sockets):
            finals: dict[str, dict[str, object]] = {}
            closed_with: int | None = None
            while closed_with is None:
                message = await ws.receive(timeout=DRAIN_S + 30)
                if message.type is WSMsgType.TEXT:
                    body = message.json()
                    if body.get("is_final"):
                        finals[str(body.get("request_id"))] = body
                elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                    closed_with = ws.close_code
            for request_id in (f"long-{n}", f"short-{n}"):  # accepted: spoken to the end
                final = finals[request_id]
                assert final["type"] == "final" and final["cancelled"] is False, final
            if n == 0 and "too-late" in finals:  # read before the server stopped reading
                assert finals["too-late"]["code"] == "draining", finals
            assert set(finals) <= {f"long-{n}", f"short-{n}", "too-late"}
            assert closed_with == WSCloseCode.GOING_AWAY
        with pytest.raises(aiohttp.ClientConnectionError):  # no longer listening
            await session.get(server.url("/health"))
    assert await asyncio.wait_for(process.wait(), 30) == 0, server.log.read_text()
