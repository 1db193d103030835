"""The deployment's monitoring (deploy/prometheus, deploy/grafana) checked against the service.

promtool checks the Prometheus configuration and the alert rules and runs the rules' unit tests;
every metric a dashboard panel or an alert reads is one the service's registries export; and a
real Prometheus (Debian's package, which ``make prometheus`` installs) scrapes a live
``hive-tts serve`` and a live ``hive-tts agent`` on a LiveKit server, on free loopback ports
with its own storage, so a system Prometheus on the machine is never touched.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml

from agent.livekit_server import DevServer, free_port
from api.service_metrics import ServiceMetrics, WorkerMetrics
from engines.config import ServiceConfig, load_config
from engines.synthesizer import SpeechSynthesizer
from hive_tts.cli import API_KEYS_ENV, build_parser, with_agent_flags
from hive_tts.paths import PROJECT_ROOT
from tests.api_fixtures import eventually
from tests.livekit_fixtures import WorkerProcess, running_workers
from tests.test_api_server_process import Server, start_serve, wait_until_healthy

PROMETHEUS_DIR = PROJECT_ROOT / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERT_RULES = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
GRAFANA_DIR = PROJECT_ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "hive-tts.yml"
COMPOSE = PROJECT_ROOT / "deploy" / "compose.yaml"
SECRETS_DIR = "/run/secrets/"
"""Where compose puts a service's secrets; prometheus.yml reads the API's key there."""

API_JOB = "hive-tts-api"
AGENT_JOB = "hive-tts-agent"
COMPOSE_TARGETS = {API_JOB: ["api:8003"], AGENT_JOB: ["agent-1:9100", "agent-2:9100"]}
"""The compose services (deploy/compose.yaml) and the worker metrics port they are given."""
METRICS_KEY = "monitoring-test-key"
"""The live API's only key: Prometheus scrapes with it, as with the compose secret."""
SERVICE_SCRAPE_INTERVAL = "5s"
LIVE_SCRAPE_INTERVAL = "1s"
PROMTOOL_TIMEOUT_S = 60.0
PROMETHEUS_START_TIMEOUT_S = 30.0
SCRAPED_TIMEOUT_S = 30.0
"""Until a 1 s scrape has seen what a request changed, on a busy 2-core machine."""
PROCESS_STOP_TIMEOUT_S = 30.0
SYNTHESIS_TIMEOUT_S = 60.0

WORKER_METRICS_HOST = "127.0.0.2"
"""The worker's metrics bind here (``agent.metrics_host``), not at the default 127.0.0.1: still
loopback, and Prometheus reaching it shows the setting took effect."""
MONITORED_CONFIG = f"""\
agent:
  metrics_host: {WORKER_METRICS_HOST}
api:
  quality_sample_every: 0
disabled_engines: [edge-tts]
voices_file: {PROJECT_ROOT / "voices.yaml"}
models_dir: {PROJECT_ROOT / "models"}
"""

METRIC_NAME = re.compile(r"\btts_[a-z0-9_]+")
JOB_MATCHER = re.compile(r'\bjob\s*(=~|=)\s*"([^"]*)"')
AGGREGATED_BY = re.compile(r"\bby\s*\(([^)]*)\)")
SAMPLE_SUFFIX = re.compile(r"_(total|bucket|sum|count|created)$")
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": "hive-tts-.*"}
"""What Grafana puts in the dashboards' expressions, for running them on a live Prometheus."""

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
NOT_INSTALLED = "not on PATH: `make prometheus` installs Debian's prometheus package"


def promtool(*args: str) -> str:
    """``promtool ARGS`` in deploy/prometheus (relative rule files resolve there); its output."""
    assert PROMTOOL is not None, f"promtool {NOT_INSTALLED}"
    ran = subprocess.run(
        [PROMTOOL, *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
    )
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, f"promtool {' '.join(args)} exited {ran.returncode}:\n{output}"
    return output


def load_yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), path
    return document


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERT_RULES)["groups"] for rule in group["rules"]]


