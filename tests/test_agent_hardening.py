"""The agent's bounded resources and private events, in a real room on the dev LiveKit server:
tracks per room (a new language retires an idle track; with every track speaking it is refused),
tracks silent for ``agent.idle_track_timeout_s`` unpublished and published again when needed,
and events that go to their sender only, never to everyone."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.livekit_server import DevServer
from agent.speak_request import TRACK_ATTRIBUTE_PREFIX
from engines.audio import LIVEKIT_SAMPLE_RATE
from engines.config import ServiceConfig
from engines.synthesizer import SpeechSynthesizer
from tests.api_fixtures import rooms_api
from tests.conftest import AGENT_TEST_CONFIG
from tests.livekit_fixtures import (
    Participant,
    WorkerProcess,
    dispatch_agent,
    room_name,
    settings_for,
    wait_agent_ready,
)
from tests.transcriber import Transcriber, word_error_rate

LONG = {
    "en": "This announcement is long on purpose, so that it is still being spoken when the "
    "next message arrives, about trains, platforms and the weather.",
    "es": "Este anuncio es largo a propósito, para que siga sonando cuando llegue el siguiente "
    "mensaje, sobre trenes, andenes y el tiempo.",
}
SHORT_JA = "今日はいい天気ですね。"
EVENT_WAIT_S = 120.0
LIMITS = """\
  max_tracks_per_room: 2
  rate_limit_per_participant: {per_minute: 6, burst: 3}
