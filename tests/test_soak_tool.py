"""``tools.soak``'s arithmetic and plot on synthetic samples: no processes, no network."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import pytest

from tools.soak import (
    MIX,
    TARGET_RSS_DRIFT_PERCENT,
    ProcessSample,
    RequestRecord,
    Sample,
    counter_delta,
    drift,
    drift_windows,
    jsonable,
    latency_windows,
    plan_traffic,
    read_metrics,
    scan_logs,
    summarize,
)
from tools.soak_plot import plot_report

THIRTY_MIN_S = 30 * 60.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def process(rss_mb: float, fds: int = 40, threads: int = 20) -> ProcessSample:
    return ProcessSample(pid=1, rss_mb=rss_mb, fds=fds, threads=threads, cpu_s=0.0, cores=0.5)


def samples_with_rss(
    duration_s: float, baseline_mb: float, final_mb: float, every_s: float = 10.0
) -> list[Sample]:
    """RSS at ``baseline_mb`` until the final window, then ``final_mb``; the worker flat."""
    _, (final_start, _) = drift_windows(duration_s)
    samples = []
    steps = int(duration_s // every_s)
    for step in range(steps + 1):
        t = step * every_s
        api_mb = final_mb if t >= final_start else baseline_mb
        samples.append(
            Sample(
                t_s=t,
                processes={"api": process(api_mb), "worker": process(500.0, fds=60)},
                health={"status": "pass", "queue_depth": step % 3, "answer_ms": 5.0},
                worker_metrics={"tts_playback_underruns_total": float(step // 60)},
                api_errors={"engine_busy": 0.0},
                worker_errors={},
                requests=step * 2,
            )
        )
    return samples


def records(count: int, kind: str = "ws", error_every: int = 0) -> list[RequestRecord]:
    made = []
    for index in range(count):
        record = RequestRecord(kind, "en", start_s=index * 3.0, characters=40)
        if error_every and index % error_every == 0:
            record.error = "timeout"
        else:
            record.ttfa_ms = float(index % 100 + 1)  # 1..100 ms
            record.audio_s = 2.0
        made.append(record)
    return made


def test_drift_windows_are_minutes_3_to_8_and_the_last_5_of_30_minutes() -> None:
    baseline, final = drift_windows(THIRTY_MIN_S)
    assert baseline == (180.0, 480.0)
    assert final == (1500.0, 1800.0)
    # a longer run keeps the baseline and the 5-minute final window
    assert drift_windows(3600.0) == ((180.0, 480.0), (3300.0, 3600.0))


def test_drift_windows_shrink_in_proportion_for_a_smoke_run() -> None:
    baseline, final = drift_windows(180.0)
    assert baseline == pytest.approx((18.0, 48.0))
    assert final == pytest.approx((150.0, 180.0))


def test_drift_compares_medians_of_the_two_windows_in_percent() -> None:
    points = [(float(t), 100.0) for t in range(0, 600, 10)]
    points += [(float(t), 104.0) for t in range(1500, 1810, 10)]
    points.append((200.0, 900.0))  # one outlier in the baseline does not move its median
    result = drift(points, THIRTY_MIN_S)
    assert result["baseline"] == 100.0
    assert result["final"] == 104.0
    assert result["change"] == pytest.approx(4.0)
    assert result["percent"] == pytest.approx(4.0)


def test_drift_without_samples_in_a_window_is_unknown() -> None:
    result = drift([(10.0, 100.0)], THIRTY_MIN_S)
    assert result["baseline"] is None and result["percent"] is None


def test_summary_passes_below_5_percent_drift_and_without_errors() -> None:
    samples = samples_with_rss(THIRTY_MIN_S, 400.0, 412.0)  # +3 %
    summary = summarize(samples, records(300), THIRTY_MIN_S, target_audio_s_per_s=0.5)
    assert summary["drift"]["api"]["rss_mb"]["percent"] == pytest.approx(3.0)
    assert summary["drift"]["worker"]["rss_mb"]["percent"] == pytest.approx(0.0)
    assert summary["drift"]["worker"]["fds"]["change"] == 0.0
    assert summary["errors_total"] == 0
    assert summary["failures"] == [] and summary["passed"]
    assert summary["underruns"]["worker_playback"] == 3.0  # 0 at the start, 3 at 30 min
    assert summary["health"]["queue_depth_max"] == 2
    assert summary["delivered_audio_s_per_s"] == pytest.approx(300 * 2.0 / THIRTY_MIN_S)


def test_summary_fails_on_drift_at_the_target_and_on_errors() -> None:
    grown = 400.0 * (1 + TARGET_RSS_DRIFT_PERCENT / 100)
    samples = samples_with_rss(THIRTY_MIN_S, 400.0, grown)
    summary = summarize(samples, records(100, error_every=10), THIRTY_MIN_S)
    assert summary["errors_total"] == 10
    assert summary["errors_by_code"] == {"timeout": 10}
    assert summary["kinds"]["ws"]["errors"] == 10
    assert not summary["passed"]
    assert any(f.startswith("api RSS drift +5.0 %") for f in summary["failures"])
    assert any("10 client errors" in f for f in summary["failures"])


def test_summary_fails_on_server_counted_errors_and_health_failures() -> None:
    samples = samples_with_rss(THIRTY_MIN_S, 400.0, 400.0)
    samples[-1].api_errors = {"engine_busy": 2.0}
    samples[5].health = {"error": "TimeoutError"}
    summary = summarize(samples, records(10), THIRTY_MIN_S)
    assert summary["server_errors"]["api"] == {"engine_busy": 2.0}
    assert summary["health"]["failures"] == 1
    assert len(summary["failures"]) == 2


def test_latency_percentiles_per_kind_and_per_minute() -> None:
    made = records(100)  # ttfa 1..100 ms, one request every 3 s: 20 per minute
    summary = summarize(samples_with_rss(300.0, 1.0, 1.0), made, 300.0)
    ttfa = summary["kinds"]["ws"]["ttfa_ms"]
    assert ttfa["count"] == 100
    assert ttfa["p50"] == pytest.approx(50.5)
    assert ttfa["p99"] == pytest.approx(99.01)
    assert ttfa["max"] == 100.0
    windows = latency_windows(made)
    assert [w["window"] for w in windows] == [0, 1, 2, 3, 4]
    assert all(w["requests"] == 20 for w in windows)
    assert windows[0]["ttfa_p50_ms"] == pytest.approx(10.5)  # 1..20


def test_errored_requests_do_not_count_in_latency() -> None:
    made = records(10, error_every=2)
    windows = latency_windows(made)
    assert windows[0]["errors"] == 5
    assert windows[0]["ttfa_p50_ms"] == pytest.approx(6.0)  # the odd ones: 2, 4, 6, 8, 10


def test_plan_offers_the_load_fraction_of_the_mix_capacity() -> None:
    costs = {kind.name: 0.1 for kind in MIX}
    costs["room"] = 0.3
    plan = plan_traffic(MIX, costs, usable_cores=2.0, load=0.7, min_rooms=3)
    room_share = next(k.share for k in MIX if k.name == "room")
    mix_cost = (1 - room_share) * 0.1 + room_share * 0.3
    assert plan.mix_cost_cpu_s_per_audio_s == pytest.approx(mix_cost)
    assert plan.capacity_streams == pytest.approx(2.0 / mix_cost)
    assert plan.target_audio_s_per_s == pytest.approx(0.7 * 2.0 / mix_cost)
    assert sum(k.audio_s_per_s for k in plan.kinds) == pytest.approx(plan.target_audio_s_per_s)
    # the CPU this asks for is the load's share of the usable cores
    cpu = sum(k.audio_s_per_s * k.cost_cpu_s_per_audio_s for k in plan.kinds)
    assert cpu == pytest.approx(0.7 * 2.0)
    assert plan.of("room").lanes == max(3, math.ceil(plan.of("room").audio_s_per_s / 0.6))
    assert all(k.lanes >= 1 for k in plan.kinds)


def test_counters_and_metrics_parsing() -> None:
    text = (
        "# TYPE tts_request_errors counter\n"
        'tts_request_errors_total{code="engine_busy"} 3.0\n'
        'tts_request_errors_total{code="timeout"} 1.0\n'
        "# TYPE tts_playback_underruns counter\n"
        'tts_playback_underruns_total{room="a"} 2.0\n'
        'tts_playback_underruns_total{room="b"} 5.0\n'
    )
    sums, errors = read_metrics(text)
    assert sums["tts_playback_underruns_total"] == 7.0
    assert errors == {"engine_busy": 3.0, "timeout": 1.0}
    assert counter_delta({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 5.0, "c": 1.0}) == {
        "b": 3.0,
        "c": 1.0,
    }


def test_plot_draws_every_panel_from_a_json_report(tmp_path: Path) -> None:
    samples = samples_with_rss(600.0, 400.0, 430.0)
    made = records(150) + records(40, kind="room") + records(20, kind="http_speech", error_every=7)
    summary = summarize(samples, made, 600.0)
    report = jsonable(
        {
            "plan": {"load": 0.7},
            "summary": summary,
            "windows": latency_windows(made),
            "samples": samples,
        }
    )
    report = json.loads(json.dumps(report))  # as read back from the file
    path = tmp_path / "soak.png"
    plot_report(report, path)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 20_000  # six panels with lines, not an empty canvas


def test_log_scan_counts_teardown_lines_apart(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text(
        "2026-12-01 21:33:43,211 WARNING livekit.agents: event loop blocked for 159ms\n"
        "2026-12-01 21:34:10,000 ERROR agent.room: playback failed\n"
        "Traceback (most recent call last):\n"  # belongs to the line above
        "2026-12-01 21:34:56,716 ERROR livekit: publisher data channel closed unexpectedly\n"
    )
    found = scan_logs({"worker": log}, until=datetime(2026, 12, 1, 21, 34, 56, 500_000))
    worker = found["worker"]
    assert worker["counts"] == {"loop_blocked": 1, "error": 1, "traceback": 1}
    assert worker["after_soak"] == {"error": 1}
    assert len(worker["examples"]) == 3
