"""The tiny XTTS v2 of the tests: built once per session (``tools/benchkit/tiny_xtts.py`` says
how it is made) and loaded through the backend's real code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engines.config import EngineThreads
from engines.xtts_engine import XttsBackend
from tools.benchkit.tiny_xtts import (
    BUILT_IN_SPEAKERS,
    GENERATED_TOKENS_PER_SENTENCE,
    write_tiny_xtts,
)

__all__ = [
    "BUILT_IN_SPEAKERS",
    "GENERATED_TOKENS_PER_SENTENCE",
    "SAMPLES_PER_TOKEN_22K",
    "TEST_CHUNK_TOKENS",
    "TEST_LATENT_CACHE_SIZE",
    "tiny_xtts",
    "tiny_xtts_backend_for",
    "tiny_xtts_models_dir",
    "write_tiny_xtts",
]

SAMPLES_PER_TOKEN_22K = 1024
TEST_CHUNK_TOKENS = 8
"""Tokens per streamed chunk in the tests: several chunks per sentence."""
TEST_LATENT_CACHE_SIZE = 2


@pytest.fixture(scope="session")
def tiny_xtts_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding the tiny XTTS in ``xtts_v2/`` (written once per session)."""
    models_dir = tmp_path_factory.mktemp("xtts-models")
    write_tiny_xtts(models_dir)
    return models_dir


def tiny_xtts_backend_for(models_dir: Path, **options: Any) -> XttsBackend:
    backend = XttsBackend(
        models_dir,
        EngineThreads(workers=2),
        latent_cache_size=TEST_LATENT_CACHE_SIZE,
        stream_chunk_tokens=TEST_CHUNK_TOKENS,
        latency_chunk_tokens=TEST_CHUNK_TOKENS,
        **options,
    )
    backend.load()
    return backend


@pytest.fixture(scope="session")
def tiny_xtts(tiny_xtts_models_dir: Path) -> Iterator[XttsBackend]:
    """The backend loaded through its real code from the tiny weights, once per session."""
    backend = tiny_xtts_backend_for(tiny_xtts_models_dir)
    yield backend
    backend.close()
