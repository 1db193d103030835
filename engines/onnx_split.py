"""Cut an ONNX speech model into a front and frame-wise stages, once, cached with checksums.

A VITS-style voice is a front (text encoder, duration predictor: whole-utterance work) and then
stages that work frame by frame over a latent sequence (a flow, a vocoder). The stages' receptive
fields are local, so they can be run on windows of the latent with some context on each side
(``engines.windowed_model``), and the first window's audio plays before the rest is computed.

A stage starts at the first node whose name has the stage's prefix (``/flow/``, ``/dec/``); its
inputs are found from the graph, never hard-coded. The parts are extracted with
``onnx.utils.extract_model`` into a cache directory with a manifest that records the source
model's SHA-256 and each part's, so a changed voice or a damaged part is rebuilt.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SPLIT_VERSION = 2
"""Bumped when the way parts are cut changes: older caches are rebuilt."""


class SplitError(Exception):
    """The graph has no such stage, or its parts are not a clean cut."""


@dataclass(frozen=True)
class StagePart:
    path: Path
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class SplitParts:
    """The front and the stages, in order: each stage's inputs are made by the parts before."""

    front: StagePart
    stages: tuple[StagePart, ...]
    durations: str | None = None
    """The front's output of each input symbol's length in latent frames (the duration
    predictor's rounded-up output), when the graph has one: word timings come from it."""

    @property
    def audio_output(self) -> str:
        """The model's output (the waveform), made by the last stage."""
        return self.stages[-1].outputs[-1]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _constant_tensors(graph: Any) -> set[str]:
    names = {init.name for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            names.update(node.output)
    return names


def _downstream(graph: Any, seeds: Iterable[int]) -> set[int]:
    """Indices of the seed nodes and every node fed, directly or not, by their outputs."""
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    found = set(seeds)
    todo = list(found)
    while todo:
        for output in graph.node[todo.pop()].output:
            for consumer in consumers.get(output, ()):
                if consumer not in found:
                    found.add(consumer)
                    todo.append(consumer)
    return found


def _upstream(graph: Any, targets: Iterable[int]) -> set[int]:
    """Indices of the target nodes and every node whose outputs they use, directly or not."""
    producer = {name: i for i, node in enumerate(graph.node) for name in node.output}
    found = set(targets)
    todo = list(found)
    while todo:
        for name in graph.node[todo.pop()].input:
            source = producer.get(name)
            if source is not None and source not in found:
                found.add(source)
                todo.append(source)
    return found


def _foreign(name: str, own: Sequence[str]) -> bool:
    """A node of another module (``/encoder/...``), not of these stages nor the root scope."""
    return name.startswith("/") and name.count("/") >= 2 and not name.startswith(tuple(own))


def _stage(
    graph: Any, prefix: str, later: Sequence[str], constants: set[str]
) -> tuple[set[int], tuple[str, ...]]:
    """The nodes of the part of the graph from the first ``prefix`` node on, and the tensors
    that enter it.

    That part is every node named with ``prefix`` and everything downstream of them (unnamed
    helper nodes and later stages included); its inputs are the tensors it reads that are made
    before it, other than constants and weights. A ``prefix`` node whose output another module
    also uses (an exporter may share one quantized input between modules) is left before the
    stage, as are the constants."""
    named = [
        i
        for i, node in enumerate(graph.node)
        if node.name.startswith(prefix)
        and node.op_type != "Constant"
        and any(name and name not in constants for name in node.input)
    ]
    if not named:
        raise SplitError(f"no node named {prefix}...")
    own = [prefix, *later]
    shared = _upstream(
        graph, [i for i in _downstream(graph, named) if _foreign(graph.node[i].name, own)]
    )
    seeds = [i for i in named if i not in shared]
    if not seeds:
        raise SplitError(f"every {prefix} node feeds another module")
    inside = _downstream(graph, seeds)
    if any(_foreign(graph.node[i].name, own) for i in inside):
        raise SplitError(f"the {prefix} stage feeds another module")
    made_inside = {name for i in inside for name in graph.node[i].output}
    inputs: list[str] = []
    for i in sorted(inside):
        for name in graph.node[i].input:
            if name and name not in made_inside and name not in constants and name not in inputs:
                inputs.append(name)
    if not inputs:
        raise SplitError(f"the {prefix} part reads nothing from before it")
    return inside, tuple(inputs)


@dataclass(frozen=True)
class _Plan:
    inputs: list[tuple[str, ...]]
    """Per part (the front first): the tensors it reads."""
    outputs: list[tuple[str, ...]]
    """Per part: the tensors later parts read that it makes (and, last, the model's outputs)."""
    durations: str | None


def _plan(model: Path, prefixes: Sequence[str]) -> _Plan:
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    constants = _constant_tensors(graph)
    weights = {init.name for init in graph.initializer}
    graph_inputs = tuple(i.name for i in graph.input if i.name not in weights)
    graph_outputs = tuple(o.name for o in graph.output)
    stages = [
        _stage(graph, prefix, prefixes[k + 1 :], constants) for k, prefix in enumerate(prefixes)
    ]
    for (earlier, _), (later, _), prefix in zip(stages, stages[1:], prefixes[1:], strict=False):
        if not later < earlier:
            raise SplitError(f"the {prefix} stage is not after the one before it")
    maker: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        part = max((k + 1 for k, (nodes, _) in enumerate(stages) if index in nodes), default=0)
        for name in node.output:
            maker[name] = part
    outputs: list[list[str]] = [[] for _ in range(len(stages) + 1)]
    for k, (_, cut) in enumerate(stages):
        for name in cut:
            if name in graph_inputs:  # given to every part that reads it (a style vector)
                continue
            part = maker[name]
            if part > k:
                raise SplitError(f"{name} is read by the {prefixes[k]} stage before it is made")
            if name not in outputs[part]:
                outputs[part].append(name)
    audio = graph_outputs[0]
    if maker.get(audio) != len(stages):
        raise SplitError(f"the model's output {audio} is not made by the last stage")
    outputs[-1].append(audio)
    # the duration predictor's output, rounded up to whole frames (VITS: ``w_ceil``)
    ceilings = [n.output[0] for n in graph.node if n.op_type == "Ceil" and maker[n.output[0]] == 0]
    durations = ceilings[0] if len(ceilings) == 1 else None
    if durations is not None and durations not in outputs[0]:
        outputs[0].append(durations)
    return _Plan(
        [graph_inputs, *(cut for _, cut in stages)], [tuple(o) for o in outputs], durations
    )


def _manifest_ok(manifest: Path, source_sha: str, prefixes: Sequence[str]) -> SplitParts | None:
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if (
        data.get("version") != SPLIT_VERSION
        or data.get("source_sha256") != source_sha
        or data.get("prefixes") != list(prefixes)
    ):
        return None
    parts: list[StagePart] = []
    for entry in data["parts"]:
        path = manifest.parent / entry["file"]
        if not path.is_file() or sha256_of(path) != entry["sha256"]:
            logger.warning("split model part %s is missing or damaged: rebuilding", path)
            return None
        parts.append(StagePart(path, tuple(entry["inputs"]), tuple(entry["outputs"])))
    return SplitParts(parts[0], tuple(parts[1:]), data.get("durations"))


def split_model(model: Path, cache_dir: Path, prefixes: Sequence[str]) -> SplitParts:
    """Cut ``model`` before each prefix's stage (in order) into ``cache_dir``, or reuse the
    parts already there when their manifest and checksums match. Raises ``SplitError`` when
    the graph cannot be cut so."""

    source_sha = sha256_of(model)
    cut = hashlib.sha256("|".join(prefixes).encode()).hexdigest()[:8]
    base = f"{model.stem}-{source_sha[:16]}-{cut}"
    manifest = cache_dir / f"{base}.split.json"
    cached = _manifest_ok(manifest, source_sha, prefixes)
    if cached is not None:
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    # processes starting together (a worker and a server) build the parts once, in turn
    with (cache_dir / f"{base}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _manifest_ok(manifest, source_sha, prefixes)
        if cached is not None:
            return cached
        return _build(model, prefixes, cache_dir, base, source_sha, manifest)


def _build(
    model: Path,
    prefixes: Sequence[str],
    cache_dir: Path,
    base: str,
    source_sha: str,
    manifest: Path,
) -> SplitParts:
    import onnx.utils

    plan = _plan(model, prefixes)
    entries: list[dict[str, object]] = []
    parts: list[StagePart] = []
    for index, (ins, outs) in enumerate(zip(plan.inputs, plan.outputs, strict=True)):
        path = cache_dir / f"{base}.part{index}.onnx"
        partial = path.with_name(path.name + ".partial")
        onnx.utils.extract_model(str(model), str(partial), list(ins), list(outs))
        partial.replace(path)
        entries.append(
            {
                "file": path.name,
                "inputs": list(ins),
                "outputs": list(outs),
                "sha256": sha256_of(path),
            }
        )
        parts.append(StagePart(path, ins, outs))
    written = manifest.with_name(manifest.name + ".partial")
    written.write_text(
        json.dumps(
            {
                "version": SPLIT_VERSION,
                "source": model.name,
                "source_sha256": source_sha,
                "prefixes": list(prefixes),
                "parts": entries,
                "durations": plan.durations,
            },
            indent=2,
        )
    )
    written.replace(manifest)
    return SplitParts(parts[0], tuple(parts[1:]), plan.durations)
