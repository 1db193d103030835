"""The container image, checked without Docker (none runs here).

The Dockerfile is parsed: its stages, base pins, user, ports, and the files it copies, which must
hold every first-party module the entry points reach (imports followed statically) and every
data file those modules read. Then the image's own command runs from a clean venv built from the
runtime lock alone (cached per lock, ``.cache/image-venv-<hash>``) with exactly the files the
Dockerfile copies: a file or package missing from the image fails here. The requirement locks are
checked against pyproject's declared dependencies, and ``hive-tts serve`` is checked to refuse an
open API off loopback.
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import importlib.metadata
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

import control_api
from agent.livekit_server import free_port
from hive_tts.cli import main
from tests.api_fixtures import decode_wav

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "Dockerfile"
PYPROJECT = REPO_ROOT / "pyproject.toml"
RUNTIME_LOCK = REPO_ROOT / "requirements-runtime.lock"
TEST_LOCK = REPO_ROOT / "requirements-test.lock"
ENTRY_MODULES = ("control_api", "agent.worker", "tools.fetch_models")
"""Run in the image besides the console scripts of pyproject's [project.scripts]."""
IMAGE_VENV_CACHE = REPO_ROOT / ".cache"
IMAGE_VENV_PREFIX = "image-venv-"
VENV_COMPLETE_MARK = ".complete"
VENV_BOOTSTRAP = frozenset({canonicalize_name("pip"), canonicalize_name("setuptools")})
"""What ``python -m venv`` puts in every venv, and no lock pins."""
PROJECT = canonicalize_name("hive-tts")
IMAGE_PORT = 8003
WORKER_METRICS_PORT = 9100
IMAGE_API_KEY = "image-test-key"
PINNED_IMAGE = re.compile(r"^[\w.\-/]+:\d+\.\d+\.\d+[\w.\-]*@sha256:[0-9a-f]{64}$")
ROOT_USERS = frozenset({"root", "0"})
SKIPPED_IN_COPY = frozenset({"__pycache__"})
MAX_PATH_CHARS = 200
VENV_BUILD_TIMEOUT_S = 1800.0
"""The runtime lock from the registry into an empty venv (≈ 3 min measured, mostly torch)."""
PIP_TIMEOUT_S = 300.0
COMMAND_TIMEOUT_S = 120.0
SERVER_START_TIMEOUT_S = 240.0
"""A fresh models/ dir: Kokoro's model joined, Piper's graph split, every engine warmed."""
SERVER_STOP_TIMEOUT_S = 30.0
HEALTH_POLL_S = 0.25
REFUSAL_MAX_S = 10.0
"""The refusal comes before any engine loads: a few imports' worth of time, even when busy."""
LIVEKIT_RATE_HZ = 48_000
MIN_SPOKEN_S = 0.5


# --- the Dockerfile, parsed ---------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    """Upper-cased: FROM, COPY, RUN, ..."""
    value: str
    """The arguments, continuation lines joined with spaces."""
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages of a Dockerfile: comments dropped (also inside continued instructions, as Docker
    does), ``\\``-continued lines joined; instructions before the first FROM must be ARGs."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        keyword, _, value = " ".join(pending).partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip(), start))
        pending = []
    assert not pending, f"Dockerfile ends inside a continued instruction (line {start})"

    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = [w for w in instruction.value.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append(instruction)
        else:
            assert instruction.keyword == "ARG", f"{instruction.keyword} before FROM"
    return stages


def arguments(instruction: Instruction) -> tuple[dict[str, str], list[str]]:
    """``--flag=value`` options and the other words of a COPY / CMD-like instruction (JSON or
    shell form)."""
    if instruction.value.startswith("["):
        words: list[str] = json.loads(instruction.value)
    else:
        words = shlex.split(instruction.value)
    flags: dict[str, str] = {}
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name] = value
    return flags, words


def env_of(stage: Stage, base_path: str) -> dict[str, str]:
    """The stage's ``ENV`` values (``KEY=VALUE`` form), ``$PATH`` expanded from ``base_path``."""
    values: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for pair in shlex.split(instruction.value):
            key, sep, value = pair.partition("=")
            assert sep, f"line {instruction.line}: use ENV KEY=VALUE"
            values[key] = value.replace("$PATH", values.get("PATH", base_path))
    return values


