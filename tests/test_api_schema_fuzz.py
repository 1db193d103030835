"""Every route of ``/openapi.json``, fuzzed by schemathesis against the real app: no 5xx that the
document does not promise, and every reply (status, content type, body) as documented.

schemathesis generates requests from the document the running app serves, both data that fits
it (positive) and data that does not (negative), and sends them over real HTTP to the app on a
loopback socket. Its client is synchronous, so it runs in a worker thread while the app serves
on the test's event loop. Bodies that would reach synthesis are steered to espeak-ng with short
texts, so each takes milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.rooms import LiveKitSettings
from engines.config import ServiceConfig
from engines.engine_registry import engine_names
from engines.synthesizer import SpeechSynthesizer
from tests.api_fixtures import ApiClient, error_of, rooms_api, services_of

POSITIVE_EXAMPLES = 30
"""Generated requests per operation that fit the document."""
NEGATIVE_EXAMPLES = 15
"""Generated requests per operation that do not (wrong types, missing keys, bad enums)."""
INPUTLESS_EXAMPLES = 5
"""Per mode, for an operation without parameters or body (only its credentials vary): POST /gc
runs a full garbage collection each time."""
REQUEST_TIMEOUT_S = 30.0
MAX_SPOKEN_CHARS = 40
"""Text that reaches synthesis is cut to this: the fuzzing is about the API, not the engines."""
FAST_ENGINE = "espeak-ng"
SPEAKABLE_TEXTS = ["Hello.", "Yes, no.", "3.14 is pi.", "東京駅。", "Ça va ?"]
KNOWN_LANGUAGES = ["en", "ja", "fr", "nl", "pt-BR"]
"""Path values that find voices (``nl``: espeak-ng only), drawn beside generated ones."""
SERVER_ERRORS_THE_DOCUMENT_PROMISES = ["503"]
"""A 5xx that is part of the contract where a route documents it (LiveKit not configured, no
engine can speak, /health failing); ``status_code_conformance`` fails any that a route does not
document, so a stray 503 is still caught. Every other 5xx fails."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
SPOKEN_TEXT_KEYS = {"POST /synthesize": "text", "POST /v1/audio/speech": "input"}
"""Operations whose body is spoken, and the key that holds the text."""
LIVEKIT_OPERATIONS = {"POST /livekit/webhook"}
"""Fuzzed again with LiveKit configured (but unreachable): a webhook is then checked for its
signature, so an unsigned body must be a 401, never a 5xx."""


Operation = APIOperation[Any, Any, Any, Any]


@dataclass
class FuzzCounts:
    """What was sent, per operation and mode, and what came back."""

    examples: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)
    """Time spent per operation, sending and checking."""
    replies: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    """(operation, HTTP status, error code or '') -> requests."""
    failures: list[str] = field(default_factory=list)
    nothing_to_negate: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.examples.values())

    def operations(self) -> set[str]:
        return {label for label, _, _ in self.replies}

    def report(self, title: str, elapsed_s: float) -> str:
        lines = [f"{title}: {self.requests} requests in {elapsed_s:.1f} s"]
        lines += [f"  {label}: {number}" for label, number in sorted(self.examples.items())]
        lines += [
            f"  {label}: {seconds:.1f} s"
            for label, seconds in sorted(self.seconds.items(), key=lambda item: -item[1])[:3]
        ]
        lines += [
            f"  {label} -> {status} {code}".rstrip() + f": {number}"
            for (label, status, code), number in sorted(self.replies.items())
        ]
        if self.nothing_to_negate:
            lines.append(f"  no negative data possible: {', '.join(self.nothing_to_negate)}")
        return "\n".join(lines)


def steer_to_fast_engine(case: Case[Operation], speakable: str | None) -> None:
    """Short text, spoken by espeak-ng, where the body is a request that may reach synthesis.
    An ``engine`` the document allows becomes espeak-ng; an invalid one stays invalid. With
    ``speakable``, a request that fits the document says that, with no voice to clone, so that
    many requests get as far as audio (random text is often nothing speakable)."""
    key = SPOKEN_TEXT_KEYS.get(case.operation.label)
    body = case.body
    if key is None or not isinstance(body, dict):
        return
    if speakable is not None:
        body[key] = speakable
        body.pop("voice_clone_reference", None)
    text = body.get(key)
    if isinstance(text, str):
        body[key] = text[:MAX_SPOKEN_CHARS]
    engine = body.get("engine", FAST_ENGINE)
    if case.operation.label == "POST /synthesize" and engine in engine_names():
        body["engine"] = FAST_ENGINE


