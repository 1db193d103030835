"""``hive-tts``: speak text to a file, list voices, serve the API, run the LiveKit agent.

The environment is read here and only here: ``HIVE_TTS_CONFIG`` names the configuration file.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engines.audio import LIVEKIT_SAMPLE_RATE, wav_bytes
from engines.config import ServiceConfig, load_config
from engines.engine_registry import engine_names
from engines.errors import HiveTTSError
from engines.names import QualityTier, SelectionStrategy
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest, create_synthesizer
from engines.tracing import configure_tracing
from engines.voice_listing import voice_listing

from .paths import DEFAULT_CONFIG

CONFIG_ENV = "HIVE_TTS_CONFIG"
API_KEYS_ENV = "HIVE_TTS_API_KEYS"
ADMIN_KEYS_ENV = "HIVE_TTS_ADMIN_KEYS"
EXIT_USAGE = 2


def _config_path(given: str | None) -> Path | None:
    if given:
        return Path(given)
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hive-tts", description=__doc__)
    parser.add_argument(
        "--config", help=f"configuration file (default: ${CONFIG_ENV} or {DEFAULT_CONFIG})"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine activity")
    commands = parser.add_subparsers(dest="command", required=True)

    say = commands.add_parser("say", help="speak text into a WAV file")
    say.add_argument("text", help="the text to speak ('-' reads standard input)")
    say.add_argument("--voice", help="voice id, e.g. en-us-male-premium (see `hive-tts voices`)")
    say.add_argument("--language", help="language code, e.g. en, ja, pt-BR")
    say.add_argument("--engine", choices=engine_names())
    say.add_argument("--quality", choices=[q.value for q in QualityTier])
    say.add_argument("--strategy", choices=[s.value for s in SelectionStrategy])
    say.add_argument("--speed", type=float, default=1.0, help="0.5 .. 2.0")
    say.add_argument("--sample-rate", type=int, default=LIVEKIT_SAMPLE_RATE, help="Hz")
    say.add_argument("-o", "--output", default="hive-tts.wav", help="WAV file ('-' for stdout)")

    serve = commands.add_parser("serve", help="run the control API (HTTP + WebSocket)")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default loopback; any other needs API keys)",
    )
    serve.add_argument("--port", type=int, default=8003)
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve off loopback without API keys (only behind your own authentication)",
    )

    agent = commands.add_parser(
        "agent", help="run the LiveKit agent worker (LIVEKIT_URL, LIVEKIT_API_KEY/SECRET)"
    )
    agent.add_argument("--metrics-port", type=int, help="Prometheus port (default from config)")
    agent.add_argument(
        "--metrics-host", help="address the Prometheus port binds (default from config)"
    )
    agent.add_argument("--health-port", type=int, help="livekit-agents health port")
    agent.add_argument(
        "--no-supervise",
        dest="supervise",
        action="store_false",
        help="run the worker in this process (default: a supervisor restarts it on a crash "
        "and releases its rooms in LiveKit at once)",
    )

    dev = commands.add_parser(
        "dev", help="local LiveKit server + agent worker + control API, all on loopback"
    )
    dev.add_argument("--port", type=int, default=8003, help="control API port")
    dev.add_argument("--livekit-port", type=int, default=7880, help="LiveKit server port")
    dev.add_argument("--room", default="hive-demo", help="demo room to open")

    cluster = commands.add_parser(
        "cluster",
        help="Redis + several LiveKit nodes + a worker per node + control API, on loopback",
    )
    cluster.add_argument("--port", type=int, default=8003, help="control API port")
    cluster.add_argument("--nodes", type=int, default=2, help="LiveKit nodes (one worker each)")
    cluster.add_argument("--room", default="hive-demo", help="demo room to open")

    voices = commands.add_parser("voices", help="list voices with their engines")
    voices.add_argument("--language", help="only voices of this language")
    voices.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


async def _with_synthesizer(config: ServiceConfig, warm_up: bool) -> SpeechSynthesizer:
    synthesizer = create_synthesizer(config)
    await synthesizer.start(warm_up=warm_up)
    return synthesizer


async def _say(config: ServiceConfig, args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    synthesizer = await _with_synthesizer(config, warm_up=False)
    try:
        started = time.perf_counter()
        utterance = synthesizer.synthesize(
            SynthesisRequest(
                text=text,
                voice_id=args.voice,
                language=args.language,
                engine=args.engine,
                quality=args.quality,
                strategy=args.strategy,
                speed=args.speed,
                sample_rate=args.sample_rate,
            )
        )
        audio = await utterance.collect()
        total_ms = (time.perf_counter() - started) * 1000
    finally:
        await synthesizer.aclose()
    data = wav_bytes(audio.pcm, audio.sample_rate)
    if args.output == "-":
        sys.stdout.buffer.write(data)
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_bytes(data)
    result = utterance.result
    spoke = " then ".join(result.engines)
    print(
        f"spoke with {spoke} (voice {result.voice_id}); time to first audio "
        f"{result.ttfa_ms:.1f} ms; {result.audio_duration_s:.2f} s of audio at "
        f"{audio.sample_rate} Hz in {total_ms:.0f} ms"
        + (f"; fallbacks: {result.fallbacks}" if result.fallbacks else "")
        + ("" if args.output == "-" else f"; wrote {args.output}"),
        file=sys.stderr if args.output == "-" else sys.stdout,
    )
    return 0


def _engine_cell(row: dict[str, Any]) -> str:
    """``kokoro (Kokoro, Japanese voice style jf_alpha, accented)``, ``piper (unavailable)``."""
    label = f" ({row['label']})" if row.get("label") else ""
    missing = "" if row["available"] else " (unavailable)"
    return f"{row['engine']}{label}{missing}"


async def _voices(config: ServiceConfig, args: argparse.Namespace) -> int:
    synthesizer = await _with_synthesizer(config, warm_up=False)
    try:
        listing = voice_listing(synthesizer, args.language)
    finally:
        await synthesizer.aclose()
    if args.json:
        print(json.dumps(listing, ensure_ascii=False, indent=2))
        return 0
    for voice in listing["voices"]:
        engines = ", ".join(_engine_cell(e) for e in voice["engines"])
        ready = "ready" if voice["available"] else "NOT AVAILABLE"
        print(f"{voice['id']:24} {voice['name']:8} {voice['locale']:6} {ready:14} {engines}")
    print()
    for engine in listing["engines"]:
        print(f"{engine['engine']:10} {engine['state']:14} {engine['detail']}")
    return 0


def _with_env_keys(config: ServiceConfig) -> ServiceConfig:
    """API keys from ``$HIVE_TTS_API_KEYS`` / ``$HIVE_TTS_ADMIN_KEYS`` (comma-separated)."""
    update: dict[str, tuple[str, ...]] = {}
    for variable, field in ((API_KEYS_ENV, "api_keys"), (ADMIN_KEYS_ENV, "admin_keys")):
        keys = tuple(k.strip() for k in os.environ.get(variable, "").split(",") if k.strip())
        if keys:
            update[field] = keys
    if not update:
        return config
    return config.model_copy(update={"api": config.api.model_copy(update=update)})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another name or every address ("", "0.0.0.0", "::"): assume reachable


def _serve(config: ServiceConfig, args: argparse.Namespace) -> int:
    # refused before anything loads: an open API on the network is a mistake, not a default
    keys = config.api.api_keys or config.api.admin_keys
    if not keys and not is_loopback(args.host) and not args.insecure_no_auth:
        print(
            f"hive-tts: keys_required: refusing to serve on {args.host} without API keys; set "
            f"api.api_keys in the configuration or ${API_KEYS_ENV}, or pass "
            "--insecure-no-auth when your own authentication is in front",
            file=sys.stderr,
        )
        return EXIT_USAGE

    from aiohttp import web

    from api.rooms import LiveKitSettings
    from control_api import create_app

    print(
        f"HIVE TTS control API on http://{args.host}:{args.port} "
        f"(WebSocket ws://{args.host}:{args.port}/ws/synthesize)",
        flush=True,
    )
    livekit = LiveKitSettings.from_env(config.agent.agent_name)
    app = create_app(config, livekit=livekit)
    web.run_app(app, host=args.host, port=args.port, print=None, handle_signals=True)
    return 0


def _agent(config: ServiceConfig, args: argparse.Namespace, argv: Sequence[str]) -> int:
    from agent.supervisor import LiveKitAccess, Supervisor, die_with_supervisor
    from agent.worker import run_worker

    url = os.environ.get("LIVEKIT_URL", "")
    if args.supervise:
        key = os.environ.get("LIVEKIT_API_KEY", "")
        secret = os.environ.get("LIVEKIT_API_SECRET", "")
        access = LiveKitAccess(url, key, secret) if url and key and secret else None
        child = [sys.executable, "-m", "hive_tts.cli", *argv, "--no-supervise"]
        return Supervisor(child, access).run()
    die_with_supervisor()
    return asyncio.run(run_worker(with_agent_flags(config, args), url))


def with_agent_flags(config: ServiceConfig, args: argparse.Namespace) -> ServiceConfig:
    """``config`` with the ``agent`` flags given on the command line in place of its values."""
    update: dict[str, int | str] = {}
    if args.metrics_host is not None:
        update["metrics_host"] = args.metrics_host
    if args.metrics_port is not None:
        update["metrics_port"] = args.metrics_port
    if args.health_port is not None:
        update["health_port"] = args.health_port
    if not update:
        return config
    return config.model_copy(update={"agent": config.agent.model_copy(update=update)})


def _dev(config: ServiceConfig, args: argparse.Namespace) -> int:
    from hive_tts.dev import run_dev

    return run_dev(
        config, args.config, port=args.port, livekit_port=args.livekit_port, room=args.room
    )


def _cluster(config: ServiceConfig, args: argparse.Namespace) -> int:
    from hive_tts.dev import run_cluster

    return run_cluster(config, args.config, port=args.port, nodes=args.nodes, room=args.room)


TRACED_COMMANDS = {
    "serve": "hive-tts-api",
    "agent": "hive-tts-agent",
    "dev": "hive-tts-dev",
    "say": "hive-tts-say",
}
"""Commands that export utterance spans when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, and the
service name they use unless ``OTEL_SERVICE_NAME`` gives one (``engines.tracing``)."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = _with_env_keys(load_config(_config_path(args.config)))
        if args.command in TRACED_COMMANDS:  # spans over OTLP when an endpoint is set
            configure_tracing(TRACED_COMMANDS[args.command])
        if args.command == "serve":
            return _serve(config, args)
        if args.command == "agent":
            return _agent(config, args, argv)
        if args.command == "dev":
            return _dev(config, args)
        if args.command == "cluster":
            return _cluster(config, args)
        command = _say if args.command == "say" else _voices
        return asyncio.run(command(config, args))
    except HiveTTSError as exc:
        print(f"hive-tts: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into `head` and closed early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
