"""Two livekit-server nodes sharing one Redis: rooms are shared, a killed node leaves the other
serving, and a node's webhooks arrive signed with the dev key.

Each test starts its own cluster (Redis and nodes on free loopback ports); no agent workers.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from livekit import api as lkapi

from agent.livekit_cluster import LiveKitCluster
from agent.livekit_server import (
    BUILD_CACHE,
    DEV_API_KEY,
    DEV_API_SECRET,
    LOOPBACK_IP,
    SERVER_ENV,
    DevServer,
)
from tests.livekit_fixtures import Participant, room_name

JOIN_TIMEOUT_S = 15.0
ROOM_LISTED_TIMEOUT_S = 10.0
FAILOVER_TIMEOUT_S = 15.0
WEBHOOK_TIMEOUT_S = 10.0
RETRY_POLL_S = 0.2
WEBHOOK_PATH = "/livekit/webhook"

pytestmark = pytest.mark.asyncio(loop_scope="session")


def start_cluster(nodes: int, log_dir: Path, webhook_urls: Sequence[str] = ()) -> LiveKitCluster:
    os.environ.setdefault(SERVER_ENV, str(BUILD_CACHE / "livekit-server"))
    return LiveKitCluster.start(nodes, log_dir=log_dir, webhook_urls=webhook_urls)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LiveKitCluster]:
    with start_cluster(2, tmp_path) as started:
        yield started


def client(node: DevServer) -> lkapi.LiveKitAPI:
    return lkapi.LiveKitAPI(node.http_url, node.api_key, node.api_secret)


async def listed_rooms(node: DevServer) -> set[str]:
    async with client(node) as api:
        reply = await api.room.list_rooms(lkapi.ListRoomsRequest())
    return {room.name for room in reply.rooms}


async def create_room(node: DevServer, name: str) -> None:
    async with client(node) as api:
        await api.room.create_room(lkapi.CreateRoomRequest(name=name))


async def sees(participant: Participant, identity: str) -> None:
    await participant.wait_for(
        lambda: any(p.identity == identity for p in participant.room.remote_participants.values()),
        JOIN_TIMEOUT_S,
        f"{participant.identity} to see {identity}",
    )


async def test_a_room_created_on_one_node_is_shared_by_the_other(
    cluster: LiveKitCluster,
) -> None:
    node_a, node_b = cluster.nodes
    name = room_name("shared")
    await create_room(node_a, name)

    deadline = time.monotonic() + ROOM_LISTED_TIMEOUT_S
    while name not in await listed_rooms(node_b):
        assert time.monotonic() < deadline, f"node B never listed {name}"
        await asyncio.sleep(RETRY_POLL_S)

    alice = await Participant("alice").join(node_a, name)
    bob = await Participant("bob").join(node_b, name)
    try:
        await sees(alice, "bob")
        await sees(bob, "alice")
    finally:
        await alice.leave()
        await bob.leave()


async def test_a_killed_node_leaves_the_other_serving_new_rooms(
    cluster: LiveKitCluster,
) -> None:
    node_a, node_b = cluster.nodes
    node_b.kill()
    assert not node_b.running
    await listed_rooms(node_a)  # node A still answers at once

    # Rooms go to a random node, the dead one included until its stats in Redis are 5 s old;
    # a create placed there fails "unavailable" after the RPC times out (3 s).
    name = room_name("after-kill")
    deadline = time.monotonic() + FAILOVER_TIMEOUT_S
    while True:
        try:
            await create_room(node_a, name)
            break
        except lkapi.ServerError as error:
            if error.code != lkapi.ServerErrorCode.UNAVAILABLE:
                raise
            assert time.monotonic() < deadline, "node A never created a room after the kill"
            await asyncio.sleep(RETRY_POLL_S)

    assert name in await listed_rooms(node_a)
    carol = await Participant("carol").join(node_a, name)
    dave = await Participant("dave").join(node_a, name)
    try:
        await sees(carol, "dave")
        await sees(dave, "carol")
    finally:
        await carol.leave()
        await dave.leave()


@dataclass(frozen=True)
class Delivery:
    body: str
    authorization: str


DELIVERIES = web.AppKey("deliveries", asyncio.Queue[Delivery])


async def receive_webhook(request: web.Request) -> web.Response:
    await request.app[DELIVERIES].put(
        Delivery(await request.text(), request.headers.get("Authorization", ""))
    )
    return web.Response()


@pytest.fixture
async def webhook_sink() -> AsyncIterator[tuple[str, asyncio.Queue[Delivery]]]:
    """A loopback HTTP server that queues every webhook it receives; yields its URL."""
    app = web.Application()
    app[DELIVERIES] = asyncio.Queue()
    app.router.add_post(WEBHOOK_PATH, receive_webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK_IP, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://{LOOPBACK_IP}:{port}{WEBHOOK_PATH}", app[DELIVERIES]
    finally:
        await runner.cleanup()


async def test_a_node_sends_a_signed_participant_joined_webhook(
    webhook_sink: tuple[str, asyncio.Queue[Delivery]], tmp_path: Path
) -> None:
    url, deliveries = webhook_sink
    receiver = lkapi.WebhookReceiver(lkapi.TokenVerifier(DEV_API_KEY, DEV_API_SECRET))
    with start_cluster(1, tmp_path, [url]) as cluster:
        name = room_name("webhook")
        erin = await Participant("erin").join(cluster.nodes[0], name)
        try:
            deadline = time.monotonic() + WEBHOOK_TIMEOUT_S
            events: list[str] = []
            while "participant_joined" not in events:
                remaining = deadline - time.monotonic()
                try:
                    delivery = await asyncio.wait_for(deliveries.get(), max(remaining, 0.0))
                except TimeoutError:
                    pytest.fail(f"no participant_joined webhook in time; got {events}")
                event = receiver.receive(delivery.body, delivery.authorization)
                events.append(event.event)
            assert event.room.name == name
            assert event.participant.identity == "erin"
        finally:
            await erin.leave()