def workdir_of(stage: Stage) -> PurePosixPath:
    directory = PurePosixPath("/")
    for instruction in stage.all("WORKDIR"):
        directory = directory / instruction.value
    return directory


def context_files(source: Path) -> Iterator[Path]:
    """What ``COPY source`` takes from the build context: the file, or the directory's files."""
    if source.is_file():
        yield source
        return
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_file() and not SKIPPED_IN_COPY & set(relative.parts):
            yield path


ImageFiles = dict[PurePosixPath, Path]
"""Path in the image -> the build-context file it comes from."""


def image_files(stages: list[Stage]) -> list[ImageFiles]:
    """The files each stage holds from the build context, directly or from an earlier stage."""
    by_stage: list[ImageFiles] = []
    names: dict[str, int] = {}
    for index, stage in enumerate(stages):
        files: ImageFiles = {}
        directory = PurePosixPath("/")
        for instruction in stage.instructions:
            if instruction.keyword == "WORKDIR":
                directory = directory / instruction.value
            if instruction.keyword not in ("COPY", "ADD"):
                continue
            flags, words = arguments(instruction)
            *sources, destination = words
            target = directory / destination
            into_directory = destination.endswith("/") or len(sources) > 1
            for source in sources:
                assert not set(source) & set("*?["), f"line {instruction.line}: no wildcards"
                if "from" in flags:
                    earlier = by_stage[names[flags["from"]]]
                    root = PurePosixPath(source)
                    for path, origin in earlier.items():
                        if path == root:
                            files[target / path.name if into_directory else target] = origin
                        elif root in path.parents:
                            files[target / path.relative_to(root)] = origin
                    continue
                origin = REPO_ROOT / source
                assert origin.exists(), f"line {instruction.line}: {source} is not in the repo"
                for file in context_files(origin):
                    if file == origin:
                        files[target / file.name if into_directory else target] = file
                    else:
                        files[target / file.relative_to(origin)] = file
        by_stage.append(files)
        if stage.name:
            names[stage.name] = index
    return by_stage


@dataclass(frozen=True)
class Image:
    stages: list[Stage]
    files: ImageFiles
    """The final stage's files from the build context."""

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    @property
    def app_dir(self) -> PurePosixPath:
        return workdir_of(self.final)

    def command(self) -> list[str]:
        (cmd,) = self.final.all("CMD")
        assert cmd.value.startswith("["), "CMD in exec (JSON) form, so signals reach hive-tts"
        return arguments(cmd)[1]

    def healthcheck(self) -> list[str]:
        (check,) = self.final.all("HEALTHCHECK")
        options, _, command = check.value.partition(" CMD ")
        return arguments(Instruction("CMD", command.strip(), check.line))[1]

    def app_files(self) -> dict[Path, Path]:
        """Files under the app directory: relative path in the app -> build-context file."""
        return {
            Path(str(path.relative_to(self.app_dir))): origin
            for path, origin in self.files.items()
            if self.app_dir in path.parents
        }


@pytest.fixture(scope="module")
def image() -> Image:
    stages = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    return Image(stages, image_files(stages)[-1])


# --- what the entry points reach ----------------------------------------------------------


def first_party_roots() -> frozenset[str]:
    packages = {p.parent.name for p in REPO_ROOT.glob("*/__init__.py")}
    return frozenset(packages | {p.stem for p in REPO_ROOT.glob("*.py")})


def module_file(module: str) -> Path | None:
    base = REPO_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, imports inside functions included, except under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(tree):
        if _is_type_checking(child):
            continue
        yield child
        yield from runtime_nodes(child)


def package_of(path: Path) -> str:
    """The package a module's relative imports start from."""
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


@dataclass
class Imports:
    first_party: set[str] = field(default_factory=set)
    """Dotted names: ``a.b`` for ``import a.b``; ``a`` and ``a.b`` for ``from a import b``
    (``b`` may be a submodule); relative imports resolved."""
    third_party: set[str] = field(default_factory=set)
    """The statements themselves (``from TTS.tts.models.xtts import Xtts``), stdlib excluded."""
    resource_packages: set[str] = field(default_factory=set)
    """Packages whose files are read: ``resources.files("speechmos")``, by constant or name."""


