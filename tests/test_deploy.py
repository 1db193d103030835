"""The compose deployment (``deploy/``) checked against the code it runs, and two of its servers
run for real: livekit-server with ``deploy/livekit.yaml`` against a real Redis, and HAProxy with
``deploy/haproxy.cfg`` in front of two control API instances.

No Docker daemon runs here, so ``deploy/compose.yaml`` is read as data (PyYAML, anchors and
merge keys included) and each thing it says is checked where it lands: commands parse with
``hive-tts``'s own parser, the environment names what the code reads, ports are the ones the
processes bind and Prometheus scrapes, mounted paths exist, the webhook URL is a route of the
app. Values are interpolated from ``deploy/.env.example`` the way compose does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import csv
import io
import math
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import tomllib
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml
from aiohttp import web
from livekit import api as lkapi

from agent.livekit_cluster import RedisServer
from agent.livekit_server import SERVER_ENV, find_binary, free_port, wait_until_ready
from api.rooms import WORKER_URLS_ENV, LiveKitSettings
from control_api import create_app
from engines.config import ServiceConfig, load_config
from engines.deadline_executor import DeadlineExecutor, PieceDue, piece_due
from engines.names import EngineName
from engines.synthesizer import SpeechSynthesizer, create_synthesizer
from hive_tts.cli import ADMIN_KEYS_ENV, API_KEYS_ENV, build_parser
from tests.api_fixtures import metric, metric_samples

REPO_ROOT = Path(__file__).resolve().parent.parent
DEPLOY = REPO_ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
LIVEKIT_CONFIG = DEPLOY / "livekit.yaml"
HAPROXY_CONFIG = DEPLOY / "haproxy.cfg"
PROMETHEUS_DIR = DEPLOY / "prometheus"
GRAFANA_PROVISIONING = DEPLOY / "grafana" / "provisioning"
LIVEKIT_GO_MOD = REPO_ROOT / "tools" / "livekit" / "server" / "go.mod"
PYPROJECT = REPO_ROOT / "pyproject.toml"
README = REPO_ROOT / "README.md"

HIVE_TTS_IMAGE = "hive-tts"
ONE_SHOT_SERVICES = frozenset({"models"})
"""Services that run once and exit (others wait with ``service_completed_successfully``): no
restart policy and no health check, by design."""
RESTART_POLICIES = frozenset({"unless-stopped", "on-failure", "always"})
WEBHOOK_METHOD = "POST"
METRICS_KEY_VARIABLE = "HIVE_TTS_METRICS_KEY"
SECRETS_DIR = "/run/secrets/"
REDIS_DEFAULT_PORT = 6379
PROMETHEUS_PORT = 9090
"""Prometheus's default ``--web.listen-address``."""

LIVEKIT_START_TIMEOUT_S = 30.0
LIVEKIT_STOP_TIMEOUT_S = 10.0
GRACEFUL_STOP_S = 2.0
LIVEKIT_REFUSAL_TIMEOUT_S = 15.0
READY_POLL_S = 0.1

HAPROXY_FALLBACK_PATH = Path("/usr/sbin/haproxy")
HAPROXY_RUN_TIMEOUT_S = 10.0
CHECKS_TIMEOUT_S = 20.0
"""Until HAProxy has checked both instances, or taken a failing one out: ``inter 2s`` and
``fall 3`` in the config, so about 6 s, on a busy machine more."""
STATS_POLL_S = 0.25
REQUESTS_PER_ROUND = 6
BUSY_WAIT_S = 5.0
"""Work held queued on an instance's engine: far beyond ``api.max_engine_wait_s`` (1 s)."""
HOLD_TIMEOUT_S = 30.0
BENCHED_FOR_S = 600.0
"""An engine benched in these tests stays benched for the rest of the module."""
SPOKEN_TEXT = "Hello from behind the balancer."
WS_TIMEOUT_S = 30.0


# --- compose, read as compose reads it ----------------------------------------------------

INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)
"""``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``, ``${NAME:?error}``, ``${NAME?error}``
and ``$$`` (a literal dollar), as the compose specification defines them."""


def env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines (comments on their own lines), as ``--env-file`` reads them."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        assert equals, f"{path.name}:{number}: not NAME=value: {line!r}"
        values[name.strip()] = value.strip()
    return values


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``text`` with compose's variables replaced from ``env``. A plain ``${NAME}`` that ``env``
    lacks raises (compose would substitute an empty string with a warning)."""

    def value(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"]
        given = env.get(name)
        unset = given is None or (given == "" and op is not None and op.startswith(":"))
        if op is None:
            if given is None:
                raise KeyError(f"${{{name}}} is not set in {ENV_EXAMPLE.name}")
            return given
        if not unset:
            assert given is not None
            return given
        if op.endswith("?"):
            raise KeyError(f"${{{name}}} is required: {arg}")
        return arg

    return INTERPOLATION.sub(value, text)


def variables_in(text: str) -> set[str]:
    return {m["name"] for m in INTERPOLATION.finditer(text) if m["name"]}


@dataclass(frozen=True)
class Service:
    """One service of the compose file."""

    name: str
    spec: dict[str, Any]

    @property
    def image(self) -> str:
        return str(self.spec.get("image", ""))

    @property
    def repository(self) -> str:
        return self.image.rpartition(":")[0] if ":" in self.image else self.image

    @property
    def tag(self) -> str | None:
        _, colon, tag = self.image.rpartition(":")
        return tag if colon and "/" not in tag else None

    @property
    def command(self) -> list[str]:
        command = self.spec.get("command", [])
        assert isinstance(command, list), f"{self.name}: command is not a list: {command!r}"
        return [str(part) for part in command]

    @property
    def profiles(self) -> list[str]:
        return [str(p) for p in self.spec.get("profiles", [])]

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        """The container's environment, interpolated from ``env``."""
        given = self.spec.get("environment", {})
        if isinstance(given, list):
            given = dict(str(item).partition("=")[::2] for item in given)
        return {str(k): interpolate(str(v), env) for k, v in given.items()}

    def published(self) -> set[tuple[int, str]]:
        """(container port, protocol) of every ``ports`` entry."""
        found: set[tuple[int, str]] = set()
        for entry in self.spec.get("ports", []):
            ports, _, protocol = str(entry).partition("/")
            found.add((int(ports.rpartition(":")[2]), protocol or "tcp"))
        return found

    def reachable_ports(self) -> set[int]:
        """Ports other services may connect to: ``expose`` and ``ports`` (TCP)."""
        exposed = {int(str(p)) for p in self.spec.get("expose", [])}
        return exposed | {port for port, protocol in self.published() if protocol == "tcp"}

    def mounts(self) -> list[tuple[str, str, str]]:
        """(source, target, mode) of every short-syntax volume."""
        found: list[tuple[str, str, str]] = []
        for entry in self.spec.get("volumes", []):
            source, target, *mode = str(entry).split(":")
            found.append((source, target, mode[0] if mode else "rw"))
        return found

    def healthcheck_url(self) -> str:
        test = " ".join(str(part) for part in self.spec["healthcheck"]["test"])
        urls = re.findall(r"http://[^\s'\"]+", test)
        assert len(urls) == 1, f"{self.name}: health check names no single URL: {test}"
        return str(urls[0])


