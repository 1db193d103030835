"""loudness-tts's own OpenAI-compatible server on a local Piper voice, for ``tools.stream_bench``.

Its server resolves a request's voice in its download catalogue only, while its ``TTS`` takes a
path to a ``.onnx``; here every request's voice resolves to the path given, so the peer speaks
with exactly our voice file and never downloads. Nothing else of the server is changed.

    .venv/bin/python -m tools.loudness_peer VOICE.onnx --port 8880 [--threads 2]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("voice", help="a Piper .onnx with its .onnx.json beside it")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8880)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    from loudness_tts import server
    from loudness_tts.engine import TTS

    tts = TTS(voice=args.voice, threads=args.threads, offline=True)
    local = tts._resolve(args.voice, None)  # type: ignore[no-untyped-call]

    def local_voice(voice: str | None = None, language: str | None = None) -> Any:
        return local

    server.find_voice = local_voice  # type: ignore[attr-defined]
    server.serve(args.host, args.port, tts=tts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
