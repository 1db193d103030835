"""Random message sequences on one WebSocket: the protocol's promises hold in every interleaving.

Each example opens one connection to the real app (real engines; requests name espeak-ng and
short texts, so each is spoken in milliseconds) and sends a random sequence of requests,
incremental text, flushes, cancels, unknown types, garbage, binary frames and messages over the
size limits, sometimes waiting for the requests so far to finish, mostly not. A reader task
takes everything the server sends. Then:

- every request gets exactly one ``is_final`` message (final or error) with its ``request_id``;
  so does a ``text`` message that opened a stream; one that only added text gets at most an
  error, a flush at most an error, a cancel nothing;
- a request's audio ``sequence`` numbers run 0, 1, 2 ... and all come before its ``is_final``,
  whose ``chunks`` (a final) counts them;
- every frame that cannot carry an id (garbage, binary, oversize) is answered once;
- no ``internal_error``, no message of another type;
- after the sequence the same connection speaks a normal request;
- after the connection closes the server holds no session and no utterance.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from engines.config import ServiceConfig
from engines.synthesizer import SpeechSynthesizer
from tests.api_fixtures import ApiClient, api_client, eventually, services_of, with_api

EXAMPLES = 40
MAX_STEPS = 14
ANSWER_TIMEOUT_S = 30.0
"""Longest wait for any awaited answer (a hang fails the example instead of the run)."""
MAX_MESSAGE_BYTES = 16_384
"""``api.max_ws_message_bytes`` for these tests, so that oversize messages stay cheap."""
OVERSIZE_TEXT_CHARS = MAX_MESSAGE_BYTES + 1_000
"""Over the message limit, far under the frame limit (limit + 64 KiB closes the socket)."""
TOO_LONG_TEXT = "a " * 5_001
"""Over ``limits.max_text_chars`` (10,000): refused before any synthesis."""
ENGINE = "espeak-ng"
CLIENT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The client takes messages this large: a request with ``stream: false`` comes back as one
message, and a minute of 48 kHz audio is 7.7 MB of base64 (aiohttp's default limit of 4 MiB
closes the socket: the fuzzing found that, from the client's side)."""
SENTINEL = "sentinel"
SENTINEL_TRIES = 20
QUEUE_FULL = "queue_full"
INTERNAL_ERROR = "internal_error"
SERVER_IDS = "req-"
"""Prefix of the ids the server gives requests sent without one."""

COUNTS: Counter[str] = Counter()
"""Examples, steps and replies: printed at the end of the module (``-s``)."""


@pytest.fixture(scope="module", autouse=True)
def print_counts() -> Iterator[None]:
    yield
    print("\nWebSocket protocol fuzzing:")
    for name, number in sorted(COUNTS.items()):
        print(f"  {name}: {number}")


@pytest.fixture(scope="module")
async def ws_api(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer
) -> AsyncIterator[ApiClient]:
    config = with_api(service_config, max_ws_message_bytes=MAX_MESSAGE_BYTES)
    async with api_client(config, synthesizer) as client:
        yield client