@dataclass(frozen=True)
class Compose:
    document: dict[str, Any]
    env: dict[str, str]

    @property
    def services(self) -> dict[str, Service]:
        return {name: Service(name, spec) for name, spec in self.document["services"].items()}

    def service(self, name: str) -> Service:
        assert name in self.document["services"], f"no service {name!r} in {COMPOSE_FILE.name}"
        return Service(name, self.document["services"][name])

    def hive_tts(self, subcommand: str) -> list[Service]:
        """Services of the project's image whose command is ``hive-tts <subcommand> ...``."""
        return [
            s
            for s in self.services.values()
            if s.repository == HIVE_TTS_IMAGE and s.command[:2] == [HIVE_TTS_IMAGE, subcommand]
        ]


@pytest.fixture(scope="module")
def compose() -> Compose:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict) and isinstance(document.get("services"), dict)
    return Compose(document, env_file(ENV_EXAMPLE))


@pytest.fixture(scope="module")
def livekit_config() -> dict[str, Any]:
    config = yaml.safe_load(LIVEKIT_CONFIG.read_text(encoding="utf-8"))
    assert isinstance(config, dict)
    return config


def parsed_command(service: Service) -> Any:
    """The service's ``hive-tts`` command as the CLI's own parser reads it."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return build_parser().parse_args(service.command[1:])
    except SystemExit:
        pytest.fail(f"{service.name}: `{' '.join(service.command)}`: {errors.getvalue()}")


def shipped_config() -> ServiceConfig:
    """``config.yaml`` as the image ships it (compose mounts no other)."""
    return load_config(REPO_ROOT / "config.yaml")


def project_version() -> str:
    return str(tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["version"])


def pinned_livekit_version() -> str:
    found = re.search(r"github\.com/livekit/livekit-server v(\S+)", LIVEKIT_GO_MOD.read_text())
    assert found, f"{LIVEKIT_GO_MOD} does not require livekit-server"
    return found[1]


# --- the compose file ----------------------------------------------------------------------


def test_every_image_is_pinned_to_a_version(compose: Compose) -> None:
    for service in compose.services.values():
        assert service.image, f"{service.name}: no image"
        assert "$" not in service.image, f"{service.name}: the image tag is a variable"
        assert service.tag not in (None, "", "latest"), f"{service.name}: {service.image}"
    for service in compose.services.values():
        if service.repository == HIVE_TTS_IMAGE:
            assert service.tag == project_version(), service.image
            assert service.spec.get("pull_policy") == "never", f"{service.name} would be pulled"
    assert compose.service("livekit").tag == f"v{pinned_livekit_version()}"


def test_the_project_image_is_built_from_the_dockerfile(compose: Compose) -> None:
    built = [s for s in compose.services.values() if "build" in s.spec]
    assert [s.repository for s in built] == [HIVE_TTS_IMAGE]
    build = built[0].spec["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert (context / build.get("dockerfile", "Dockerfile")).is_file()
    dockerfile = (context / build.get("dockerfile", "Dockerfile")).read_text(encoding="utf-8")
    declared = set(re.findall(r"^ARG (\w+)", dockerfile, re.MULTILINE))
    for name, arg in build.get("args", {}).items():
        assert name in declared, f"build argument {name} is not an ARG of the Dockerfile"
        interpolate(str(arg), compose.env)  # every build argument has a value


def test_every_long_running_service_restarts_and_has_a_health_check(compose: Compose) -> None:
    for service in compose.services.values():
        if service.name in ONE_SHOT_SERVICES:
            assert service.spec.get("restart") == "no", service.name
            assert "healthcheck" not in service.spec, service.name
            continue
        assert service.spec.get("restart") in RESTART_POLICIES, service.name
        check = service.spec.get("healthcheck")
        assert check and not check.get("disable"), f"{service.name}: no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, service.name


def test_services_wait_for_what_they_need_to_be_healthy(compose: Compose) -> None:
    services = compose.services
    waited: set[tuple[str, str]] = set()
    for service in services.values():
        for dependency, condition in service.spec.get("depends_on", {}).items():
            assert dependency in services, f"{service.name} depends on unknown {dependency}"
            expected = (
                "service_completed_successfully"
                if dependency in ONE_SHOT_SERVICES
                else "service_healthy"
            )
            assert condition == {"condition": expected}, (service.name, dependency, condition)
            waited.add((service.name, dependency))
    for agent in compose.hive_tts("agent"):
        assert {(agent.name, "livekit"), (agent.name, "models")} <= waited
    for api in compose.hive_tts("serve"):
        assert {(api.name, "livekit"), (api.name, "models")} <= waited
    assert ("livekit", "redis") in waited
    assert ("grafana", "prometheus") in waited


def test_compose_variables_are_the_ones_env_example_documents(compose: Compose) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    used = variables_in(text)
    assert used == set(compose.env), (
        f"used but not in {ENV_EXAMPLE.name}: {sorted(used - set(compose.env))}; "
        f"in {ENV_EXAMPLE.name} but unused: {sorted(set(compose.env) - used)}"
    )
    assert not re.search(r"\$(?![{$])", text.replace("$$", "")), "a $NAME without braces"


def test_hive_tts_commands_parse_with_the_cli(compose: Compose) -> None:
    scripts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["scripts"]
    assert HIVE_TTS_IMAGE in scripts
    ours = [s for s in compose.services.values() if s.repository == HIVE_TTS_IMAGE]
    assert len(ours) >= 4
    for service in ours:
        assert service.command[0] == HIVE_TTS_IMAGE, service.name
        parsed_command(service)


def test_the_agents_serve_metrics_and_health_where_they_are_checked(compose: Compose) -> None:
    agents = compose.hive_tts("agent")
    assert [a.name for a in agents] == ["agent-1", "agent-2"]
    for agent in agents:
        args = parsed_command(agent)
        assert args.metrics_host == "0.0.0.0", "Prometheus scrapes from another container"
        assert args.metrics_port != args.health_port
        assert {args.metrics_port, args.health_port} <= agent.reachable_ports()
        health = urlsplit(agent.healthcheck_url())
        assert (health.hostname, health.port, health.path) == ("127.0.0.1", args.health_port, "/")


def test_the_api_listens_where_it_is_published_and_checked(compose: Compose) -> None:
    apis = compose.hive_tts("serve")
    assert "api" in [a.name for a in apis]
    for api in apis:
        args = parsed_command(api)
        assert args.host == "0.0.0.0"
        assert args.port in api.reachable_ports()
        health = urlsplit(api.healthcheck_url())
        assert (health.hostname, health.port, health.path) == ("127.0.0.1", args.port, "/health")


def test_agents_and_api_get_the_livekit_settings_the_node_accepts(
    compose: Compose, livekit_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    node = compose.service("livekit").environment(compose.env)
    key, _, secret = node["LIVEKIT_KEYS"].partition(": ")
    assert key and secret, "LIVEKIT_KEYS must be 'KEY: SECRET'"
    for service in [*compose.hive_tts("agent"), *compose.hive_tts("serve")]:
        env = service.environment(compose.env)
        for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
            monkeypatch.setenv(name, env.get(name, ""))
        monkeypatch.setenv(WORKER_URLS_ENV, env.get(WORKER_URLS_ENV, ""))
        settings = LiveKitSettings.from_env(shipped_config().agent.agent_name)
        assert settings is not None, f"{service.name}: LiveKit settings missing"
        url = urlsplit(settings.url)
        assert (url.scheme, url.hostname, url.port) == ("ws", "livekit", livekit_config["port"])
        assert (settings.api_key, settings.api_secret) == (key, secret), service.name


def test_the_api_reports_on_every_agent_worker(
    compose: Compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    agents = {a.name: parsed_command(a) for a in compose.hive_tts("agent")}
    for api in compose.hive_tts("serve"):
        env = api.environment(compose.env)
        monkeypatch.setenv(WORKER_URLS_ENV, env[WORKER_URLS_ENV])
        for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
            monkeypatch.setenv(name, env[name])
        settings = LiveKitSettings.from_env(shipped_config().agent.agent_name)
        assert settings is not None
        reported = {str(urlsplit(u).hostname): urlsplit(u) for u in settings.worker_urls}
        assert set(reported) == set(agents), api.name
        for host, url in reported.items():
            assert (url.port, url.path) == (agents[host].metrics_port, "/worker")


def test_the_api_is_given_keys_off_loopback(compose: Compose) -> None:
    metrics_key = compose.env[METRICS_KEY_VARIABLE]
    for api in compose.hive_tts("serve"):
        env = api.environment(compose.env)
        keys = [k.strip() for k in env[API_KEYS_ENV].split(",") if k.strip()]
        assert keys and metrics_key in keys, api.name
        assert ADMIN_KEYS_ENV in env


def test_the_webhook_url_is_the_api_route_on_the_api_port(
    compose: Compose, livekit_config: dict[str, Any]
) -> None:
    urls = livekit_config["webhook"]["urls"]
    assert urls, "LiveKit sends no webhooks: lost agents are only found by the API's look"
    app = create_app(shipped_config(), quality_scoring=False)
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    apis = {a.name: parsed_command(a) for a in compose.hive_tts("serve")}
    for url in urls:
        parts = urlsplit(url)
        assert parts.hostname in apis, f"{url}: not a control API service"
        assert parts.port == apis[parts.hostname].port, url
        assert (WEBHOOK_METHOD, parts.path) in routes, f"{url}: no such route"
    # the node signs webhooks with this key; the API verifies them with its own pair
    node = compose.service("livekit").environment(compose.env)
    for api in compose.hive_tts("serve"):
        assert node["LIVEKIT_WEBHOOK_API_KEY"] == api.environment(compose.env)["LIVEKIT_API_KEY"]


def test_livekit_reaches_the_redis_service(
    compose: Compose, livekit_config: dict[str, Any]
) -> None:
    host, _, port = livekit_config["redis"]["address"].partition(":")
    redis = compose.service(host)
    assert "--port" not in redis.command and int(port) == REDIS_DEFAULT_PORT


def test_every_mounted_path_exists(compose: Compose) -> None:
    named = set(compose.document.get("volumes") or {})
    for service in compose.services.values():
        for source, target, mode in service.mounts():
            assert target.startswith("/"), (service.name, target)
            assert mode in ("ro", "rw"), (service.name, mode)
            if source.startswith((".", "/")):
                assert (DEPLOY / source).resolve().exists(), f"{service.name}: {source}"
            else:
                assert source in named, f"{service.name}: undeclared volume {source}"


def test_the_models_volume_is_written_once_and_read_by_the_services(compose: Compose) -> None:
    for service in compose.services.values():
        if service.repository != HIVE_TTS_IMAGE:
            continue
        models = [(t, m) for s, t, m in service.mounts() if s == "models"]
        expected = "rw" if service.name in ONE_SHOT_SERVICES else "ro"
        assert models == [("/app/models", expected)], service.name


def prometheus_config() -> dict[str, Any]:
    path = PROMETHEUS_DIR / "prometheus.yml"
    assert path.is_file(), f"{path} is missing: compose mounts {PROMETHEUS_DIR}"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(config, dict)
    return config


def scrape_targets(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each ``host:port`` target with the job that scrapes it."""
    found: dict[str, dict[str, Any]] = {}
    for job in config.get("scrape_configs", []):
        for static in job.get("static_configs", []):
            for target in static.get("targets", []):
                found[str(target)] = job
    return found


