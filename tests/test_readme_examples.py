"""The README's API examples work as written, against a live server."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from control_api import create_app
from engines.audio import read_wav
from engines.config import ServiceConfig
from engines.synthesizer import SpeechSynthesizer

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE_TIMEOUT_S = 120


def api_examples() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Control API") : text.index("## How streaming works")]
    return re.findall(r"```(bash|python)\n(.*?)```", section, flags=re.S)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
async def live_port(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer
) -> AsyncIterator[int]:
    app = create_app(service_config, synthesizer=synthesizer, quality_scoring=False)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield port
    await runner.cleanup()


async def run_example(kind: str, code: str, port: int, cwd: Path) -> str:
    code = code.replace("localhost:8003", f"127.0.0.1:{port}")
    if kind == "bash":
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        script = cwd / "example.py"
        script.write_text(code, encoding="utf-8")
        command = [sys.executable, str(script)]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), EXAMPLE_TIMEOUT_S)
    assert process.returncode == 0, (code, err.decode())
    return out.decode()


def test_readme_has_the_api_examples() -> None:
    kinds = [kind for kind, _ in api_examples()]
    assert kinds.count("bash") >= 4 and kinds.count("python") == 2


async def test_http_examples_run_and_produce_audio(live_port: int, tmp_path: Path) -> None:
    examples = [code for kind, code in api_examples() if kind == "bash"]
    outputs = [await run_example("bash", code, live_port, tmp_path) for code in examples]
    pcm, rate = read_wav((tmp_path / "hello.wav").read_bytes())
    assert rate == 48_000 and pcm.size > rate // 2
    engine, ttfa, loudness = outputs[1].split()
    assert engine == "piper" and float(ttfa) > 0 and float(loudness) < 0
    assert (tmp_path / "speech.mp3").read_bytes().startswith((b"ID3", b"\xff\xf3", b"\xff\xfb"))
    decoder = json.JSONDecoder()
    voices, end = decoder.raw_decode(outputs[3])
    health, end = decoder.raw_decode(outputs[3], end)
    assert voices["voices"][0]["language"] == "ja"
    assert health["status"] == "pass"
    assert "tts_ttft_duration_seconds_count" in outputs[3][end:]


async def test_websocket_examples_run(live_port: int, tmp_path: Path) -> None:
    streaming, incremental = [code for kind, code in api_examples() if kind == "python"]
    printed = await run_example("python", streaming, live_port, tmp_path)
    engine, ttfa, seconds, unit = printed.split()
    assert engine == "piper" and float(ttfa) > 0 and float(seconds) > 1.5 and unit == "s"
    printed = await run_example("python", incremental, live_port, tmp_path)
    chunks = int(printed.split()[0])
    assert chunks >= 2, printed


async def test_the_caption_file_example_runs(live_port: int, tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### When each word is spoken") : text.index("## Engine selection")]
    (code,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    (shown,) = re.findall(r"```text\n(.*?)```", section, flags=re.S)
    printed = await run_example("bash", code, live_port, tmp_path)
    cue = r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}"
    assert printed.startswith("WEBVTT\n\n") and re.search(cue, printed), printed
    # the same words as the README shows (their times differ a little from run to run)
    words = re.compile(r"<[^>]*>|" + cue + r"|WEBVTT")
    assert words.sub(" ", printed).split() == words.sub(" ", shown).split()
