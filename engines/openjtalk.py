"""OpenJTalk, shared: its front end is one global dictionary and tagger that is not thread-safe,
so everything that calls it (Kokoro's Japanese G2P, word timings) holds ``LOCK``."""

from __future__ import annotations

import threading

LOCK = threading.Lock()


def morphemes(text: str) -> list[tuple[str, int]] | None:
    """``text``'s words as OpenJTalk reads them, each with its number of morae; None when
    pyopenjtalk is not installed."""
    try:
        import pyopenjtalk
    except ImportError:
        return None
    with LOCK:
        features = pyopenjtalk.run_frontend(text)
    return [(str(f["string"]), int(f["mora_size"])) for f in features]