def test_prometheus_scrapes_every_worker_and_the_api_where_they_listen(
    compose: Compose,
) -> None:
    targets = scrape_targets(prometheus_config())
    services = compose.services
    metrics_ports = {a.name: parsed_command(a).metrics_port for a in compose.hive_tts("agent")}
    metrics_ports |= {a.name: parsed_command(a).port for a in compose.hive_tts("serve")}
    for target, job in targets.items():
        host, _, port = target.rpartition(":")
        if host not in services:
            continue  # e.g. Prometheus itself on localhost
        assert host in metrics_ports, f"{target}: not a service that serves /metrics"
        assert int(port) == metrics_ports[host], f"{target}: {host} serves /metrics elsewhere"
        assert int(port) in services[host].reachable_ports(), f"{target}: not exposed"
        assert job.get("metrics_path", "/metrics") == "/metrics"
    # every service that always runs is scraped (a profile's services are the user's choice)
    for name, port in metrics_ports.items():
        if not services[name].profiles:
            assert f"{name}:{port}" in targets, f"Prometheus does not scrape {name}:{port}"


def test_prometheus_scrapes_the_api_with_a_key_it_accepts(compose: Compose) -> None:
    targets = scrape_targets(prometheus_config())
    prometheus = compose.service("prometheus")
    secrets = compose.document.get("secrets") or {}
    metrics_key = compose.env[METRICS_KEY_VARIABLE]
    for api in compose.hive_tts("serve"):
        job = targets.get(f"{api.name}:{parsed_command(api).port}")
        if job is None:
            continue
        # with keys set, /metrics answers 401 without one
        credentials = (job.get("authorization") or {}).get("credentials_file", "")
        assert credentials.startswith(SECRETS_DIR), (
            f"job {job['job_name']} scrapes {api.name} without a key: give it "
            f"authorization: {{credentials_file: {SECRETS_DIR}<secret>}}"
        )
        secret = credentials.removeprefix(SECRETS_DIR)
        assert secret in prometheus.spec.get("secrets", []), f"{secret} not given to Prometheus"
        assert secrets[secret] == {"environment": METRICS_KEY_VARIABLE}
        keys = api.environment(compose.env)[API_KEYS_ENV].split(",")
        assert metrics_key in keys


