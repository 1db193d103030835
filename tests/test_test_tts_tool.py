"""``tools/test_tts.py``, the design's test tool, run in-process against a real app on a loopback
port (the session's loaded engines; Piper and espeak-ng, a reply or two each)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engines.config import ServiceConfig
from engines.synthesizer import SpeechSynthesizer
from tests.api_fixtures import ApiClient, api_client, with_api
from tools import test_tts

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAST = ["--engines", "espeak-ng", "--languages", "en", "--iterations", "1", "--no-progress"]
"""espeak-ng answers in milliseconds: the tool's plumbing, not the engines, is under test."""
INTERRUPT_AFTER_S = 3.0
SHORT_STRESS = ["--stress", "--connections", "2", "--duration", "2", "--think-time", "0.1,0.3"]


def url_of(client: ApiClient) -> str:
    return str(client.make_url("")).rstrip("/")


async def run_tool(*argv: str) -> int:
    return await test_tts.run(list(argv), environ={})


def read_report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return report


@pytest.fixture(scope="module")
async def service(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer
) -> AsyncIterator[str]:
    async with api_client(service_config, synthesizer) as client:
        yield url_of(client)


async def test_benchmark_prints_a_table_and_writes_percentiles_per_protocol(
    service: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    argv = ["--url", service, "--benchmark", "--iterations", "2", "--json", str(out)]
    status = await run_tool(*argv, "--engines", "piper,espeak-ng", "--languages", "en")

    assert status == 0
    printed = capsys.readouterr()
    assert "Benchmark: time to first audio" in printed.out
    assert "benchmark" in printed.err  # the progress bar
    report = read_report(out)
    assert {(c["engine"], c["language"]) for c in report["cases"]} == {
        ("piper", "en"),
        ("espeak-ng", "en"),
    }
    groups = {(g["protocol"], g["engine"]): g for g in report["benchmark"]["groups"]}
    # one voice speaks English with both engines: the OpenAI endpoint is measured once for it
    assert set(groups) == {
        ("ws", "piper"),
        ("ws", "espeak-ng"),
        ("http", "piper"),
        ("http", "espeak-ng"),
        ("openai", "auto"),
    }
    for group in groups.values():
        assert group["requests"] == 2 and group["errors"] == 0, group
        for figure in ("ttfa_ms", "total_ms"):
            stats = group[figure]
            assert 0 < stats["p50"] <= stats["p95"] <= stats["p99"] <= stats["max"], group
        assert group["audio_s_mean"] > 0.5
    for protocol in ("ws", "http", "openai"):
        assert report["metrics"][f"{protocol}_ttfa_p95_ms"] > 0
    assert report["metrics"]["errors"] == 0
    assert report["exit_status"] == 0
    samples = report["samples"]
    assert len(samples) == 10 and all(s["error"] is None for s in samples)
    for protocol, engine in (("ws", "piper"), ("http", "piper")):
        row = next(
            line
            for line in printed.out.splitlines()
            if line.split()[:4] == [protocol, engine, "en", "en-us-male-premium"]
        )
        assert row.split()[4] == "2", row  # n


async def test_stress_counts_refusals_with_their_retry_after(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer, tmp_path: Path
) -> None:
    one_session = with_api(service_config, max_sessions_total=1)
    out = tmp_path / "stress.json"
    async with api_client(one_session, synthesizer) as client:
        status = await run_tool("--url", url_of(client), *SHORT_STRESS, *FAST, "--json", str(out))

    assert status == 0  # no threshold: figures never fail the run
    (level,) = read_report(out)["stress"]["levels"]
    assert level["connections"] == 2
    assert level["refused"] >= 1, level  # the second session was told to come back later
    assert level["retry_after_s"]["n"] == level["refused"]
    assert level["retry_after_s"]["max"] == one_session.api.retry_after_s
    assert level["errors"] == 0, level["error_kinds"]
    assert level["requests"] > level["refused"]  # the first session spoke meanwhile
    assert level["ttfa_ms"]["n"] >= 1
    assert level["underruns"] >= 0 and level["largest_gap_ms"] >= 0


async def test_thresholds_decide_the_exit_status(
    service: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    met = ["--fail-over", "errors=0", "--fail-over", "ws_ttfa_p95_ms=60000"]
    assert await run_tool("--url", service, *FAST, *met) == 0
    assert "Thresholds" in capsys.readouterr().out

    out = tmp_path / "crossed.json"
    crossed = ["--fail-over", "ws_ttfa_p95_ms=0.001", "--fail-under", "requests=1"]
    assert await run_tool("--url", service, *FAST, *crossed, "--json", str(out)) == 1
    verdicts = {t["name"]: t["passed"] for t in read_report(out)["thresholds"]}
    assert verdicts == {"ws_ttfa_p95_ms": False, "requests": True}
    assert "CROSSED" in capsys.readouterr().out

    # a figure the run did not measure (no stress level here) never passes
    assert await run_tool("--url", service, *FAST, "--fail-over", "stress_ttfa_p95_ms=1e9") == 1
    assert "NOT MEASURED" in capsys.readouterr().out


async def test_an_unreachable_service_is_an_error_not_a_crash(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from agent.livekit_server import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert await run_tool("--url", url, *FAST) == 0
    assert await run_tool("--url", url, *FAST, "--fail-over", "errors=0") == 1
    assert "cannot list the voices" in capsys.readouterr().err


async def test_an_interrupted_run_still_reports_what_it_measured(
    service: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "interrupted.json"
    endless = ["--iterations", "100000", "--engines", "espeak-ng", "--languages", "en"]
    run = run_tool("--url", service, *endless, "--no-progress", "--json", str(out))
    with pytest.raises(TimeoutError):  # asyncio.wait_for cancels the run, as Ctrl-C would
        await asyncio.wait_for(run, INTERRUPT_AFTER_S)

    report = read_report(out)
    assert report["interrupted"] is True
    assert report["samples"] and all(s["error"] is None for s in report["samples"])
    assert "Benchmark: time to first audio" in capsys.readouterr().out


async def test_plot_writes_latency_cdfs_concurrency_and_underruns(
    service: str, tmp_path: Path
) -> None:
    plots = tmp_path / "plots"
    status = await run_tool(
        "--url", service, "--benchmark", *SHORT_STRESS, *FAST, "--plot", str(plots)
    )

    assert status == 0
    written = sorted(path.name for path in plots.iterdir())
    assert written == ["latency_cdf.png", "latency_vs_concurrency.png", "underruns.png"]
    for name in written:
        data = (plots / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, name


async def test_compare_runs_the_same_texts_against_a_peer_and_gives_ratios(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer, service: str, tmp_path: Path
) -> None:
    out = tmp_path / "compare.json"
    async with api_client(service_config, synthesizer) as peer:
        argv = ["--url", service, "--compare", url_of(peer), *FAST, "--json", str(out)]
        assert await run_tool(*argv) == 0

    compare = read_report(out)["compare"]
    assert compare["kind"] == "hive"  # another HIVE TTS: every protocol is compared
    assert {(g["protocol"], g["server"]) for g in compare["groups"]} == {
        (protocol, server)
        for protocol in ("ws", "http", "openai")
        for server in ("service", "peer")
    }
    for name in ("ws", "http", "openai"):
        assert compare["ratios"][f"compare_{name}_ttfa_ratio"] > 0
        assert compare["ratios"][f"compare_{name}_total_ratio"] > 0


async def test_rooms_without_livekit_are_skipped_with_the_reason(
    service: str, tmp_path: Path
) -> None:
    out = tmp_path / "rooms.json"
    assert await run_tool("--url", service, "--rooms", "2", *FAST, "--json", str(out)) == 0
    assert "LIVEKIT_URL" in read_report(out)["rooms"]["skipped"]


@pytest.mark.slow
async def test_quality_scores_whole_and_streamed_text(service: str, tmp_path: Path) -> None:
    out = tmp_path / "quality.json"
    argv = ["--url", service, "--quality", "--quality-texts", "1", *FAST, "--json", str(out)]
    assert await run_tool(*argv) == 0

    rows = {row["how"]: row for row in read_report(out)["quality"]}
    assert set(rows) == {"whole", "streamed"}
    for row in rows.values():
        assert row["engine"] == "espeak-ng" and row["texts"] == 1 and not row["errors"]
        assert 1.0 < row["dnsmos"] < 5.0
        assert 0.0 <= row["error_rate"] < 0.8, row["heard"]  # espeak-ng is basic, not garbage


async def test_a_websocket_left_idle_past_the_heartbeat_is_replaced(
    service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The benchmark interleaves cases, so each case's socket sits unread while the others run.
    The service closes a socket that misses its pings (aiohttp answers them only while
    reading): every WebSocket reply of a 21-case run against `make run` failed so. With a
    heartbeat shorter than the gap here, the tool must open a fresh socket and lose none."""
    import api.routes

    monkeypatch.setattr(api.routes, "WS_HEARTBEAT_S", 0.2)
    monkeypatch.setattr(test_tts, "IDLE_RECONNECT_S", 0.1)
    out = tmp_path / "idle.json"
    argv = ["--url", service, "--benchmark", "--iterations", "3", "--json", str(out)]
    status = await run_tool(
        *argv, "--engines", "piper,espeak-ng", "--languages", "en", "--no-progress"
    )
    assert status == 0
    samples = [s for s in read_report(out)["samples"] if s["protocol"] == "ws"]
    assert len(samples) == 6
    assert [s["error"] for s in samples] == [None] * 6
