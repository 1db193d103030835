"""Piper split at its flow and vocoder and run window by window: the parts are cut once and
cached with checksums, the windows join into the same samples as a one-shot run, the words
survive with Piper's noise on (as in production), and a voice that cannot be split still speaks
whole and says so."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engines import piper_engine
from engines.audio import float_to_pcm16
from engines.config import WindowedSettings
from engines.onnx_split import SplitError, split_model
from engines.piper_engine import (
    MIN_WINDOWED_SNR_DB,
    PiperBackend,
    _Options,
    bundled_voice_dir,
    piper_feeds,
    snr_db,
)
from engines.voices import PiperBinding
from engines.windowed_model import FIRST_AUDIO, WHOLE_PIECES, window_bounds
from tests.transcriber import Transcriber, word_error_rate

VOICE = "en_US-joe-medium"
SENTENCE = "The translation for this room begins now, so please listen to every word of it."
LONG_TEXT = (
    "Good morning everyone, and welcome to the quarterly review, where we will look at the "
    "numbers from every region and decide what to do next."
)
MAX_WER = 0.1


def voice_path() -> Path:
    directory = bundled_voice_dir()
    assert directory is not None
    return directory / f"{VOICE}.onnx"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PiperBackend]:
    """Production settings (noise on), its split cached in a fresh directory."""
    loaded = PiperBackend(
        tmp_path_factory.mktemp("models"),
        WindowedSettings(workers=1, intra_op_threads=1, latency_intra_op_threads=2),
    )
    loaded.load()
    assert loaded.ready, loaded.detail
    yield loaded
    loaded.close()


def test_windows_cover_the_frames_once_and_grow() -> None:
    for plan in (FIRST_AUDIO, WHOLE_PIECES):
        for frames in (1, 5, plan.first, plan.first + 1, 100, 367, 2000):
            bounds = list(window_bounds(frames, plan))
            assert bounds[0][0] == 0 and bounds[-1][1] == frames
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
            # a remainder under half a window joins the window before it
            assert bounds[0][1] <= plan.first * 3 // 2
            assert max(end - start for start, end in bounds) <= plan.largest * 3 // 2
    assert [end - start for start, end in window_bounds(500)] == [20, 64, 416]
    assert list(window_bounds(500, WHOLE_PIECES)) == [(0, 500)]  # one window, no context


def test_the_voice_is_split_at_its_flow_and_vocoder_and_health_says_so(
    backend: PiperBackend,
) -> None:
    status = backend.streaming()
    assert status["within_piece"] is True
    assert status["voices"] == {VOICE: "windowed (/flow/16, /dec/10)"}
    assert backend.streams_within_piece


def test_split_parts_are_cached_with_checksums_and_rebuilt_when_damaged(tmp_path: Path) -> None:
    parts = split_model(voice_path(), tmp_path, ["/flow/", "/dec/"])
    # the cut is found from the graph: the flow reads the prior sample and the mask, the
    # vocoder the masked latent
    assert parts.stages[0].inputs == ("/Add_output_0", "/Cast_2_output_0")
    assert parts.stages[1].inputs == ("/Mul_7_output_0",)
    assert parts.audio_output == "output"
    manifest = json.loads(next(tmp_path.glob("*.split.json")).read_text())
    assert len(manifest["parts"]) == 3 and all(len(p["sha256"]) == 64 for p in manifest["parts"])

    built = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.onnx")}
    assert split_model(voice_path(), tmp_path, ["/flow/", "/dec/"]) == parts
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.onnx")} == built  # reused

    damaged = parts.stages[1].path
    damaged.write_bytes(damaged.read_bytes()[:1000])
    again = split_model(voice_path(), tmp_path, ["/flow/", "/dec/"])
    assert again == parts
    assert damaged.stat().st_size > 1000  # rebuilt in full


def test_processes_splitting_at_once_build_the_parts_once(tmp_path: Path) -> None:
    """A worker and a server starting together on an empty cache: one builds, the other waits
    and reuses its parts (each checks every part's SHA-256)."""
    script = (
        "import sys; from pathlib import Path; from engines.onnx_split import split_model; "
        "parts = split_model(Path(sys.argv[1]), Path(sys.argv[2]), ['/flow/', '/dec/']); "
        "print(parts.front.path)"
    )
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(voice_path()), str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = {run.communicate(timeout=120)[0].strip() for run in runs}
    assert all(run.returncode == 0 for run in runs)
    assert len(outputs) == 1
    assert split_model(voice_path(), tmp_path, ["/flow/", "/dec/"]).front.path == Path(
        outputs.pop()
    )
    assert not list(tmp_path.glob("*.partial"))


def test_a_graph_without_the_stage_cannot_be_split(tmp_path: Path) -> None:
    with pytest.raises(SplitError, match="no node named /vocoder/"):
        split_model(voice_path(), tmp_path, ["/vocoder/"])
    with pytest.raises(SplitError, match="feeds another module|not after"):
        split_model(voice_path(), tmp_path, ["/dec/", "/flow/"])


def test_windows_join_into_the_samples_of_a_one_shot_run_with_noise_on(
    backend: PiperBackend,
) -> None:
    """Same latent (the front's noise drawn once), decoded in one window and in growing
    windows: equal to within the stated tolerance, so window joins add no clicks."""
    loaded = backend._voices[VOICE]
    model = loaded.windowed
    assert model is not None
    ids = loaded.voice.phonemes_to_ids(loaded.voice.phonemize(LONG_TEXT)[0])
    options = _Options(VOICE, None, None, None, None)  # the voice's own noise scales
    latent = model.front(piper_feeds(loaded.voice, ids, options))
    assert latent.frames > 3 * FIRST_AUDIO.first
    one_shot = model.audio(latent, 0, latent.frames)
    windows = list(model.windows(latent))
    assert len(windows) >= 3
    assert windows[0].size == FIRST_AUDIO.first * 256
    joined = np.concatenate(windows)
    assert joined.size == one_shot.size == latent.frames * 256
    assert snr_db(one_shot, joined) >= MIN_WINDOWED_SNR_DB
    assert float(np.max(np.abs(one_shot - joined))) < 1e-2


def test_windowed_speech_matches_the_whole_model_without_noise(backend: PiperBackend) -> None:
    loaded = backend._voices[VOICE]
    assert loaded.windowed is not None
    ids = loaded.voice.phonemes_to_ids(loaded.voice.phonemize(SENTENCE)[0])
    quiet = _Options(VOICE, None, None, 0.0, 0.0)
    feeds = piper_feeds(loaded.voice, ids, quiet)
    whole = np.asarray(loaded.voice.session.run(None, feeds)[0], np.float32).reshape(-1)
    windowed = np.concatenate(list(loaded.windowed.windows(loaded.windowed.front(feeds))))
    assert snr_db(whole, windowed) >= MIN_WINDOWED_SNR_DB


@pytest.mark.parametrize("latency_critical", [False, True])
def test_windowed_speech_with_noise_is_the_words_asked_for(
    backend: PiperBackend, transcriber: Transcriber, latency_critical: bool
) -> None:
    tts = backend.create_tts(
        PiperBinding(model=VOICE), speed=1.0, latency_critical=latency_critical
    )
    blocks = list(tts._render(SENTENCE, threading.Event()))
    # a first piece streams window by window; a later one is collected whole anyway, so it is
    # one window without context to pay for
    assert len(blocks) >= 3 if latency_critical else len(blocks) == 1
    audio = np.concatenate(blocks)
    heard = transcriber.transcribe(float_to_pcm16(audio), 22_050)
    assert word_error_rate(SENTENCE, heard) <= MAX_WER, heard


def test_a_voice_that_cannot_be_split_speaks_whole_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transcriber: Transcriber
) -> None:
    monkeypatch.setattr(piper_engine, "WINDOWED_STAGES", ((("/vocoder/", 10),),))
    whole = PiperBackend(tmp_path, WindowedSettings(workers=1, intra_op_threads=1))
    whole.load()
    assert whole.ready, whole.detail
    status = whole.streaming()
    assert status["within_piece"] is False
    voices = status["voices"]
    assert isinstance(voices, dict)
    assert voices[VOICE].startswith("whole: /vocoder/: no node named /vocoder/")
    tts = whole.create_tts(PiperBinding(model=VOICE), speed=1.0)
    blocks = list(tts._render(SENTENCE, threading.Event()))
    assert len(blocks) == 1
    heard = transcriber.transcribe(float_to_pcm16(blocks[0]), 22_050)
    assert word_error_rate(SENTENCE, heard) <= MAX_WER, heard


def test_windowing_can_be_turned_off(tmp_path: Path) -> None:
    off = PiperBackend(tmp_path, WindowedSettings(workers=1, windowed=False))
    off.load()
    assert off.streaming() == {
        "within_piece": False,
        "voices": {VOICE: "whole: windowed synthesis is off (engines.piper.windowed)"},
    }
    assert not list(tmp_path.glob(".cache/piper-split/*"))