def test_grafana_provisioning_finds_its_mounts_and_prometheus(compose: Compose) -> None:
    grafana = compose.service("grafana")
    targets = {target: DEPLOY / source for source, target, _ in grafana.mounts()}
    assert targets.get("/etc/grafana/provisioning") == GRAFANA_PROVISIONING
    providers = [
        provider
        for path in sorted((GRAFANA_PROVISIONING / "dashboards").glob("*.y*ml"))
        for provider in yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]
    ]
    assert providers, "no dashboard provider"
    for provider in providers:
        path = provider["options"]["path"]
        assert path in targets, f"dashboards at {path} are not mounted"
        assert list(targets[path].glob("*.json")), f"no dashboard in {targets[path]}"
    sources = [
        source
        for path in sorted((GRAFANA_PROVISIONING / "datasources").glob("*.y*ml"))
        for source in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]
    ]
    prometheus = compose.service("prometheus")
    assert not any(a.startswith("--web.listen-address") for a in prometheus.command)
    assert PROMETHEUS_PORT in prometheus.reachable_ports()
    for source in sources:
        url = urlsplit(source["url"])
        assert (url.hostname, url.port) == ("prometheus", PROMETHEUS_PORT), source["url"]


# --- livekit-server with deploy/livekit.yaml -----------------------------------------------


@pytest.fixture(scope="module")
def livekit_server() -> Path:
    return find_binary("livekit-server", SERVER_ENV)


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