def panels_of(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in container.get("panels", []):
        yield panel
        yield from panels_of(panel)


def dashboard_expressions(path: Path) -> dict[str, list[str]]:
    """Each panel's title and its queries' PromQL."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    return {
        panel["title"]: [target["expr"] for target in panel.get("targets", [])]
        for panel in panels_of(dashboard)
        if panel.get("type") != "row"
    }


def alert_expressions() -> dict[str, list[str]]:
    return {rule["alert"]: [rule["expr"]] for rule in alert_rules()}


def exported_names(registries: list[Any]) -> set[str]:
    """The sample names Prometheus sees from these registries: a counter ``c`` as ``c_total``,
    a histogram ``h`` as ``h_bucket``, ``h_sum`` and ``h_count`` (and ``_created`` for both),
    whether or not a labelled child has been created yet."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    names: set[str] = set()
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
            names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture(scope="module")
def exported(synthesizer: SpeechSynthesizer) -> set[str]:
    """What the control API and a worker export, engine states read from real engines."""
    api = ServiceMetrics()
    api.watch_engines(synthesizer.registry)
    worker = WorkerMetrics()
    worker.watch_engines(synthesizer.registry)
    return exported_names([api.registry, worker.registry])


def unknown_metrics(expressions: dict[str, list[str]], exported: set[str]) -> dict[str, set[str]]:
    unknown = {
        where: {name for expr in exprs for name in METRIC_NAME.findall(expr)} - exported
        for where, exprs in expressions.items()
    }
    return {where: names for where, names in unknown.items() if names}


def unknown_jobs(expressions: dict[str, list[str]]) -> dict[str, set[str]]:
    """Job matchers that select none of the jobs prometheus.yml scrapes."""
    jobs = {str(job["job_name"]) for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    unknown: dict[str, set[str]] = {}
    for where, exprs in expressions.items():
        for expr in exprs:
            for operator, value in JOB_MATCHER.findall(expr):
                value = GRAFANA_VARIABLES.get(value, value)
                if operator == "=" and value in jobs:
                    continue
                if operator == "=~" and any(re.fullmatch(value, job) for job in jobs):
                    continue
                unknown.setdefault(where, set()).add(f"job{operator}{value!r}")
    return unknown


def on_this_machine(config: dict[str, Any], secrets: Path) -> dict[str, Any]:
    """``config`` as Prometheus sees it in its container, laid out on this machine: rule files
    by absolute path, each ``/run/secrets/NAME`` credentials file as ``secrets/NAME``."""
    jobs = []
    for job in config["scrape_configs"]:
        authorization = job.get("authorization")
        if authorization and str(authorization["credentials_file"]).startswith(SECRETS_DIR):
            name = str(authorization["credentials_file"]).removeprefix(SECRETS_DIR)
            job = {
                **job,
                "authorization": {**authorization, "credentials_file": str(secrets / name)},
            }
        jobs.append(job)
    rule_files = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    return {**config, "rule_files": rule_files, "scrape_configs": jobs}


def credentials_files(config: dict[str, Any]) -> list[str]:
    return [
        str(job["authorization"]["credentials_file"])
        for job in config["scrape_configs"]
        if "authorization" in job
    ]


def test_prometheus_config_passes_promtool_with_its_rules(tmp_path: Path) -> None:
    promtool("check", "config", "--syntax-only", PROMETHEUS_CONFIG.name)
    # and in full (rule files, credentials files) as its container would have it
    shipped = load_yaml(PROMETHEUS_CONFIG)
    config = on_this_machine(shipped, tmp_path)
    for secret in credentials_files(config):
        Path(secret).write_text(METRICS_KEY, encoding="utf-8")
    deployed = tmp_path / PROMETHEUS_CONFIG.name
    deployed.write_text(yaml.safe_dump(config), encoding="utf-8")
    output = promtool("check", "config", "--lint-fatal", str(deployed))
    assert f"SUCCESS: {len(shipped['rule_files'])} rule files found" in output, output
    assert f"SUCCESS: {deployed} is valid prometheus config file syntax" in output, output


def test_monitoring_matches_the_compose_file() -> None:
    services = load_yaml(COMPOSE)["services"]
    prometheus = services["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    secrets = [SECRETS_DIR + name for name in prometheus.get("secrets", [])]
    assert set(credentials_files(load_yaml(PROMETHEUS_CONFIG))) <= set(secrets)
    providers = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    grafana_volumes = services["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana_volumes
    for provider in providers:
        assert f"./grafana/dashboards:{provider['options']['path']}:ro" in grafana_volumes
    for job, targets in COMPOSE_TARGETS.items():
        for target in targets:
            service, _, port = target.partition(":")
            command = [str(word) for word in services[service]["command"]]
            if job == AGENT_JOB:  # the worker's metrics, reachable from other containers
                assert command[command.index("--metrics-port") + 1] == port, service
                assert command[command.index("--metrics-host") + 1] == "0.0.0.0", service
            else:
                assert command[command.index("--port") + 1] == port, service


def test_prometheus_scrapes_the_compose_services_every_5_s() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {str(job["job_name"]): job for job in config["scrape_configs"]}
    for name, targets in COMPOSE_TARGETS.items():
        job = jobs[name]
        assert job["scrape_interval"] == SERVICE_SCRAPE_INTERVAL, name
        assert [t for group in job["static_configs"] for t in group["targets"]] == targets
    assert config["rule_files"] == [ALERT_RULES.name]


def test_alert_rules_pass_promtool() -> None:
    output = promtool("check", "rules", ALERT_RULES.name)
    assert f"SUCCESS: {len(alert_rules())} rules found" in output, output


def test_alert_rule_unit_tests_pass() -> None:
    output = promtool("test", "rules", ALERT_TESTS.name)
    assert "SUCCESS" in output, output


def test_every_alert_is_tested_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(ALERT_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts - firing == set(), "alerts without a firing case"
    assert alerts - quiet == set(), "alerts without a case where they stay quiet"


def labels_kept(expr: str, label: str) -> bool:
    """Whether the alerts of ``expr`` carry ``label``: every ``by (...)`` keeps it, or with no
    aggregation the selected series have it (all scraped series have an instance)."""
    clauses = [{name.strip() for name in by.split(",")} for by in AGGREGATED_BY.findall(expr)]
    if clauses:
        return all(label in clause for clause in clauses)
    return label == "instance" or re.search(rf"\b{label}\s*!?=", expr) is not None


def test_every_alert_has_a_severity_and_names_its_instance_and_engine() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        summary = rule["annotations"]["summary"]
        assert summary and rule["annotations"]["description"], rule["alert"]
        for label in ("instance", "engine"):
            if labels_kept(rule["expr"], label):
                assert f"$labels.{label}" in summary, (rule["alert"], label)


def test_the_last_resort_engine_circuit_is_critical() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    last_resort = [r for r in rules.values() if 'engine="espeak-ng"' in r["expr"]]
    assert [r["labels"]["severity"] for r in last_resort] == ["critical"]


def test_alerts_read_only_exported_metrics(exported: set[str]) -> None:
    assert unknown_metrics(alert_expressions(), exported) == {}
    assert unknown_jobs(alert_expressions()) == {}


def test_dashboards_read_only_exported_metrics(exported: set[str]) -> None:
    assert DASHBOARDS, "no dashboard in deploy/grafana/dashboards"
    for path in DASHBOARDS:
        expressions = dashboard_expressions(path)
        assert all(expressions.values()), f"{path.name}: panels without a query"
        assert unknown_metrics(expressions, exported) == {}, path.name
        assert unknown_jobs(expressions) == {}, path.name


def family_of(sample_name: str) -> str:
    return SAMPLE_SUFFIX.sub("", sample_name)


def test_the_dashboard_charts_every_metric_family(exported: set[str]) -> None:
    charted = {
        family_of(name)
        for path in DASHBOARDS
        for exprs in dashboard_expressions(path).values()
        for expr in exprs
        for name in METRIC_NAME.findall(expr)
    }
    families = {family_of(name) for name in exported}
    assert families - charted == set(), "metrics without a panel in deploy/grafana/dashboards"


def test_dashboards_query_the_provisioned_datasource() -> None:
    datasources = load_yaml(DATASOURCES)["datasources"]
    assert [(d["type"], d["url"]) for d in datasources] == [
        ("prometheus", "http://prometheus:9090")
    ]
    uid = datasources[0]["uid"]
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        panels = list(panels_of(dashboard))
        assert len({p["id"] for p in panels}) == len(panels), f"{path.name}: panel ids repeat"
        for panel in panels:
            for source in [panel, *panel.get("targets", [])]:
                assert source["datasource"]["uid"] == uid, (path.name, panel["title"])


def test_the_worker_metrics_host_comes_from_config_or_flag(tmp_path: Path) -> None:
    assert ServiceConfig().agent.metrics_host == "127.0.0.1"
    assert load_config(PROJECT_ROOT / "config.yaml").agent.metrics_host == "127.0.0.1"
    path = tmp_path / "config.yaml"
    path.write_text("agent:\n  metrics_host: 0.0.0.0\n", encoding="utf-8")
    config = load_config(path)
    assert config.agent.metrics_host == "0.0.0.0"
    unchanged = with_agent_flags(config, build_parser().parse_args(["agent"]))
    assert unchanged.agent.metrics_host == "0.0.0.0"
    args = build_parser().parse_args(["agent", "--metrics-host", "::", "--metrics-port", "9100"])
    flagged = with_agent_flags(config, args).agent
    assert (flagged.metrics_host, flagged.metrics_port) == ("::", 9100)


@dataclass(frozen=True)
class Prometheus:
    """A ``prometheus`` process on a free loopback port, with its own storage."""

    url: str
    log: Path

    async def query(self, session: aiohttp.ClientSession, expr: str) -> list[dict[str, Any]]:
        """The instant query's result (vector elements: ``metric`` labels and ``value``)."""
        async with session.get(f"{self.url}/api/v1/query", params={"query": expr}) as reply:
            body = await reply.json()
        assert body["status"] == "success", (expr, body)
        result = body["data"]["result"]
        assert isinstance(result, list), (expr, body)
        return result

    async def by_job(self, session: aiohttp.ClientSession, expr: str) -> dict[str, float]:
        return {r["metric"]["job"]: float(r["value"][1]) for r in await self.query(session, expr)}

    async def rules(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        async with session.get(f"{self.url}/api/v1/rules") as reply:
            body = await reply.json()
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]


@dataclass(frozen=True)
class Monitored:
    api: Server
    worker: WorkerProcess
    prometheus: Prometheus


def live_prometheus_config(api_target: str, worker_target: str, secrets: Path) -> dict[str, Any]:
    """The shipped prometheus.yml with its service jobs pointed at live processes, scraped and
    evaluated every second."""
    shipped = on_this_machine(load_yaml(PROMETHEUS_CONFIG), secrets)
    targets = {API_JOB: api_target, AGENT_JOB: worker_target}
    jobs = [
        {
            **job,
            "scrape_interval": LIVE_SCRAPE_INTERVAL,
            "static_configs": [{"targets": [targets[job["job_name"]]]}],
        }
        for job in shipped["scrape_configs"]
        if job["job_name"] in targets
    ]
    return {
        "global": {
            "scrape_interval": LIVE_SCRAPE_INTERVAL,
            "evaluation_interval": LIVE_SCRAPE_INTERVAL,
        },
        "rule_files": shipped["rule_files"],
        "scrape_configs": jobs,
    }


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), PROCESS_STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()


async def start_prometheus(
    config: dict[str, Any], directory: Path
) -> tuple[asyncio.subprocess.Process, Prometheus]:
    assert PROMETHEUS is not None, f"prometheus {NOT_INSTALLED}"
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    started = Prometheus(f"http://127.0.0.1:{free_port()}", directory / "prometheus.log")
    with started.log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            PROMETHEUS,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={directory / 'prometheus-data'}",
            f"--web.listen-address={urlsplit(started.url).netloc}",
            "--log.level=warn",
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    async with aiohttp.ClientSession() as session:

        async def ready() -> bool:
            assert process.returncode is None, started.log.read_text()
            try:
                async with session.get(f"{started.url}/-/ready") as reply:
                    return reply.status == 200
            except aiohttp.ClientConnectionError:
                return False

        try:
            await eventually(ready, PROMETHEUS_START_TIMEOUT_S, "prometheus ready")
        except BaseException:
            await stop(process)
            raise
    return process, started


@pytest.fixture(scope="module")
async def monitored(
    livekit_server: DevServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Monitored]:
    """A control API process and a worker on ``livekit_server`` (loading their engines at the
    same time), then a Prometheus scraping both."""
    directory = tmp_path_factory.mktemp("monitoring")
    config = directory / "config.yaml"
    config.write_text(MONITORED_CONFIG, encoding="utf-8")
    api = Server(free_port(), directory / "serve.log")
    api_process = await start_serve(api, config, {API_KEYS_ENV: METRICS_KEY})
    try:
        async with running_workers([livekit_server], config, directory) as workers:
            (worker,) = workers
            async with aiohttp.ClientSession() as session:
                await wait_until_healthy(api_process, api, session)
            assert worker.metrics_url is not None
            targets = (f"127.0.0.1:{api.port}", urlsplit(worker.metrics_url).netloc)
            scraping = live_prometheus_config(*targets, directory)
            for secret in credentials_files(scraping):
                Path(secret).write_text(METRICS_KEY, encoding="utf-8")
            process, prometheus = await start_prometheus(scraping, directory)
            try:
                yield Monitored(api, worker, prometheus)
            finally:
                await stop(process)
    finally:
        await stop(api_process)


def worker_target(monitored: Monitored) -> str:
    assert monitored.worker.metrics_url is not None
    return urlsplit(monitored.worker.metrics_url).netloc


async def test_prometheus_scrapes_the_live_api_and_worker(monitored: Monitored) -> None:
    prometheus = monitored.prometheus
    both_ready = {API_JOB: 1.0, AGENT_JOB: 1.0}
    async with aiohttp.ClientSession() as session:

        async def scraped() -> bool:
            return await prometheus.by_job(session, "up") == both_ready

        await eventually(scraped, SCRAPED_TIMEOUT_S, f"both targets up ({prometheus.log})")

        async def piper_ready() -> bool:
            ready = 'tts_engine_state{engine="piper",state="ready"}'
            return await prometheus.by_job(session, ready) == both_ready

        await eventually(piper_ready, SCRAPED_TIMEOUT_S, "piper ready on the API and the worker")
        loads = await prometheus.query(session, "tts_worker_load")
    assert [(r["metric"]["job"], r["metric"]["instance"]) for r in loads] == [
        (AGENT_JOB, worker_target(monitored))
    ]
    assert 0.0 <= float(loads[0]["value"][1]) <= 1.0


def test_the_worker_metrics_bind_only_the_configured_host(monitored: Monitored) -> None:
    host, _, port = worker_target(monitored).rpartition(":")
    assert host == WORKER_METRICS_HOST
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", int(port))):
        pass


async def test_a_synthesis_request_reaches_prometheus(monitored: Monitored) -> None:
    prometheus = monitored.prometheus
    request = {"text": "Counted by Prometheus.", "voice_id": "en-us-male-premium"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            monitored.api.url("/synthesize"),
            json={**request, "engine": "piper"},
            headers={"Authorization": f"Bearer {METRICS_KEY}"},
            timeout=aiohttp.ClientTimeout(total=SYNTHESIS_TIMEOUT_S),
        ) as reply:
            body = await reply.json()
        assert reply.status == 200, body
        assert body["engine"] == "piper"
        counted = f'tts_synthesis_requests_total{{job="{API_JOB}",engine="piper",outcome="ok"}}'
        first_audio = f'tts_ttft_duration_seconds_count{{job="{API_JOB}",engine="piper"}}'

        async def observed() -> bool:
            return await prometheus.by_job(session, counted) == {API_JOB: 1.0}

        await eventually(observed, SCRAPED_TIMEOUT_S, f"{counted} == 1")
        assert await prometheus.by_job(session, first_audio) == {API_JOB: 1.0}


async def test_every_dashboard_and_alert_expression_runs_on_prometheus(
    monitored: Monitored,
) -> None:
    expressions = {
        f"{path.name}: {title}": exprs
        for path in DASHBOARDS
        for title, exprs in dashboard_expressions(path).items()
    }
    expressions.update(alert_expressions())
    async with aiohttp.ClientSession() as session:
        for exprs in expressions.values():
            for expr in exprs:
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                assert "$" not in expr, expr
                await monitored.prometheus.query(session, expr)


async def test_prometheus_evaluates_every_alert_rule(monitored: Monitored) -> None:
    wanted = {rule["alert"] for rule in alert_rules()}
    async with aiohttp.ClientSession() as session:
        rules: list[dict[str, Any]] = []

        async def evaluated() -> bool:
            nonlocal rules
            rules = await monitored.prometheus.rules(session)
            return all(rule["health"] == "ok" for rule in rules) and len(rules) == len(wanted)

        await eventually(evaluated, SCRAPED_TIMEOUT_S, "every rule evaluated")
    assert {rule["name"] for rule in rules} == wanted
    firing = [rule["name"] for rule in rules if rule["state"] == "firing"]
    assert firing == []