"""

SILENT_TRACK_TIMEOUT_S = 2
SILENT_AGENT = "hive-tts-silent"
MAX_WER = 0.2

pytestmark = pytest.mark.asyncio(loop_scope="session")


@contextlib.contextmanager
def running_worker(
    livekit_server: DevServer, folder: Path, agent_settings: str
) -> Iterator[WorkerProcess]:
    repo = Path(__file__).resolve().parent.parent
    config = folder / "config.yaml"
    config.write_text(
        AGENT_TEST_CONFIG.replace("agent:\n", "agent:\n" + agent_settings)
        + f"voices_file: {repo / 'voices.yaml'}\nmodels_dir: {repo / 'models'}\n"
    )
    worker = WorkerProcess(livekit_server, config, folder / "worker.log")
    try:
        worker.wait_registered()
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def two_track_worker(
    livekit_server: DevServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    with running_worker(livekit_server, tmp_path_factory.mktemp("two-tracks"), LIMITS) as worker:
        yield worker


@pytest.fixture
async def sender(
    livekit_server: DevServer, two_track_worker: WorkerProcess
) -> AsyncIterator[tuple[str, Participant, Participant]]:
    name = room_name("tracks")
    await dispatch_agent(livekit_server, name)
    sender = await Participant("sender").join(livekit_server, name)
    bystander = await Participant("bystander").join(livekit_server, name)
    agent = await wait_agent_ready(sender)
    yield agent, sender, bystander
    await asyncio.gather(sender.leave(), bystander.leave())


def track_attributes(participant: Participant, agent: str) -> set[str]:
    attributes = participant.room.remote_participants[agent].attributes
    return {
        key for key, value in attributes.items() if key.startswith(TRACK_ATTRIBUTE_PREFIX) and value
    }


async def test_a_room_s_tracks_are_bounded_and_idle_ones_retired(
    sender: tuple[str, Participant, Participant],
) -> None:
    agent, person, bystander = sender
    for language, text in LONG.items():
        await person.send({"id": f"long-{language}", "text": text, "language": language})
    for language in LONG:
        await person.wait_event(f"long-{language}", "started", EVENT_WAIT_S)
    # both tracks speak: a third language is refused, with a reason, and nothing else stops
    await person.send({"id": "third", "text": SHORT_JA, "language": "ja"})
    refused = await person.wait_event("third", "error", EVENT_WAIT_S)
    assert refused["code"] == "too_many_tracks", refused
    for language in LONG:
        finished = await person.wait_event(f"long-{language}", "finished", EVENT_WAIT_S)
        assert finished["interrupted"] is False
    assert track_attributes(person, agent) == {
        TRACK_ATTRIBUTE_PREFIX + "tts-en",
        TRACK_ATTRIBUTE_PREFIX + "tts-es",
    }
    # both idle now: the oldest (English) makes room for Japanese
    await person.send({"id": "ja", "text": SHORT_JA, "language": "ja"})
    finished = await person.wait_event("ja", "finished", EVENT_WAIT_S)
    assert finished["interrupted"] is False and finished["track"] == "tts-ja"

    def retired() -> bool:
        return track_attributes(person, agent) == {
            TRACK_ATTRIBUTE_PREFIX + "tts-es",
            TRACK_ATTRIBUTE_PREFIX + "tts-ja",
        }

    await person.wait_for(retired, 30.0, "the English track retired")
    published = {
        pub.name for pub in person.room.remote_participants[agent].track_publications.values()
    }
    assert published == {"tts-es", "tts-ja"}
    # what one participant sent is answered to them alone
    assert person.events_for("ja") and not bystander.events_for("ja")
    assert not bystander.events_for("third")


async def test_text_the_server_sends_without_reply_to_tells_no_one(
    livekit_server: DevServer,
    two_track_worker: WorkerProcess,
    service_config: ServiceConfig,
    synthesizer: SpeechSynthesizer,
) -> None:
    name = room_name("quiet")
    listener = await Participant("listener").join(livekit_server, name)
    try:
        async with rooms_api(service_config, synthesizer, settings_for(livekit_server)) as api:
            reply = await api.post(
                f"/rooms/{name}/speak", json={"text": "Nobody asked for these events."}
            )
            body = await reply.json()
            assert reply.status == 202, body

            def heard() -> bool:
                track = listener.tracks.get("tts-en")
                return track is not None and track.audible_seconds(0.0) > 1.0

            await listener.wait_for(heard, EVENT_WAIT_S, "the server's text spoken")
            await asyncio.sleep(3.0)  # the finished event, had it been sent, would be here
        assert listener.events_for(str(body["id"])) == []
        assert listener.events == []
    finally:
        await listener.leave()


async def test_a_participant_over_its_rate_is_told_when_to_retry_and_others_go_on(
    sender: tuple[str, Participant, Participant],
) -> None:
    _, person, bystander = sender
    for n in range(4):  # the room queues 3 (the test worker's limit): the rate refuses first
        await person.send({"id": f"r{n}", "text": "Hi.", "language": "en"})
    refused = await person.wait_event("r3", "error", EVENT_WAIT_S)
    assert refused["code"] == "rate_limited" and refused["retry_after_s"] == 10, refused
    for n in range(3):  # the three within the burst are spoken
        finished = await person.wait_event(f"r{n}", "finished", EVENT_WAIT_S)
        assert finished["interrupted"] is False
    await bystander.send({"id": "b0", "text": "My turn.", "language": "en"})
    assert (await bystander.wait_event("b0", "finished", EVENT_WAIT_S))["interrupted"] is False


async def test_a_packet_sent_on_joining_never_passes_for_the_server_s(
    livekit_server: DevServer, two_track_worker: WorkerProcess
) -> None:
    """Sent right after connecting, a packet can reach the agent before the rtc SDK reports its
    sender's join, with no sender, as the server's packets come. It used to pass as the
    server's: no permission check, no events. Now only packets the control API signed pass as
    the server's; in a room that limits its speakers an unknown sender is refused, told
    through the packet's reply_to; in an open room it is spoken."""
    name = room_name("early")
    metadata = json.dumps({"hive_tts": {"allowed_identities": ["translator"]}})
    await dispatch_agent(livekit_server, name, metadata)
    watcher = await Participant("watcher").join(livekit_server, name)
    try:
        await wait_agent_ready(watcher)
        stranger = await Participant("stranger").join(livekit_server, name)
        await stranger.send(
            {"id": "early-s", "text": "Let me talk.", "language": "en", "reply_to": "stranger"}
        )
        refused = await stranger.wait_event("early-s", "error", EVENT_WAIT_S)
        # refused either way: not allowed, or not known yet (then sent again, not allowed)
        assert refused["code"] in ("not_allowed", "sender_unknown"), refused
        if refused["code"] == "sender_unknown":
            assert refused["retry_after_s"] == 1, refused
            await stranger.send_until_known(
                {"id": "early-s2", "text": "Let me talk.", "language": "en"}, timeout=EVENT_WAIT_S
            )
            assert stranger.events_for("early-s2")[-1]["code"] == "not_allowed"
        await asyncio.sleep(2.0)
        assert "tts-en" not in stranger.tracks  # nothing was spoken
        # once joined, the allowed speaker is heard and answered
        translator = await Participant("translator").join(livekit_server, name)
        await wait_agent_ready(translator)
        request_id = "late-t"  # sent again, as a client would, while the agent does not know it
        await translator.send_until_known(
            {"id": request_id, "text": "Allowed.", "language": "en"}, timeout=EVENT_WAIT_S
        )
        finished = await translator.wait_event(request_id, "finished", EVENT_WAIT_S)
        assert finished["interrupted"] is False
        sent_ids = ("early-s", "early-s2", request_id)
        assert not [event for _, event in watcher.events if event.get("id") in sent_ids]
        await asyncio.gather(stranger.leave(), translator.leave())
    finally:
        await watcher.leave()