# --- what the client does -----------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """Send a message (``body`` gets a fresh ``request_id`` unless ``with_id`` is false; ``raw``
    goes as it is), or, for ``wait``, wait for every request sent so far to be answered."""

    kind: str
    body: dict[str, Any] | None = None
    raw: str | bytes | None = None
    with_id: bool = True


LONGER_TEXT = "One, two. Three! Four, five, six. " * 4
"""Long enough that a cancel or the next message often arrives while it is being spoken."""
short_texts = (
    st.sampled_from(
        ["Hi.", "Yes, no.", "One, two. Three!", "Hello there", "", " ", "?!", "日本語。", "3.14"]
    )
    | st.text(max_size=10)
    | st.just(LONGER_TEXT)
)
options = st.fixed_dictionaries(
    {},
    optional={
        "stream": st.booleans(),
        "format": st.sampled_from(["pcm16", "wav", "mp3", "opus", "flac", "ogg"]),
        "sample_rate": st.sampled_from([8_000, 16_000, 24_000, 48_000, 12_345]),
        "language": st.sampled_from(["en", "fr", "ja", "zz"]),
        "voice_id": st.sampled_from(["en-us-male-premium", "nobody"]),
        "speed": st.sampled_from([0.5, 1.0, 2.0, 3.0]),
    },
)
"""Mostly options the server accepts; a few it refuses (ogg, 12,345 Hz, nobody, speed 3)."""
engines = st.sampled_from([ENGINE] * 6 + ["nope"])


def request_step(text: str, engine: str, extra: dict[str, Any], with_id: bool) -> Step:
    return Step("request", {"text": text, "engine": engine, **extra}, with_id=with_id)


def text_step(text: str, engine: str, extra: dict[str, Any]) -> Step:
    return Step("text", {"type": "text", "text": text, "engine": engine, **extra})


STEP_STRATEGIES: dict[str, st.SearchStrategy[Step]] = {
    "request": st.builds(
        request_step, short_texts, engines, options, st.booleans() | st.just(True)
    ),
    "text": st.builds(text_step, short_texts, engines, options),
    "flush": st.just(Step("flush", {"type": "flush"})),
    "cancel": st.just(Step("cancel", {"type": "cancel"})),
    "wait": st.just(Step("wait")),
    "bogus": st.sampled_from(["bogus", "", 7, ["text"]]).map(
        lambda kind: Step("bogus", {"type": kind})
    ),
    "garbage": st.one_of(
        st.text(max_size=20), st.sampled_from(["[1, 2]", '"x"', "{", "{}", "null"])
    ).map(lambda raw: Step("garbage", raw=raw)),
    "binary": st.binary(max_size=20).map(lambda raw: Step("binary", raw=raw)),
    "oversize": st.just(
        Step("oversize", raw=json.dumps({"text": "x" * OVERSIZE_TEXT_CHARS, "engine": ENGINE}))
    ),
    "too_long": st.just(Step("too_long", {"text": TOO_LONG_TEXT, "engine": ENGINE})),
    "too_long_text": st.just(
        Step("too_long_text", {"type": "text", "text": TOO_LONG_TEXT, "engine": ENGINE})
    ),
}
STEP_WEIGHTS = {"request": 4, "text": 4, "flush": 2, "cancel": 2, "wait": 2}
"""Requests, text, flushes and cancels most often: their interleavings are the protocol. The
other kinds once each."""
steps = st.sampled_from(
    [kind for kind in STEP_STRATEGIES for _ in range(STEP_WEIGHTS.get(kind, 1))]
).flatmap(STEP_STRATEGIES.__getitem__)
sequences = st.lists(steps, min_size=3, max_size=MAX_STEPS)

REQUEST_KINDS = frozenset({"request", "too_long"})
"""Messages that always get exactly one ``is_final`` with their id."""
TEXT_KINDS = frozenset({"text", "too_long_text"})
IDLESS_KINDS = frozenset({"garbage", "binary", "oversize"})


# --- what the server says -----------------------------------------------------------------


class Transcript:
    """Everything the server sent on one connection, read as it arrives."""

    def __init__(self, ws: ClientWebSocketResponse) -> None:
        self.messages: list[dict[str, Any]] = []
        self._ws = ws
        self._arrived = asyncio.Condition()
        self._closed = False
        self._reader = asyncio.create_task(self._read(), name="ws-fuzz-reader")

    async def _read(self) -> None:
        try:
            async for frame in self._ws:
                if frame.type is WSMsgType.TEXT:
                    value = json.loads(frame.data)
                else:  # the protocol has no other frames: the checks fail on this
                    value = {"type": f"frame {frame.type.name}"}
                async with self._arrived:
                    self.messages.append(value)
                    self._arrived.notify_all()
        finally:
            async with self._arrived:
                self._closed = True
                self._arrived.notify_all()

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        def settled() -> bool:
            return condition() or self._closed

        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S), self._arrived:
                await self._arrived.wait_for(settled)
        except TimeoutError:
            raise AssertionError(f"no answer within {ANSWER_TIMEOUT_S} s: {what}") from None
        assert condition(), f"the connection closed before {what}"

    def finals(self, request_id: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("is_final") and m.get("request_id") == request_id]

    def answered(self, request_ids: list[str]) -> bool:
        return all(self.finals(i) for i in request_ids)

    def moved(self, since: int, besides: str) -> bool:
        """Whether a request other than ``besides`` ended after message ``since``."""
        return any(
            m.get("is_final") and m.get("request_id") not in (besides, None)
            for m in self.messages[since:]
        )

    async def stop(self) -> None:
        self._reader.cancel()
        await asyncio.wait({self._reader})


@dataclass
class Exchange:
    """One example's conversation: what was sent, under which ids."""

    sent: list[tuple[Step, str | None]] = field(default_factory=list)

    def ids(self, kinds: frozenset[str]) -> list[str]:
        return [i for step, i in self.sent if step.kind in kinds and i is not None]

    def count(self, kinds: frozenset[str]) -> int:
        return sum(1 for step, _ in self.sent if step.kind in kinds)

    def idless(self) -> int:
        return self.count(IDLESS_KINDS) + sum(
            1 for step, i in self.sent if step.kind in REQUEST_KINDS and i is None
        )


