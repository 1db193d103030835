"""The tiny SpeechT5 of the tests (``tools/benchkit/tiny_speecht5.py`` says how it is made), its
published-layout copy, and the session fixtures that build and load it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from engines.config import EngineThreads
from engines.speecht5_engine import SPEAKERS_FILE, TTS_DIR, VOCODER_DIR, SpeechT5Backend
from tools.benchkit.tiny_speecht5 import FIXTURE_SPEAKER_ROWS, build_tiny_speecht5

__all__ = [
    "FIXTURE_SPEAKER_ROWS",
    "build_tiny_speecht5",
    "copy_as_published_layout",
    "speecht5_backend_fixture",
    "speecht5_models_dir_fixture",
]


def copy_as_published_layout(models_dir: Path, target: Path) -> Path:
    """The tiny model of ``models_dir`` rewritten under ``target`` as the hub publishes the
    real one (and ``tools.fetch_models`` downloads it): ``pytorch_model.bin`` weights, tokenizer
    and feature-extractor files with no ``processor_config.json``."""
    import torch
    from transformers import SpeechT5ForTextToSpeech, SpeechT5HifiGan, SpeechT5Processor

    processor = SpeechT5Processor.from_pretrained(str(models_dir / TTS_DIR))
    processor.tokenizer.save_pretrained(str(target / TTS_DIR))
    processor.feature_extractor.save_pretrained(str(target / TTS_DIR))
    for model_class, folder in ((SpeechT5ForTextToSpeech, TTS_DIR), (SpeechT5HifiGan, VOCODER_DIR)):
        model = model_class.from_pretrained(str(models_dir / folder))
        model.config.save_pretrained(str(target / folder))
        torch.save(model.state_dict(), target / folder / "pytorch_model.bin")
    shutil.copyfile(models_dir / SPEAKERS_FILE, target / SPEAKERS_FILE)
    return target


# fixtures are named apart from their functions, so test modules import them without shadowing
@pytest.fixture(scope="session", name="speecht5_models_dir")
def speecht5_models_dir_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding the tiny SpeechT5, built once per test session."""
    return build_tiny_speecht5(tmp_path_factory.mktemp("speecht5-models"))


@pytest.fixture(scope="session", name="speecht5_backend")
def speecht5_backend_fixture(speecht5_models_dir: Path) -> Iterator[SpeechT5Backend]:
    """The backend loaded from the tiny model through its real loading code (deterministic)."""
    backend = SpeechT5Backend(
        speecht5_models_dir, EngineThreads(workers=1, intra_op_threads=1), deterministic=True
    )
    backend.load()
    assert backend.ready, backend.detail
    yield backend
    backend.close()