async def test_a_silent_track_is_unpublished_and_published_again_for_the_next_utterance(
    livekit_server: DevServer,
    tmp_path_factory: pytest.TempPathFactory,
    transcriber: Transcriber,
) -> None:
    """A published track costs CPU while silent: after ``idle_track_timeout_s`` it goes (the
    listener sees it unpublished, the agent's track attribute is cleared), and the next
    utterance in its language is heard on a new track, whole."""
    # its own agent name: the module's other worker, with the default timeout, is registered too
    settings = f"  idle_track_timeout_s: {SILENT_TRACK_TIMEOUT_S}\n  agent_name: {SILENT_AGENT}\n"
    with running_worker(livekit_server, tmp_path_factory.mktemp("silent"), settings):
        name = room_name("silent")
        await dispatch_agent(livekit_server, name, agent_name=SILENT_AGENT)
        listener = await Participant("listener").join(livekit_server, name)
        try:
            agent = await wait_agent_ready(listener)
            await listener.send({"id": "before", "text": "First words.", "language": "en"})
            assert (await listener.wait_event("before", "finished", EVENT_WAIT_S))[
                "interrupted"
            ] is False
            first_sid = listener.tracks["tts-en"].sid

            def unpublished() -> bool:
                published = listener.room.remote_participants[agent].track_publications
                return not track_attributes(listener, agent) and not published

            await listener.wait_for(
                unpublished, SILENT_TRACK_TIMEOUT_S + 15, "the silent track unpublished"
            )
            text = "The track comes back for these words."
            await listener.send({"id": "after", "text": text, "language": "en"})
            finished = await listener.wait_event("after", "finished", EVENT_WAIT_S)
            assert finished["interrupted"] is False and finished["track"] == "tts-en"
            assert track_attributes(listener, agent) == {TRACK_ATTRIBUTE_PREFIX + "tts-en"}
            await asyncio.sleep(0.5)  # the last frames cross the network after playout
            track = listener.tracks["tts-en"]
            assert track.sid != first_sid
            heard = transcriber.transcribe(track.audio(), LIVEKIT_SAMPLE_RATE, base=True)
            assert word_error_rate(text, heard) <= MAX_WER, heard
            assert [e["type"] for e in listener.events_for("after")].count("finished") == 1
        finally:
            await listener.leave()