def string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments."""
    constants: dict[str, str] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            constants.update(
                {t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)}
            )
    return constants


def resource_package(node: ast.AST, constants: dict[str, str]) -> str | None:
    """``x`` of ``resources.files(x)`` when ``x`` is a string or a module constant."""
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "files"
        and "resources" in ast.unparse(node.func.value)
        and node.args
    ):
        return None
    argument = node.args[0]
    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
        return argument.value
    return constants.get(argument.id) if isinstance(argument, ast.Name) else None


def imports_of(path: Path, roots: frozenset[str]) -> Imports:
    found = Imports()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = string_constants(tree)
    for node in runtime_nodes(tree):
        read_from = resource_package(node, constants)
        if read_from is not None:
            found.resource_packages.add(read_from)
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.partition(".")[0]
                if top in roots:
                    found.first_party.add(alias.name)
                elif top not in sys.stdlib_module_names:
                    found.third_party.add(f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package_of(path).split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            top = module.partition(".")[0]
            if top in roots:
                found.first_party.add(module)
                found.first_party.update(f"{module}.{alias.name}" for alias in node.names)
            elif top not in sys.stdlib_module_names:
                found.third_party.add(ast.unparse(node))
    return found


@dataclass(frozen=True)
class Reach:
    modules: frozenset[Path]
    """First-party module files the entry points import, directly or not."""
    third_party: frozenset[str]
    """The import statements of other packages in those modules."""
    resource_packages: frozenset[str]
    """Packages whose files those modules read."""


def entry_modules() -> list[str]:
    project: dict[str, Any] = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    scripts: dict[str, str] = project["scripts"]
    return [target.partition(":")[0] for target in scripts.values()] + list(ENTRY_MODULES)


def reach_from(entries: list[str]) -> Reach:
    roots = first_party_roots()
    seen: set[Path] = set()
    third_party: set[str] = set()
    resource_packages: set[str] = set()
    queue = list(entries)
    while queue:
        parts = queue.pop().split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            path = module_file(".".join(parts[:depth]))
            if path is None or path in seen:
                continue
            seen.add(path)
            imports = imports_of(path, roots)
            queue.extend(imports.first_party)
            third_party |= imports.third_party
            resource_packages |= imports.resource_packages
    return Reach(frozenset(seen), frozenset(third_party), frozenset(resource_packages))


@pytest.fixture(scope="module")
def reach() -> Reach:
    return reach_from(entry_modules())


def data_files_read(modules: frozenset[Path]) -> set[Path]:
    """Repository files (not modules) named by a string in a module: ``Path(__file__)
    .with_name("voice_quality.json")``, ``PROJECT_ROOT / "config.yaml"``, a default of
    ``Path("voices.yaml")`` relative to the config file beside it."""
    found: set[Path] = set()
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            text = node.value
            if not text.isprintable() or len(text) > MAX_PATH_CHARS or text.startswith("/"):
                continue  # absolute paths are the machine's, not the repository's
            for candidate in (REPO_ROOT / text, module.parent / text):
                resolved = candidate.resolve()
                if (
                    resolved.is_file()
                    and resolved.suffix != ".py"
                    and REPO_ROOT in resolved.parents
                ):
                    found.add(resolved.relative_to(REPO_ROOT))
    return found


# --- the Dockerfile's checks --------------------------------------------------------------


def test_every_base_image_is_pinned_by_version_and_digest(image: Image) -> None:
    names = {stage.name for stage in image.stages if stage.name}
    bases = [stage.base for stage in image.stages if stage.base not in names]
    assert bases
    for base in bases:
        assert PINNED_IMAGE.match(base), f"{base}: pin an exact tag and its @sha256 digest"
    assert len(set(bases)) == 1, "builder and final stage share one base (the venv's Python)"


def test_the_final_stage_runs_as_a_created_non_root_user(image: Image) -> None:
    users = image.final.all("USER")
    assert users, "the final stage needs a USER"
    user = users[-1].value.split(":")[0]
    assert user not in ROOT_USERS
    assert any(f" {user}" in run.value for run in image.final.all("RUN") if "useradd" in run.value)
    (cmd,) = image.final.all("CMD")
    assert users[-1].line < cmd.line


def test_the_builder_installs_the_runtime_lock_and_nothing_else(image: Image) -> None:
    installed: list[Path] = []
    for stage, files in zip(image.stages, image_files(image.stages), strict=True):
        for run in stage.all("RUN"):
            for command in re.split(r"&&|;", run.value):
                words = shlex.split(command)
                if words[:2] != ["pip", "install"]:
                    continue
                assert "--no-deps" in words, f"line {run.line}: exact pins only: {command}"
                if "-r" in words:
                    lock = workdir_of(stage) / words[words.index("-r") + 1]
                    installed.append(files[lock])
                else:
                    assert words[-1] == "." and words[-2] in ("-e", "--no-deps"), command
    assert installed == [RUNTIME_LOCK]
    for stage_files in image_files(image.stages):
        assert TEST_LOCK not in stage_files.values(), "the test lock is never in the image"
    for stage in image.stages:
        assert not [i.line for i in stage.instructions if TEST_LOCK.name in i.value]


def test_every_module_the_entry_points_reach_is_copied(image: Image, reach: Reach) -> None:
    copied = image.app_files()
    assert {"hive_tts.cli", "control_api", "agent.worker", "tools.fetch_models"} <= {
        module_name(path) for path in reach.modules
    }
    missing = sorted(
        str(path.relative_to(REPO_ROOT))
        for path in reach.modules
        if copied.get(path.relative_to(REPO_ROOT)) != path
    )
    assert not missing, f"imported by the entry points, not copied into {image.app_dir}: {missing}"


def test_every_data_file_the_code_reads_is_copied(image: Image, reach: Reach) -> None:
    read = data_files_read(reach.modules)
    assert {Path("config.yaml"), Path("voices.yaml"), Path("engines/voice_quality.json")} <= read
    missing = sorted(str(path) for path in read if path not in image.app_files())
    assert not missing, f"read at run time, not copied into {image.app_dir}: {missing}"


def test_the_image_serves_by_default_and_exposes_the_api_and_worker_metrics(image: Image) -> None:
    command = image.command()
    assert command[:2] == ["hive-tts", "serve"]
    assert command[command.index("--port") + 1] == str(IMAGE_PORT)
    exposed = {word for expose in image.final.all("EXPOSE") for word in expose.value.split()}
    assert {str(IMAGE_PORT), str(WORKER_METRICS_PORT)} <= exposed
    assert image.final.all("HEALTHCHECK")
    assert f":{IMAGE_PORT}/health" in env_of(image.final, "")["HIVE_TTS_HEALTH_URL"]


def test_models_are_fetched_at_build_time_only_when_asked(image: Image) -> None:
    (arg,) = [a for a in image.final.all("ARG") if a.value.startswith("FETCH_MODELS")]
    assert arg.value == 'FETCH_MODELS=""'
    fetch = [run for run in image.final.all("RUN") if "tools.fetch_models" in run.value]
    assert len(fetch) == 1 and '[ -n "$FETCH_MODELS" ]' in fetch[0].value
    (volume,) = image.final.all("VOLUME")
    assert json.loads(volume.value) == [str(image.app_dir / "models")]
    assert fetch[0].line < volume.line, "a VOLUME discards what later build steps write there"


def test_the_parser_joins_continuations_and_drops_comments() -> None:
    stages = parse_dockerfile(
        "ARG X=1\nFROM a:1 AS b\n# c\nRUN one \\\n  # inside\n  two\nCOPY --from=b x y\n"
        'FROM b\nCMD ["z"]\n'
    )
    assert [(s.base, s.name) for s in stages] == [("a:1", "b"), ("b", None)]
    assert [(i.keyword, i.value, i.line) for i in stages[0].instructions] == [
        ("RUN", "one two", 4),
        ("COPY", "--from=b x y", 7),
    ]
    assert arguments(stages[1].instructions[0]) == ({}, ["z"])


# --- the locks ----------------------------------------------------------------------------


def read_lock(path: Path) -> dict[NormalizedName, str]:
    pins: dict[NormalizedName, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.strip().partition("==")
        assert sep and version, f"{path.name}: {line!r} is not name==version"
        key = canonicalize_name(name)
        assert key not in pins, f"{path.name} pins {name} twice"
        pins[key] = version
    return pins


def requirement_closure(roots: list[str]) -> set[NormalizedName]:
    """Distributions ``roots`` need, transitively, from the installed packages' metadata (extras
    followed; environment markers evaluated here)."""
    needed: dict[NormalizedName, set[str]] = {}
    queue = [Requirement(root) for root in roots]
    while queue:
        requirement = queue.pop()
        name = canonicalize_name(requirement.name)
        extras = needed.get(name)
        if extras is not None and set(requirement.extras) <= extras:
            continue
        extras = (extras or set()) | set(requirement.extras)
        needed[name] = extras
        if name in VENV_BOOTSTRAP:
            continue
        for text in importlib.metadata.requires(name) or []:
            dependency = Requirement(text)
            if dependency.marker is None or any(
                dependency.marker.evaluate({"extra": extra}) for extra in extras | {""}
            ):
                queue.append(dependency)
    return set(needed)


def test_locks_pin_each_package_once_with_one_version() -> None:
    runtime, tests = read_lock(RUNTIME_LOCK), read_lock(TEST_LOCK)
    assert not runtime.keys() & tests.keys(), "a package is in both locks"


def test_locks_pin_exactly_what_pyproject_declares_and_the_venv_runs() -> None:
    project: dict[str, Any] = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    runtime_roots = [*project["dependencies"], *extras["engines"]]
    runtime, tests = read_lock(RUNTIME_LOCK), read_lock(TEST_LOCK)
    runtime_needs = requirement_closure(runtime_roots) - VENV_BOOTSTRAP
    every_need = requirement_closure([*runtime_roots, *extras["dev"]]) - VENV_BOOTSTRAP
    assert set(runtime) == runtime_needs, "requirements-runtime.lock != dependencies + engines"
    assert set(tests) == every_need - runtime_needs, "requirements-test.lock != dev's additions"
    installed = {
        name: importlib.metadata.version(name) for name in (*runtime, *tests) if name != PROJECT
    }
    assert installed == {**runtime, **tests}, "the venv was not built from these locks"


# --- hive-tts serve off loopback ----------------------------------------------------------


@dataclass
class ServeCalls:
    """What ``hive-tts serve`` would have started: (host, port) per run, apps built."""

    runs: list[tuple[str, int]] = field(default_factory=list)
    apps: int = 0


@pytest.fixture
def serve_calls(monkeypatch: pytest.MonkeyPatch) -> ServeCalls:
    """``hive-tts serve`` in process with the app factory and the server replaced by recorders,
    the shipped config.yaml (no keys) and no key in the environment."""
    from aiohttp import web

    calls = ServeCalls()

    def create_app(*_: object, **__: object) -> web.Application:
        calls.apps += 1
        return web.Application()

    def run_app(_: web.Application, *, host: str, port: int, **__: object) -> None:
        calls.runs.append((host, port))

    for variable in (
        "HIVE_TTS_API_KEYS",
        "HIVE_TTS_ADMIN_KEYS",
        "HIVE_TTS_CONFIG",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(control_api, "create_app", create_app)
    monkeypatch.setattr(web, "run_app", run_app)
    return calls


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "tts.example.org", ""])
def test_serve_refuses_off_loopback_without_keys_before_loading_anything(
    serve_calls: ServeCalls, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    port = free_port()
    started = time.perf_counter()
    assert main(["serve", "--host", host, "--port", str(port)]) == 2
    assert time.perf_counter() - started < REFUSAL_MAX_S
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("hive-tts: keys_required: ")
    assert "HIVE_TTS_API_KEYS" in error and "--insecure-no-auth" in error
    assert serve_calls.apps == 0 and not serve_calls.runs
    assert port_is_free(port)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_serve_on_loopback_needs_no_keys(serve_calls: ServeCalls, host: str) -> None:
    assert main(["serve", "--host", host, "--port", "8003"]) == 0
    assert serve_calls.runs == [(host, 8003)]


def test_serve_off_loopback_starts_with_keys_from_the_environment(
    serve_calls: ServeCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIVE_TTS_API_KEYS", "k1")
    assert main(["serve", "--host", "0.0.0.0", "--port", "8003"]) == 0
    assert serve_calls.runs == [("0.0.0.0", 8003)]


def test_serve_off_loopback_starts_with_keys_from_the_config(
    serve_calls: ServeCalls, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("api:\n  admin_keys: [only-admins]\n", encoding="utf-8")
    assert main(["--config", str(config), "serve", "--host", "0.0.0.0"]) == 0
    assert serve_calls.runs == [("0.0.0.0", IMAGE_PORT)]


def test_serve_off_loopback_without_keys_when_explicitly_allowed(
    serve_calls: ServeCalls,
) -> None:
    assert main(["serve", "--host", "0.0.0.0", "--insecure-no-auth"]) == 0
    assert serve_calls.runs == [("0.0.0.0", IMAGE_PORT)]


# --- the image's command, from a venv of the runtime lock and the copied files -------------


def _run(command: list[str], timeout_s: float, **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout_s, check=False, **options
    )


def site_packages(venv: Path) -> Path:
    return (
        venv
        / "lib"
        / f"python{sys.version_info.major}.{sys.version_info.minor}"
        / ("site-packages")
    )


def runtime_venv() -> Path:
    """A venv holding the runtime lock and nothing else, built once per lock (and Python) under
    .cache; a build interrupted half-way is started again, older locks' venvs are removed."""
    digest = hashlib.sha256(RUNTIME_LOCK.read_bytes() + sys.version.encode()).hexdigest()[:16]
    venv = IMAGE_VENV_CACHE / f"{IMAGE_VENV_PREFIX}{digest}"
    IMAGE_VENV_CACHE.mkdir(exist_ok=True)
    with (IMAGE_VENV_CACHE / f"{IMAGE_VENV_PREFIX}lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others wait and reuse it
        if (venv / VENV_COMPLETE_MARK).is_file():
            return venv
        for old in IMAGE_VENV_CACHE.glob(f"{IMAGE_VENV_PREFIX}*"):
            if old.is_dir():
                shutil.rmtree(old)
        made = _run([sys.executable, "-m", "venv", str(venv)], COMMAND_TIMEOUT_S)
        assert made.returncode == 0, made.stderr
        python = str(venv / "bin" / "python")
        installed = _run(
            [python, "-m", "pip", "install", "--quiet", "--no-deps", "-r", str(RUNTIME_LOCK)],
            VENV_BUILD_TIMEOUT_S,
        )
        assert installed.returncode == 0, installed.stdout + installed.stderr
        (venv / VENV_COMPLETE_MARK).touch()
    return venv


@dataclass(frozen=True)
class Container:
    """The image's /app and venv, as directories on this machine."""

    app: Path
    venv: Path
    env: dict[str, str]

    def run(
        self, command: list[str], timeout_s: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        return _run(command, timeout_s, cwd=self.app, env=self.env)


def container_env(image: Image, venv: Path, home: Path) -> dict[str, str]:
    """The final stage's ENV with /opt/venv at ``venv``; nothing else from this environment."""
    system_path = "/usr/local/bin:/usr/bin:/bin"
    env = {
        key: value.replace("/opt/venv", str(venv))
        for key, value in env_of(image.final, system_path).items()
    }
    return {"HOME": str(home), "LANG": "C.UTF-8", **env}


@pytest.fixture(scope="module")
def container(image: Image, tmp_path_factory: pytest.TempPathFactory) -> Container:
    """The app directory holds exactly the files the Dockerfile copies; the venv sees the
    runtime lock's venv (through a .pth) and the project, installed in place as the builder
    does, so the cached venv stays untouched."""
    root = tmp_path_factory.mktemp("image")
    app = root / "app"
    for relative, origin in image.app_files().items():
        (app / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, app / relative)
    cached = runtime_venv()
    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], COMMAND_TIMEOUT_S)
    assert made.returncode == 0, made.stderr
    (site_packages(venv) / "runtime_lock.pth").write_text(
        f"import site; site.addsitedir({str(site_packages(cached))!r})\n", encoding="utf-8"
    )
    (root / "home").mkdir()
    env = container_env(image, venv, root / "home")
    python = str(venv / "bin" / "python")
    installed = _run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(app)],
        PIP_TIMEOUT_S,
        env={**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return Container(app, venv, env)


def test_the_image_venv_holds_the_runtime_lock_and_passes_pip_check(
    container: Container,
) -> None:
    checked = container.run(["python", "-m", "pip", "check"])
    assert checked.returncode == 0, checked.stdout
    listed = container.run(["python", "-m", "pip", "list", "--format=json"])
    installed = {canonicalize_name(p["name"]): p["version"] for p in json.loads(listed.stdout)}
    assert PROJECT in installed
    expected = {**read_lock(RUNTIME_LOCK), PROJECT: installed[PROJECT]}
    assert {n: v for n, v in installed.items() if n not in VENV_BOOTSTRAP} == expected


def test_the_image_imports_every_module_the_entry_points_reach(
    container: Container, reach: Reach
) -> None:
    """Every first-party module, every import statement of another package in them (those
    inside functions too: torch, coqui-tts, transformers, edge-tts load only when used) and
    every package whose files they read (DNSMOS's models in speechmos, the bundled voices)."""
    statements = [
        *sorted(reach.third_party),
        *sorted(f"import {module_name(path)}" for path in reach.modules),
        "import importlib.resources",
        *(
            f"assert importlib.resources.files({package!r}).is_dir(), {package!r}"
            for package in sorted(reach.resource_packages)
        ),
    ]
    imported = container.run(
        ["python", "-c", "\n".join(statements)], timeout_s=SERVER_START_TIMEOUT_S
    )
    assert imported.returncode == 0, imported.stderr[-4000:]


def test_the_image_command_refuses_to_serve_without_keys(
    container: Container, image: Image
) -> None:
    refused = container.run(image.command())
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "keys_required" in refused.stderr


def http(
    url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET, or a POST when there is a body."""
    request = urllib.request.Request(url, data=body, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=COMMAND_TIMEOUT_S) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


def wait_until_healthy(server: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text(errors="replace")[-4000:]
        try:
            if http(url)[0] == 200:
                return
        except OSError:
            pass  # not listening yet: the engines are still loading
        time.sleep(HEALTH_POLL_S)
    raise AssertionError(f"no healthy {url} in {SERVER_START_TIMEOUT_S} s")


def test_the_image_command_serves_health_and_speech_with_keys(
    container: Container, image: Image, tmp_path: Path
) -> None:
    port = free_port()
    command = image.command()
    command[command.index("--host") + 1] = "127.0.0.1"  # the image's 0.0.0.0, kept off the LAN
    command[command.index("--port") + 1] = str(port)
    health_url = container.env["HIVE_TTS_HEALTH_URL"].replace(f":{IMAGE_PORT}/", f":{port}/")
    env = {**container.env, "HIVE_TTS_API_KEYS": IMAGE_API_KEY, "HIVE_TTS_HEALTH_URL": health_url}
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            command, cwd=container.app, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        wait_until_healthy(server, health_url, log)
        probe = _run(image.healthcheck(), COMMAND_TIMEOUT_S, cwd=container.app, env=env)
        assert probe.returncode == 0, probe.stderr

        url = f"http://127.0.0.1:{port}/synthesize"
        request = json.dumps({"text": "Hello from the image.", "voice_id": "en-us-male-premium"})
        assert http(url, request.encode())[0] == 401
        status, content_type, body = http(
            url,
            request.encode(),
            {"Authorization": f"Bearer {IMAGE_API_KEY}", "Accept": "audio/wav"},
        )
        assert status == 200, body[:500]
        assert content_type.startswith("audio/wav")
        audio = decode_wav(body)
        assert audio.sample_rate == LIVEKIT_RATE_HZ and audio.duration_s > MIN_SPOKEN_S
    finally:
        server.terminate()
        try:
            server.wait(SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_the_image_runs_the_agent_and_the_model_fetcher(container: Container) -> None:
    agent = container.run(["hive-tts", "agent", "--help"])
    assert agent.returncode == 0, agent.stderr
    assert "--metrics-port" in agent.stdout
    listed = container.run(["python", "-m", "tools.fetch_models", "--list", "piper"])
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert rows and all(row[0] == "piper" and row[1].startswith("https://") for row in rows)
    assert all(Path(row[2]).parts[0] == "models" for row in rows)