def error_code(status: int, content: bytes) -> str:
    if status < 400:
        return ""
    try:
        return str(json.loads(content)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "(not an error body)"


def fuzz_operation(
    operation: Operation,
    mode: GenerationMode,
    examples: int,
    base_url: str,
    session: requests.Session,
    counts: FuzzCounts,
) -> None:
    """Send ``examples`` generated requests for one operation and check each reply (blocking:
    runs in a worker thread)."""
    label = operation.label
    has_language = any(p.name == "language" for p in operation.path_parameters)

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        fixed: dict[str, Any] | None = None
        if has_language and mode is GenerationMode.POSITIVE and data.draw(st.booleans()):
            fixed = {"language": data.draw(st.sampled_from(KNOWN_LANGUAGES))}
        case = data.draw(operation.as_strategy(generation_mode=mode, path_parameters=fixed))
        speakable = None
        if mode is GenerationMode.POSITIVE and data.draw(st.booleans()):
            speakable = data.draw(st.sampled_from(SPEAKABLE_TEXTS))
        steer_to_fast_engine(case, speakable)
        response = case.call(base_url=base_url, session=session, timeout=REQUEST_TIMEOUT_S)
        counts.examples[f"{label} [{mode.value}]"] += 1
        status = response.status_code
        counts.replies[(label, status, error_code(status, response.content))] += 1
        case.validate_response(response, checks=CHECKS)

    started = time.perf_counter()
    try:
        run()
    except Exception as exc:  # every operation is fuzzed; the test lists all that failed
        counts.failures.append(f"{label} [{mode.value}]: {exc}")
    finally:
        spent = time.perf_counter() - started
        counts.seconds[label] = counts.seconds.get(label, 0.0) + spent


def definition_of(spec: dict[str, Any], operation: Operation) -> dict[str, Any]:
    definition: dict[str, Any] = spec["paths"][operation.path][operation.method.lower()]
    return definition


def takes_input(spec: dict[str, Any], operation: Operation) -> bool:
    """Whether ``operation`` has parameters or a body (else only credentials can vary)."""
    definition = definition_of(spec, operation)
    return bool(definition.get("parameters") or definition.get("requestBody"))


def can_be_wrong(spec: dict[str, Any], operation: Operation) -> bool:
    """Whether a request to ``operation`` can break its document at all (parameters, a body or
    credentials to get wrong): GET /health has none, so negative data cannot be made for it."""
    security = definition_of(spec, operation).get("security", spec.get("security", []))
    return takes_input(spec, operation) or bool(security)


def run_schemathesis(spec: dict[str, Any], base_url: str, only: set[str] | None) -> FuzzCounts:
    config = schemathesis.Config.from_dict(
        {
            "checks": {
                "not_a_server_error": {
                    "expected-statuses": ["2xx", "3xx", "4xx", *SERVER_ERRORS_THE_DOCUMENT_PROMISES]
                }
            }
        }
    )
    schema = schemathesis.openapi.from_dict(spec, config=config)
    operations: list[Operation] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise AssertionError(f"schemathesis cannot read the document: {result.err()}")
        operations.append(result.ok())
    counts = FuzzCounts()
    with requests.Session() as session:
        for operation in operations:
            if only is not None and operation.label not in only:
                continue
            few = not takes_input(spec, operation)
            modes = [(GenerationMode.POSITIVE, INPUTLESS_EXAMPLES if few else POSITIVE_EXAMPLES)]
            if can_be_wrong(spec, operation):
                modes.append(
                    (GenerationMode.NEGATIVE, INPUTLESS_EXAMPLES if few else NEGATIVE_EXAMPLES)
                )
            else:
                counts.nothing_to_negate.append(operation.label)
            for mode, examples in modes:
                fuzz_operation(operation, mode, examples, base_url, session, counts)
    return counts


async def fuzz(client: ApiClient, title: str, only: set[str] | None = None) -> FuzzCounts:
    """schemathesis against ``client``'s app, from the document that app serves."""
    response = await client.get("/openapi.json")
    assert response.status == 200
    spec = await response.json()
    base_url = str(client.make_url("")).rstrip("/")
    started = time.perf_counter()
    counts = await asyncio.to_thread(run_schemathesis, spec, base_url, only)
    print("\n" + counts.report(title, time.perf_counter() - started))
    assert not counts.failures, "\n\n".join(counts.failures)
    wanted = only if only is not None else documented_operations(spec)
    assert counts.operations() == wanted, "an operation was never called"
    return counts


def documented_operations(spec: dict[str, Any]) -> set[str]:
    return {f"{method.upper()} {path}" for path, item in spec["paths"].items() for method in item}


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but never listening: connections to it are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
async def unreachable_livekit_api(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer, closed_port: int
) -> AsyncIterator[ApiClient]:
    """The control API with LiveKit configured, and the LiveKit server down."""
    livekit = LiveKitSettings(
        url=f"http://127.0.0.1:{closed_port}",
        api_key="devkey",
        api_secret="secret",
        agent_name="hive-tts",
    )
    async with rooms_api(service_config, synthesizer, livekit) as client:
        yield client


async def test_every_route_answers_as_its_openapi_document_says(api: ApiClient) -> None:
    counts = await fuzz(api, "schemathesis, every route")
    assert counts.replies[("POST /synthesize", 200, "")] > 0, "nothing reached synthesis"
    assert services_of(api).limiter.active == 0


async def test_unsigned_webhooks_are_refused_as_documented(
    unreachable_livekit_api: ApiClient,
) -> None:
    counts = await fuzz(
        unreachable_livekit_api, "schemathesis, LiveKit configured", LIVEKIT_OPERATIONS
    )
    assert {code for _, _, code in counts.replies} == {"bad_webhook"}


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/rooms"), ("POST", "/rooms/fuzz-room/speak")]
)
async def test_room_routes_answer_502_when_livekit_is_down(
    unreachable_livekit_api: ApiClient, method: str, path: str
) -> None:
    response = await unreachable_livekit_api.request(method, path, json={"text": "Hello."})
    error = await error_of(response, 502)
    assert error["code"] == "livekit_error"