def test_livekit_opens_exactly_the_ports_compose_publishes(
    compose: Compose, livekit_server: Path
) -> None:
    # `ports` reads the config as the server does (strictly) and prints what it would open
    ran = subprocess.run(
        [str(livekit_server), "ports", "--config", str(LIVEKIT_CONFIG)],
        capture_output=True,
        text=True,
        timeout=LIVEKIT_STOP_TIMEOUT_S,
        env=without_settings_of("LIVEKIT_"),
    )
    assert ran.returncode == 0, ran.stderr
    opened: set[tuple[int, str]] = set()
    protocol = ""
    for line in ran.stdout.splitlines():
        if line.strip() in ("TCP Ports", "UDP Ports"):
            protocol = line.split()[0].lower()
        elif found := re.search(r"\d+", line):  # 1.13.5 prints the UDP port as %!s(int=7882)
            opened.add((int(found[0]), protocol))
    assert opened, ran.stdout
    assert opened == compose.service("livekit").published()


def without_settings_of(prefix: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(prefix)}


@dataclass(frozen=True)
class NodePorts:
    http: int
    ice_tcp: int
    ice_udp: int


def livekit_env(compose: Compose, redis: RedisServer, ports: NodePorts) -> dict[str, str]:
    """The livekit service's environment as compose gives it, plus the overrides that put the
    node on free loopback ports against the test's Redis (in place of ``redis:6379``)."""
    return {
        **without_settings_of("LIVEKIT_"),
        **compose.service("livekit").environment(compose.env),
        "REDIS_HOST": redis.address,
        "LIVEKIT_PORT": str(ports.http),
        "LIVEKIT_RTC_TCP_PORT": str(ports.ice_tcp),
        "UDP_PORT": str(ports.ice_udp),
    }


def livekit_answers(port: int) -> bool:
    """The node's health route: 200 once it has reported its stats (to Redis, in a cluster)."""
    with contextlib.suppress(OSError):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as reply:
            return bool(reply.status == 200)
    return False