async def send(ws: ClientWebSocketResponse, step: Step, request_id: str | None) -> None:
    if isinstance(step.raw, bytes):
        await ws.send_bytes(step.raw)
    elif step.raw is not None:
        await ws.send_str(step.raw)
    else:
        assert step.body is not None
        body = step.body if request_id is None else {**step.body, "request_id": request_id}
        await ws.send_str(json.dumps(body))


async def play(ws: ClientWebSocketResponse, transcript: Transcript, plan: list[Step]) -> Exchange:
    """Send ``plan``; then close any stream and speak a sentinel request, retried while the
    queue is full. When the sentinel's final arrives, every earlier answer has (one worker
    speaks a connection's requests in order, and refusals are sent as each message is read)."""
    exchange = Exchange()
    stream_may_be_open = False
    for index, step in enumerate(plan):
        if step.kind == "wait":
            if not stream_may_be_open:  # else requests queued behind the stream never end
                pending = exchange.ids(REQUEST_KINDS)
                await transcript.until(
                    partial(transcript.answered, pending), "the requests sent so far"
                )
            continue
        request_id = f"m{index}" if step.with_id and step.raw is None else None
        exchange.sent.append((step, request_id))
        await send(ws, step, request_id)
        if step.kind == "text":
            stream_may_be_open = True
        elif step.kind in ("flush", "cancel", "too_long_text"):
            stream_may_be_open = False

    await send(ws, Step("flush", {"type": "flush"}), "closing-flush")
    for attempt in range(SENTINEL_TRIES):
        sentinel = f"{SENTINEL}-{attempt}"
        seen = len(transcript.messages)
        await send(ws, Step("request", {"text": "Fine.", "engine": ENGINE}), sentinel)
        await transcript.until(partial(transcript.answered, [sentinel]), sentinel)
        final = transcript.finals(sentinel)[0]
        if final.get("code") != QUEUE_FULL:
            assert final["type"] == "final", final
            return exchange
        COUNTS["sentinel refused: queue_full"] += 1
        # wait until the queue moves (any other request's answer), then try again
        await transcript.until(partial(transcript.moved, seen, sentinel), "the queue to move")
    raise AssertionError(f"the sentinel was refused {SENTINEL_TRIES} times")


def check(exchange: Exchange, messages: list[dict[str, Any]]) -> None:
    """The protocol's promises, over one connection's whole transcript."""
    for message in messages:
        assert message.get("type") in ("audio", "final", "error"), message
        assert message.get("code") != INTERNAL_ERROR, message

    by_id: dict[str | None, list[dict[str, Any]]] = {}
    for message in messages:
        by_id.setdefault(message.get("request_id"), []).append(message)

    def finals_of(request_id: str | None) -> list[dict[str, Any]]:
        return [m for m in by_id.get(request_id, []) if m.get("is_final")]

    for request_id in exchange.ids(REQUEST_KINDS):
        assert len(finals_of(request_id)) == 1, (request_id, by_id.get(request_id))
    for request_id in exchange.ids(TEXT_KINDS):
        answers = by_id.get(request_id, [])
        if any(m["type"] in ("audio", "final") for m in answers):  # it opened a stream
            assert len(finals_of(request_id)) == 1, answers
        else:  # it added text to a stream, or was refused: at most an error
            assert len(answers) == len(finals_of(request_id)) <= 1, answers
    for kind in ("flush", "cancel", "bogus"):
        for request_id in exchange.ids(frozenset({kind})):
            answers = by_id.get(request_id, [])
            expected = {"flush": (0, 1), "cancel": (0,), "bogus": (1,)}[kind]
            assert len(answers) in expected, (kind, answers)
            assert all(m["type"] == "error" and m["is_final"] for m in answers), answers

    # frames without an id: each answered once, by an id-less error or a request with a
    # server-given id (a garbage frame may happen to be a valid request)
    idless_errors = len(finals_of(None))
    server_ids = {i for i in by_id if isinstance(i, str) and i.startswith(SERVER_IDS)}
    assert all(len(finals_of(i)) == 1 for i in server_ids), server_ids
    assert idless_errors + len(server_ids) == exchange.idless(), (idless_errors, server_ids)
    assert all(m["type"] == "error" for m in finals_of(None))

    known = {*exchange.ids(REQUEST_KINDS | TEXT_KINDS), *server_ids}
    for answered_id, answers in by_id.items():
        audio = [m for m in answers if m["type"] == "audio"]
        if audio:
            assert answered_id in known or str(answered_id).startswith(SENTINEL), answered_id
        final_at = next((n for n, m in enumerate(answers) if m.get("is_final")), len(answers))
        assert all(m["type"] == "audio" for m in answers[:final_at]), answers
        assert answers[final_at + 1 :] == [] or answered_id is None, answers
        assert [m["sequence"] for m in audio] == list(range(len(audio))), answered_id
        if final_at < len(answers) and answers[final_at]["type"] == "final":
            assert answers[final_at]["chunks"] == len(audio), answers[final_at]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plan=sequences)
