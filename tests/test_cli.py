"""The `hive-tts` command as a newcomer runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from engines.audio import read_wav
from tests.transcriber import Transcriber, word_error_rate

CLI = [sys.executable, "-m", "hive_tts.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, check=False)


def test_say_writes_a_48_khz_wav_and_reports_engine_and_first_audio(
    tmp_path: Path, transcriber: Transcriber
) -> None:
    out = tmp_path / "hello.wav"
    text = "Hello from the command line. It works."
    done = run("say", text, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "spoke with piper" in done.stdout
    assert "time to first audio" in done.stdout
    pcm, rate = read_wav(out.read_bytes())
    assert rate == 48_000
    assert word_error_rate(text, transcriber.transcribe(pcm, rate)) <= 0.1


def test_say_honours_voice_engine_and_rate(tmp_path: Path) -> None:
    out = tmp_path / "ja.wav"
    done = run(
        "say",
        "こんにちは。",
        "--voice",
        "ja-jp-male-premium",
        "--sample-rate",
        "16000",
        "-o",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert "spoke with kokoro (voice ja-jp-male-premium)" in done.stdout
    _, rate = read_wav(out.read_bytes())
    assert rate == 16_000


def test_say_rejects_bad_input_with_a_clear_message(tmp_path: Path) -> None:
    done = run("say", "Hi", "--voice", "nobody", "-o", str(tmp_path / "x.wav"))
    assert done.returncode == 2
    assert "unknown_voice" in done.stderr and "en-us-male-premium" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.wav").exists()


def test_voices_json_lists_every_voice_with_engines_and_availability() -> None:
    done = run("voices", "--json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    voices = {v["id"]: v for v in listing["voices"]}
    assert len(voices) == 14
    david = {e["engine"]: e for e in voices["en-us-male-premium"]["engines"]}
    assert david["piper"]["available"] is True
    assert david["espeak-ng"]["available"] is True
    assert david["xtts"]["available"] is False and david["xtts"]["reason"]
    sarah = {e["engine"]: e for e in voices["en-us-female-premium"]["engines"]}
    assert sarah["piper"]["available"] is False
    assert "not installed" in sarah["piper"]["reason"]
    assert voices["ja-jp-female-premium"]["engines"][0]["engine"] == "kokoro"
    assert {e["engine"] for e in listing["engines"]} >= {"piper", "kokoro", "espeak-ng"}
    assert len(listing["languages"]) >= 100


def test_voices_filters_by_language() -> None:
    done = run("voices", "--language", "ja")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("ja-")]
    assert len(lines) == 2