@contextlib.contextmanager
def process_logged(
    command: list[str], env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` running with its output in ``log_path``; stopped on the way out."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM; a second one if it is still running after ``GRACEFUL_STOP_S`` (livekit-server
    1.13.5 can hang in its graceful stop when signalled just after it started, and takes a
    second signal as a forced stop); SIGKILL as the last resort."""
    for _ in range(2):
        if process.poll() is not None:
            return
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=GRACEFUL_STOP_S)
    try:
        process.wait(timeout=LIVEKIT_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def node_command(livekit_server: Path) -> list[str]:
    return [str(livekit_server), "--config", str(LIVEKIT_CONFIG), "--bind", "127.0.0.1"]


def free_node_ports() -> NodePorts:
    return NodePorts(free_port(), free_port(), free_port(socket.SOCK_DGRAM))


async def test_livekit_serves_with_the_compose_config_keys_and_redis(
    compose: Compose, livekit_server: Path, redis: RedisServer, tmp_path: Path
) -> None:
    ports = free_node_ports()
    env = livekit_env(compose, redis, ports)
    key, _, secret = env["LIVEKIT_KEYS"].partition(": ")
    log_path = tmp_path / "livekit.log"
    with process_logged(node_command(livekit_server), env, log_path) as node:
        ready = await asyncio.to_thread(
            wait_until_ready,
            node,
            lambda: livekit_answers(ports.http),
            name="livekit-server",
            log_path=log_path,
            timeout_s=LIVEKIT_START_TIMEOUT_S,
            poll_s=READY_POLL_S,
        )
        assert ready, log_path.read_text(errors="replace")[-2000:]
        url = f"http://127.0.0.1:{ports.http}"
        client = lkapi.LiveKitAPI(url, key, secret)
        wrong = lkapi.LiveKitAPI(url, key, secret[::-1])
        try:
            listing = await client.room.list_rooms(lkapi.ListRoomsRequest())
            assert list(listing.rooms) == []
            with pytest.raises(lkapi.TwirpError) as refused:
                await wrong.room.list_rooms(lkapi.ListRoomsRequest())
            assert refused.value.status == HTTPStatus.UNAUTHORIZED
        finally:
            await client.aclose()
            await wrong.aclose()
    log = log_path.read_text(errors="replace")
    assert "connecting to redis" in log and redis.address in log, log[-2000:]


def test_livekit_refuses_to_start_without_the_webhook_key(
    compose: Compose, livekit_server: Path, redis: RedisServer, tmp_path: Path
) -> None:
    env = livekit_env(compose, redis, free_node_ports())
    del env["LIVEKIT_WEBHOOK_API_KEY"]
    log_path = tmp_path / "livekit.log"
    with process_logged(node_command(livekit_server), env, log_path) as node:
        node.wait(timeout=LIVEKIT_REFUSAL_TIMEOUT_S)
    # 1.13.5 exits with status 0 after printing why it did not start
    assert "api_key is required to use webhooks" in log_path.read_text(errors="replace")


# --- HAProxy with deploy/haproxy.cfg -------------------------------------------------------

BIND_DEFAULT = re.compile(r'bind "\$\{(?P<name>HIVE_TTS_[A-Z_]+)-(?P<address>[^}]*)\}"')
SERVER_DEFAULT = re.compile(
    r'server (?P<server>\S+) "\$\{(?P<name>HIVE_TTS_API_\d)-(?P<address>[^}]*)\}"'
)


@pytest.fixture(scope="module")
def haproxy() -> Path:
    found = shutil.which("haproxy")
    if found:
        return Path(found)
    if HAPROXY_FALLBACK_PATH.is_file():
        return HAPROXY_FALLBACK_PATH
    pytest.fail("haproxy not found on PATH or at /usr/sbin/haproxy: `make haproxy` installs it")


def haproxy_check(
    haproxy: Path, env: Mapping[str, str], config: Path = HAPROXY_CONFIG
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(haproxy), "-c", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=HAPROXY_RUN_TIMEOUT_S,
        env=dict(env),
    )


def loopback_addresses() -> dict[str, str]:
    """Every address the config reads from the environment, on free loopback ports."""
    names = {m["name"] for m in BIND_DEFAULT.finditer(HAPROXY_CONFIG.read_text())}
    names |= {m["name"] for m in SERVER_DEFAULT.finditer(HAPROXY_CONFIG.read_text())}
    return {name: f"127.0.0.1:{free_port()}" for name in names}


def test_haproxy_accepts_the_balancer_config(haproxy: Path) -> None:
    # as compose runs it: the default addresses are compose's service names, unresolved here
    ran = haproxy_check(haproxy, without_settings_of("HIVE_TTS_"))
    assert ran.returncode == 0, ran.stderr
    assert "Configuration file is valid" in ran.stdout
    # with every address given, there is nothing left to warn about
    ran = haproxy_check(haproxy, {**without_settings_of("HIVE_TTS_"), **loopback_addresses()})
    assert ran.returncode == 0, ran.stderr
    assert "[WARNING]" not in ran.stderr and "[ALERT]" not in ran.stderr, ran.stderr


def test_haproxy_2_6_cannot_retry_a_429_elsewhere(haproxy: Path, tmp_path: Path) -> None:
    """Why a 429 ``engine_busy`` reaches the client instead of being retried by the balancer
    (README, "Deploy"): HAProxy 2.6's ``retry-on`` takes no 429."""
    text = HAPROXY_CONFIG.read_text()
    retry_on = re.findall(r"^\s*retry-on (.+)$", text, re.MULTILINE)
    assert retry_on and all("429" not in line for line in retry_on)
    with_429 = tmp_path / "haproxy.cfg"
    with_429.write_text(re.sub(r"^(\s*retry-on .+)$", r"\1 429", text, count=1, flags=re.M))
    ran = haproxy_check(haproxy, {**without_settings_of("HIVE_TTS_"), **loopback_addresses()})
    assert ran.returncode == 0, ran.stderr
    ran = haproxy_check(haproxy, without_settings_of("HIVE_TTS_"), with_429)
    assert ran.returncode != 0 and "unknown keyword '429'" in ran.stderr, ran.stderr


def test_the_balancer_service_runs_this_config_in_front_of_the_apis(
    compose: Compose, haproxy: Path
) -> None:
    balancer = compose.service("balancer")
    version = subprocess.run(
        [str(haproxy), "-v"], capture_output=True, text=True, timeout=HAPROXY_RUN_TIMEOUT_S
    ).stdout
    found = re.search(r"HAProxy version (\d+\.\d+\.\d+)", version)
    assert found and balancer.tag == found[1], (balancer.image, version)
    assert ("./haproxy.cfg", "/usr/local/etc/haproxy/haproxy.cfg", "ro") in balancer.mounts()
    text = HAPROXY_CONFIG.read_text()
    apis = {a.name: parsed_command(a).port for a in compose.hive_tts("serve")}
    env = balancer.environment(compose.env)
    for server in SERVER_DEFAULT.finditer(text):
        address = env.get(server["name"], server["address"])
        host, _, server_port = address.rpartition(":")
        assert host in apis and int(server_port) == apis[host], (server["name"], address)
    for bind in BIND_DEFAULT.finditer(text):
        bound = int(env.get(bind["name"], bind["address"]).rpartition(":")[2])
        assert bound in balancer.reachable_ports(), (bind["name"], bound)
    assert "several-apis" in balancer.profiles
    assert {("balancer", "api"), ("balancer", "api-2")} <= {
        (balancer.name, d) for d in balancer.spec["depends_on"]
    }


def test_the_readme_shows_lines_of_the_balancer_config() -> None:
    readme = README.read_text(encoding="utf-8")
    excerpts = re.findall(r"```haproxy\n(.*?)```", readme, re.DOTALL)
    assert excerpts, "README.md shows no balancer config"
    config = {line.strip() for line in HAPROXY_CONFIG.read_text().splitlines()}
    for excerpt in excerpts:
        for line in excerpt.splitlines():
            assert not line.strip() or line.strip() in config, f"not in haproxy.cfg: {line}"


def espeak_only(config: ServiceConfig) -> ServiceConfig:
    """One light engine per instance (loads in milliseconds); an engine benched here stays
    benched for the rest of the module."""
    health = config.engines.health.model_copy(update={"cooldown_s": BENCHED_FOR_S})
    return config.model_copy(
        update={
            "disabled_engines": tuple(e for e in EngineName if e is not EngineName.ESPEAK),
            "engines": config.engines.model_copy(update={"health": health}),
        }
    )


@dataclass
class Instance:
    """A control API instance (the real app, ``create_app``) on a loopback port."""

    name: str
    synthesizer: SpeechSynthesizer
    runner: web.AppRunner
    port: int
    paths: list[str]
    """The path of every request it answered, in order."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def scrape(self, session: aiohttp.ClientSession) -> Samples:
        async with session.get(f"{self.url}/metrics") as reply:
            assert reply.status == HTTPStatus.OK
            return metric_samples(await reply.text())


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def syntheses(samples: Samples) -> float:
    return sum(v for (name, _), v in samples.items() if name == "tts_synthesis_requests_total")


def errors(samples: Samples, code: str) -> float:
    return metric(samples, "tts_request_errors_total", code=code)


async def start_instance(name: str, config: ServiceConfig) -> Instance:
    synthesizer = create_synthesizer(config)
    await synthesizer.start(warm_up=False)
    app = create_app(config, synthesizer=synthesizer, quality_scoring=False)
    paths: list[str] = []

    async def record(request: web.Request, _: web.StreamResponse) -> None:
        paths.append(request.path)

    app.on_response_prepare.append(record)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return Instance(name, synthesizer, runner, int(runner.addresses[0][1]), paths)


@dataclass(frozen=True)
class Balancer:
    port: int
    stats_port: int
    log_path: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def servers(
        self, session: aiohttp.ClientSession
    ) -> dict[tuple[str, str], dict[str, str]]:
        """HAProxy's own view of each (backend, server): status, last check and its code."""
        async with session.get(f"http://127.0.0.1:{self.stats_port}/stats;csv") as reply:
            assert reply.status == HTTPStatus.OK
            text = (await reply.text()).removeprefix("# ")
        return {(row["pxname"], row["svname"]): row for row in csv.DictReader(io.StringIO(text))}

    async def wait_for(
        self,
        session: aiohttp.ClientSession,
        backend: str,
        server: str,
        *,
        status: str,
        check_code: str,
    ) -> dict[str, str]:
        row: dict[str, str] = {}
        try:
            async with asyncio.timeout(CHECKS_TIMEOUT_S):
                while True:
                    with contextlib.suppress(aiohttp.ClientConnectionError):  # still starting
                        row = (await self.servers(session))[(backend, server)]
                        if row["status"] == status and row["check_code"] == check_code:
                            return row
                    await asyncio.sleep(STATS_POLL_S)
        except TimeoutError:
            shown = {k: row.get(k) for k in ("status", "check_status", "check_code", "check_desc")}
            pytest.fail(
                f"{backend}/{server} not {status} ({check_code}): {shown}\n{self.log_tail()}"
            )

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


@dataclass(frozen=True)
class Balanced:
    balancer: Balancer
    first: Instance
    second: Instance
    session: aiohttp.ClientSession


@pytest.fixture(scope="module")
async def balanced(
    haproxy: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Balanced]:
    """HAProxy with deploy/haproxy.cfg in front of two control API instances, both checked."""
    config = espeak_only(shipped_config())
    first = await start_instance("api-1", config)
    second = await start_instance("api-2", config)
    log_path = tmp_path_factory.mktemp("haproxy") / "haproxy.log"
    balancer = Balancer(free_port(), free_port(), log_path)
    env = {
        **without_settings_of("HIVE_TTS_"),
        "HIVE_TTS_BALANCER_BIND": f"127.0.0.1:{balancer.port}",
        "HIVE_TTS_BALANCER_STATS_BIND": f"127.0.0.1:{balancer.stats_port}",
        "HIVE_TTS_API_1": f"127.0.0.1:{first.port}",
        "HIVE_TTS_API_2": f"127.0.0.1:{second.port}",
    }
    command = [str(haproxy), "-db", "-f", str(HAPROXY_CONFIG)]
    try:
        async with aiohttp.ClientSession() as session:
            with process_logged(command, env, log_path):
                for instance in (first, second):
                    for backend in ("synthesis", "rooms"):
                        await balancer.wait_for(
                            session, backend, instance.name, status="UP", check_code="200"
                        )
                yield Balanced(balancer, first, second, session)
    finally:
        for instance in (first, second):
            await instance.runner.cleanup()
            await instance.synthesizer.aclose()


async def speak_through(balanced: Balanced) -> aiohttp.ClientResponse:
    async with balanced.session.post(
        balanced.balancer.url("/synthesize"), json={"text": SPOKEN_TEXT, "language": "en"}
    ) as reply:
        await reply.read()
        return reply


async def body_of(reply: aiohttp.ClientResponse) -> dict[str, Any]:
    body = await reply.json()
    assert isinstance(body, dict)
    return body


async def test_requests_through_the_balancer_reach_both_instances(balanced: Balanced) -> None:
    first, second = balanced.first, balanced.second
    before = [await i.scrape(balanced.session) for i in (first, second)]
    replies = [await speak_through(balanced) for _ in range(REQUESTS_PER_ROUND)]
    assert [r.status for r in replies] == [HTTPStatus.OK] * REQUESTS_PER_ROUND
    for reply in replies:
        assert (await body_of(reply))["audio_data"], "no audio"
    after = [await i.scrape(balanced.session) for i in (first, second)]
    spoken = [syntheses(a) - syntheses(b) for a, b in zip(after, before, strict=True)]
    assert all(count > 0 for count in spoken) and sum(spoken) == REQUESTS_PER_ROUND, spoken


async def test_a_websocket_session_streams_through_the_balancer(balanced: Balanced) -> None:
    url = balanced.balancer.url("/ws/synthesize").replace("http://", "ws://")
    async with balanced.session.ws_connect(url) as ws:
        await ws.send_json({"text": SPOKEN_TEXT, "language": "en", "stream": True})
        audio = 0
        async with asyncio.timeout(WS_TIMEOUT_S):
            while not (message := await ws.receive_json()).get("is_final"):
                audio += len(base64.b64decode(message.get("audio_chunk") or ""))
    assert message["type"] == "final" and message["engine"] == EngineName.ESPEAK.value, message
    assert audio > 0


async def test_the_balancer_checks_each_instance_on_its_health_route(balanced: Balanced) -> None:
    servers = await balanced.balancer.servers(balanced.session)
    for instance in (balanced.first, balanced.second):
        # nobody but HAProxy asked for /health here
        assert "/health" in instance.paths, instance.paths
        for backend in ("synthesis", "rooms"):
            row = servers[(backend, instance.name)]
            assert (row["status"], row["check_status"], row["check_code"]) == (
                "UP",
                "L7OK",
                "200",
            ), row


@contextlib.contextmanager
def engine_held(synthesizer: SpeechSynthesizer, seconds: float) -> Iterator[None]:
    """The instance's espeak-ng pool busy for real: every worker held, and one reply's first
    piece queued behind them that the pool estimates at ``seconds`` per worker. The queued
    piece is cancelled on the way out, never run."""
    backend = synthesizer.registry.backend(EngineName.ESPEAK)
    assert backend is not None
    executor = backend._executor  # type: ignore[attr-defined]
    assert isinstance(executor, DeadlineExecutor)
    gate = threading.Event()
    holds = [executor.submit(gate.wait, HOLD_TIMEOUT_S) for _ in range(executor.max_workers)]
    characters = math.ceil(seconds * executor.max_workers / executor.seconds_per_char)

    def submit_waiting() -> Future[None]:
        piece_due(PieceDue(time.perf_counter(), starts_reply=True, characters=characters))
        return executor.submit(time.sleep, 0)

    waiting = contextvars.copy_context().run(submit_waiting)
    try:
        yield
    finally:
        waiting.cancel()
        gate.set()
        for hold in holds:
            hold.result(HOLD_TIMEOUT_S)


async def test_a_busy_instance_429_reaches_the_client_whose_retry_goes_to_the_other(
    balanced: Balanced,
) -> None:
    first, second = balanced.first, balanced.second
    before = [await i.scrape(balanced.session) for i in (first, second)]
    with engine_held(first.synthesizer, BUSY_WAIT_S):
        replies = [await speak_through(balanced) for _ in range(REQUESTS_PER_ROUND)]
    after = [await i.scrape(balanced.session) for i in (first, second)]
    statuses = [r.status for r in replies]
    refused = [r for r in replies if r.status == HTTPStatus.TOO_MANY_REQUESTS]
    assert refused and set(statuses) == {HTTPStatus.OK, HTTPStatus.TOO_MANY_REQUESTS}, statuses
    for reply in refused:
        assert (await body_of(reply))["error"]["code"] == "engine_busy"
        assert int(reply.headers["Retry-After"]) >= 1
    # each refusal came from the busy instance and reached the client (HAProxy did not retry)
    assert errors(after[0], "engine_busy") - errors(before[0], "engine_busy") == len(refused)
    assert syntheses(after[0]) == syntheses(before[0])
    assert syntheses(after[1]) - syntheses(before[1]) == statuses.count(HTTPStatus.OK)
    # the request after a refusal is balanced onto the other instance
    for refusal, following in zip(statuses, statuses[1:], strict=False):
        if refusal == HTTPStatus.TOO_MANY_REQUESTS:
            assert following == HTTPStatus.OK, statuses


async def test_speak_requests_go_to_the_first_instance_and_are_not_repeated(
    balanced: Balanced,
) -> None:
    first, second = balanced.first, balanced.second
    before = [await i.scrape(balanced.session) for i in (first, second)]
    for _ in range(REQUESTS_PER_ROUND // 2):
        async with balanced.session.post(
            balanced.balancer.url("/rooms/deploy-test/speak"), json={"text": SPOKEN_TEXT}
        ) as reply:
            # no LiveKit configured here: the instance's own answer, passed on once
            assert reply.status == HTTPStatus.SERVICE_UNAVAILABLE
            assert (await body_of(reply))["error"]["code"] == "livekit_not_configured"
    after = [await i.scrape(balanced.session) for i in (first, second)]
    code = "livekit_not_configured"
    assert errors(after[0], code) - errors(before[0], code) == REQUESTS_PER_ROUND // 2
    assert errors(after[1], code) == errors(before[1], code)


async def test_a_failing_instance_is_retried_elsewhere_then_taken_out_by_its_health(
    balanced: Balanced,
) -> None:
    first, second, session = balanced.first, balanced.second, balanced.session
    espeak = first.synthesizer.registry.health(EngineName.ESPEAK)
    assert espeak is not None
    espeak.bench()  # the instance's only engine: it cannot speak, though it still answers
    async with session.post(
        f"{first.url}/synthesize", json={"text": SPOKEN_TEXT, "language": "en"}
    ) as direct:
        assert direct.status == HTTPStatus.SERVICE_UNAVAILABLE
        code = (await body_of(direct))["error"]["code"]
    before = [await i.scrape(session) for i in (first, second)]
    replies = [await speak_through(balanced) for _ in range(REQUESTS_PER_ROUND)]
    after = [await i.scrape(session) for i in (first, second)]
    # the instance's 503s never reached the client: each was tried again on the other
    assert [r.status for r in replies] == [HTTPStatus.OK] * REQUESTS_PER_ROUND
    assert errors(after[0], code) > errors(before[0], code), "the failing instance was not tried"
    assert syntheses(after[1]) - syntheses(before[1]) == REQUESTS_PER_ROUND

    # its /health says fail (503): HAProxy takes it out of both backends
    for backend in ("synthesis", "rooms"):
        await balanced.balancer.wait_for(
            session, backend, first.name, status="DOWN", check_code="503"
        )
    async with session.get(f"{first.url}/voices") as alive:
        assert alive.status == HTTPStatus.OK  # up, but not healthy: only /health took it out
    before = after
    replies = [await speak_through(balanced) for _ in range(REQUESTS_PER_ROUND)]
    after = [await i.scrape(session) for i in (first, second)]
    assert [r.status for r in replies] == [HTTPStatus.OK] * REQUESTS_PER_ROUND
    assert errors(after[0], code) == errors(before[0], code), "a down instance was tried"
    # rooms now go to the backup
    async with session.post(
        balanced.balancer.url("/rooms/deploy-test/speak"), json={"text": SPOKEN_TEXT}
    ) as reply:
        assert reply.status == HTTPStatus.SERVICE_UNAVAILABLE
    last = await second.scrape(session)
    assert errors(last, "livekit_not_configured") == errors(after[1], "livekit_not_configured") + 1