async def test_random_message_sequences_keep_the_protocol(
    ws_api: ApiClient, synthesizer: SpeechSynthesizer, plan: list[Step]
) -> None:
    COUNTS["examples"] += 1
    utterances_before = synthesizer.active_utterances
    async with ws_api.ws_connect("/ws/synthesize", max_msg_size=CLIENT_MAX_MESSAGE_BYTES) as ws:
        transcript = Transcript(ws)
        try:
            exchange = await play(ws, transcript, plan)
        finally:
            await transcript.stop()
            note(f"sent: {[(step.kind, step.body or step.raw) for step in plan]}")
            note(f"received: {[without_audio(m) for m in transcript.messages]}")
    check(exchange, transcript.messages)
    COUNTS["frames sent (with the closing flush and sentinel)"] += len(exchange.sent) + 2
    COUNTS["requests sent (request, too_long)"] += exchange.count(REQUEST_KINDS)
    COUNTS["messages received"] += len(transcript.messages)
    for step in plan:
        COUNTS[f"steps: {step.kind}"] += 1
    for message in transcript.messages:
        reply = f"{message['type']} {message.get('code') or ''}".rstrip()
        COUNTS[f"replies: {reply}"] += 1
        event(reply)
    services = services_of(ws_api)
    await eventually(lambda: services.limiter.active == 0, what="the session to end")
    await eventually(
        lambda: synthesizer.active_utterances == utterances_before, what="utterances to end"
    )


def without_audio(message: dict[str, Any]) -> dict[str, Any]:
    """A message as the failure report shows it (no base64, no summary numbers)."""
    return {k: v for k, v in message.items() if k in ("type", "request_id", "code", "sequence")}


# --- what the fuzzing found --------------------------------------------------------------


async def test_a_stream_whose_first_text_is_too_long_ends_once(ws_api: ApiClient) -> None:
    """The first ``text`` of a stream over the text limit used to open the stream, fail the
    push (error ``text_too_long``, is_final), then end the queued stream with a second
    ``is_final`` (a cancelled final) for the same ``request_id``."""
    async with ws_api.ws_connect("/ws/synthesize", max_msg_size=CLIENT_MAX_MESSAGE_BYTES) as ws:
        transcript = Transcript(ws)
        try:
            await ws.send_json(
                {"type": "text", "text": TOO_LONG_TEXT, "engine": ENGINE, "request_id": "s"}
            )
            await ws.send_json({"text": "Fine.", "engine": ENGINE, "request_id": "after"})
            await transcript.until(partial(transcript.answered, ["after"]), "after")
        finally:
            await transcript.stop()
    finals = transcript.finals("s")
    assert [(m["type"], m.get("code")) for m in finals] == [("error", "text_too_long")]
    assert transcript.finals("after")[0]["type"] == "final"


CANCELLED_BEFORE_IT_BEGAN = [
    Step("request", {"text": "Hi.", "engine": ENGINE}),
    Step("request", {"text": "Hi.", "engine": ENGINE, "sample_rate": 12_345}),
    Step("binary", raw=b"xx"),
    Step("binary", raw=b"yy"),
    Step("flush", {"type": "flush"}),
    Step("request", {"text": LONGER_TEXT, "engine": "nope"}),
    Step("bogus", {"type": 7}),
    Step("text", {"type": "text", "text": LONGER_TEXT, "engine": ENGINE}),
    Step("cancel", {"type": "cancel"}),
    Step("request", {"text": LONGER_TEXT, "engine": ENGINE, "speed": 3.0}),
    Step("flush", {"type": "flush"}),
    Step("cancel", {"type": "cancel"}),
]
"""A sequence the fuzzing found (shrunk): the last cancel reaches the first request after the
worker made its speaking task and before that task ran, so the task ended at its first step."""
REPLAYS = 5


async def test_a_request_cancelled_before_its_task_began_still_ends_once(ws_api: ApiClient) -> None:
    """A cancel that reached a request whose task had not started yet used to end it without
    any message: no final, no error, nothing for that ``request_id`` ever."""
    for _ in range(REPLAYS):
        async with ws_api.ws_connect("/ws/synthesize", max_msg_size=CLIENT_MAX_MESSAGE_BYTES) as ws:
            transcript = Transcript(ws)
            try:
                exchange = await play(ws, transcript, CANCELLED_BEFORE_IT_BEGAN)
            finally:
                await transcript.stop()
        check(exchange, transcript.messages)
        assert len(transcript.finals("m0")) == 1
