"""A LiveKit cluster on one machine: one Redis and N ``livekit-server`` nodes, loopback only.

The nodes share rooms through Redis (each room lives on one node; any node's API sees it and
relays signalling to it), which is what a multi-node deployment does. For tests of what happens
when a node goes away (``DevServer.kill()``) and for people who want to try the same by hand.
Redis is Debian's ``redis-server`` (``make test`` installs it), run in the foreground with no
persistence.

By hand: ``make cluster`` (or ``python -m agent.livekit_cluster --nodes 2``) prints each node's
URL and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from agent.livekit_server import (
    DEV_API_KEY,
    DEV_API_SECRET,
    LOOPBACK_IP,
    DevServer,
    LiveKitServerNotFound,
    free_port,
    log_tail,
    spawn_logged,
    wait_until_ready,
)

REDIS_FALLBACK_PATH = Path("/usr/bin/redis-server")
REDIS_START_TIMEOUT_S = 10.0
REDIS_STOP_TIMEOUT_S = 10.0
REDIS_PING_TIMEOUT_S = 1.0
REDIS_POLL_S = 0.05
REDIS_PONG = b"+PONG\r\n"
DEFAULT_NODES = 2


class RedisServerNotFound(RuntimeError):
    pass


def find_redis_server() -> Path:
    """``redis-server`` on PATH, else Debian's; raises with the install command."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    if REDIS_FALLBACK_PATH.is_file() and os.access(REDIS_FALLBACK_PATH, os.X_OK):
        return REDIS_FALLBACK_PATH
    raise RedisServerNotFound(
        "redis-server not found (looked at PATH and /usr/bin/redis-server); "
        "install it with `apt-get install redis-server` (`make test` does)"
    )


def redis_answers(port: int, timeout_s: float = REDIS_PING_TIMEOUT_S) -> bool:
    """Whether a Redis on 127.0.0.1:``port`` answers ``PING`` (raw RESP inline command)."""
    try:
        with socket.create_connection((LOOPBACK_IP, port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(64)
                if not chunk:
                    break
                reply += chunk
            return reply == REDIS_PONG
    except OSError:
        return False


@dataclass
class RedisServer:
    """A private ``redis-server`` on a free 127.0.0.1 port, no persistence, log in a file."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"``, as livekit-server's ``redis.address`` wants it."""
        return f"{LOOPBACK_IP}:{self.port}"

    @classmethod
    def start(cls, log_dir: Path) -> RedisServer:
        """Start Redis and return once it answers ``PING``."""
        binary = find_redis_server()
        port = free_port()
        log_path = log_dir / f"redis-{port}.log"
        command = [str(binary), "--port", str(port), "--bind", LOOPBACK_IP, "--save", ""]
        command += ["--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no"]
        process = spawn_logged([*command, "--dir", str(log_dir)], log_path)
        server = cls(process, port, log_path)
        server._wait_ready()
        return server

    def _wait_ready(self) -> None:
        ready = wait_until_ready(
            self.process,
            lambda: redis_answers(self.port),
            name="redis-server",
            log_path=self.log_path,
            timeout_s=REDIS_START_TIMEOUT_S,
            poll_s=REDIS_POLL_S,
        )
        if not ready:
            self.stop()
            raise RuntimeError(f"redis-server did not answer on {self.address} in time")

    def log_tail(self, chars: int = 2000) -> str:
        return log_tail(self.log_path, chars)

    def stop(self) -> None:
        """SIGTERM (Redis saves nothing: ``--save ""``), SIGKILL after a timeout."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=REDIS_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class LiveKitCluster:
    """One Redis and ``len(nodes)`` livekit-server nodes sharing it, all on 127.0.0.1.

    Usable as a context manager; ``stop()`` stops the nodes still running (gracefully), then
    Redis, and is safe after ``nodes[i].kill()``.
    """

    redis: RedisServer
    nodes: list[DevServer] = field(default_factory=list)

    @classmethod
    def start(
        cls, nodes: int = DEFAULT_NODES, *, log_dir: Path, webhook_urls: Sequence[str] = ()
    ) -> LiveKitCluster:
        """Start Redis, then ``nodes`` nodes one after another (each waits until it answers)."""
        if nodes < 1:
            raise ValueError(f"a cluster needs at least one node, not {nodes}")
        cluster = cls(RedisServer.start(log_dir))
        try:
            for _ in range(nodes):
                cluster.nodes.append(
                    DevServer.start(
                        log_dir=log_dir,
                        redis_address=cluster.redis.address,
                        webhook_urls=webhook_urls,
                    )
                )
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def stop(self) -> None:
        # all nodes are told at once, so their drains overlap instead of adding up
        for node in self.nodes:
            if node.running:
                node.process.terminate()
        for node in self.nodes:
            node.stop()
        self.redis.stop()

    def __enter__(self) -> LiveKitCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run a cluster in the foreground until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m agent.livekit_cluster",
        description="A local LiveKit cluster: one Redis and N livekit-server nodes on 127.0.0.1.",
    )
    parser.add_argument("--nodes", type=int, default=DEFAULT_NODES)
    parser.add_argument("--log-dir", type=Path, help="default: a new temporary directory")
    parser.add_argument(
        "--webhook-url", action="append", default=[], help="may be given more than once"
    )
    args = parser.parse_args(argv)
    log_dir: Path = args.log_dir or Path(tempfile.mkdtemp(prefix="livekit-cluster-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        cluster = LiveKitCluster.start(args.nodes, log_dir=log_dir, webhook_urls=args.webhook_url)
    except (RedisServerNotFound, LiveKitServerNotFound) as missing:
        print(missing, file=sys.stderr)
        return 1
    with cluster:
        print(f"redis:   {cluster.redis.address}")
        for index, node in enumerate(cluster.nodes):
            print(f"node {index}:  {node.url}  (log {node.log_path})")
        print(f"API key {DEV_API_KEY}, secret {DEV_API_SECRET}; Ctrl-C stops", flush=True)
        # blocked only now: the nodes must not inherit a mask that hides SIGTERM from them
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        signal.sigwait(stop_signals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
