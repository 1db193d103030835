"""``POST /rooms/{room}/speak`` and ``GET /rooms``: the agent in LiveKit rooms, over HTTP.

Speaking dispatches the agent (LiveKit's agent dispatch API) when it is not in the room yet,
waits until it is listening, then hands the text over as a ``tts.speak`` packet sent through
the server API. Needs ``LIVEKIT_URL``, ``LIVEKIT_API_KEY`` and ``LIVEKIT_API_SECRET``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass

from aiohttp import web
from livekit import api as lkapi

from agent.speak_request import (
    AGENT_ATTRIBUTE,
    READY_ATTRIBUTE,
    TOPIC_SPEAK,
    TRACK_ATTRIBUTE_PREFIX,
    new_request_id,
    speak_request,
)
from api.request_parsing import parse_json_object
from engines.errors import HiveTTSError, RequestError

DISPATCH_WAIT_S = 20.0
POLL_S = 0.1
ROOM_NAME_MAX = 128


class LiveKitNotConfiguredError(HiveTTSError):
    code = "livekit_not_configured"
    http_status = 503


class AgentNotJoinedError(HiveTTSError):
    code = "agent_not_joined"
    http_status = 504


class LiveKitError(HiveTTSError):
    code = "livekit_error"
    http_status = 502


@dataclass(frozen=True)
class LiveKitSettings:
    url: str
    api_key: str
    api_secret: str
    agent_name: str

    @classmethod
    def from_env(cls, agent_name: str) -> LiveKitSettings | None:
        url = os.environ.get("LIVEKIT_URL", "")
        key = os.environ.get("LIVEKIT_API_KEY", "")
        secret = os.environ.get("LIVEKIT_API_SECRET", "")
        if not (url and key and secret):
            return None
        return cls(url, key, secret, agent_name)


class RoomsService:
    """The control API's side of the LiveKit agent (one API client per app)."""

    def __init__(self, settings: LiveKitSettings | None) -> None:
        self._settings = settings
        self._client: lkapi.LiveKitAPI | None = None
        self._dispatching: dict[str, asyncio.Lock] = {}

    def _api(self) -> lkapi.LiveKitAPI:
        if self._settings is None:
            raise LiveKitNotConfiguredError(
                "no LiveKit server configured: set LIVEKIT_URL, LIVEKIT_API_KEY and "
                "LIVEKIT_API_SECRET (`hive-tts dev` does this for a local server)"
            )
        if self._client is None:
            s = self._settings
            self._client = lkapi.LiveKitAPI(s.url, s.api_key, s.api_secret)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def _agent_in(self, room: str) -> lkapi.ParticipantInfo | None:
        try:
            reply = await self._api().room.list_participants(
                lkapi.ListParticipantsRequest(room=room)
            )
        except lkapi.TwirpError as exc:
            if exc.status == 404 or exc.code == "not_found":
                return None
            raise LiveKitError(f"listing participants of {room!r}: {exc.message}") from exc
        for participant in reply.participants:
            if participant.attributes.get(AGENT_ATTRIBUTE) and participant.attributes.get(
                READY_ATTRIBUTE
            ):
                return participant
        return None

    async def ensure_agent(self, room: str) -> bool:
        """Dispatch the agent into ``room`` unless it is there; True if it was dispatched."""
        lock = self._dispatching.setdefault(room, asyncio.Lock())
        async with lock:
            if await self._agent_in(room) is not None:
                return False
            assert self._settings is not None
            client = self._api()
            try:
                await client.room.create_room(lkapi.CreateRoomRequest(name=room))
                await client.agent_dispatch.create_dispatch(
                    lkapi.CreateAgentDispatchRequest(
                        agent_name=self._settings.agent_name, room=room
                    )
                )
            except lkapi.TwirpError as exc:
                raise LiveKitError(f"dispatching the agent to {room!r}: {exc.message}") from exc
            deadline = time.monotonic() + DISPATCH_WAIT_S
            while time.monotonic() < deadline:
                if await self._agent_in(room) is not None:
                    return True
                await asyncio.sleep(POLL_S)
            raise AgentNotJoinedError(
                f"the agent {self._settings.agent_name!r} did not join {room!r} within "
                f"{DISPATCH_WAIT_S:.0f} s: is a `hive-tts agent` worker running and not full?"
            )

    async def speak(self, room: str, body: dict[str, object]) -> dict[str, object]:
        if not 0 < len(room) <= ROOM_NAME_MAX:
            raise RequestError(f"room name must have 1..{ROOM_NAME_MAX} characters")
        if "id" not in body:
            body = {**body, "id": new_request_id()}
        request = speak_request(body, sender=None, require_text=True)
        if not request.synthesis.text.strip():
            raise RequestError("'text' is empty")
        dispatched = await self.ensure_agent(room)
        try:
            await self._api().room.send_data(
                lkapi.SendDataRequest(
                    room=room,
                    data=json.dumps(body).encode(),
                    kind=lkapi.DataPacket.Kind.RELIABLE,
                    topic=TOPIC_SPEAK,
                )
            )
        except lkapi.TwirpError as exc:
            raise LiveKitError(f"sending text to {room!r}: {exc.message}") from exc
        return {"id": request.id, "room": room, "dispatched": dispatched, "status": "sent"}

    async def rooms(self) -> list[dict[str, object]]:
        client = self._api()
        try:
            listing = await client.room.list_rooms(lkapi.ListRoomsRequest())
        except lkapi.TwirpError as exc:
            raise LiveKitError(f"listing rooms: {exc.message}") from exc
        found: list[dict[str, object]] = []
        for room in listing.rooms:
            agent = await self._agent_in(room.name)
            if agent is None:
                continue
            tracks = [
                {"name": key.removeprefix(TRACK_ATTRIBUTE_PREFIX), **json.loads(value)}
                for key, value in agent.attributes.items()
                if key.startswith(TRACK_ATTRIBUTE_PREFIX)
            ]
            found.append(
                {
                    "room": room.name,
                    "agent_identity": agent.identity,
                    "participants": room.num_participants,
                    "tracks": tracks,
                }
            )
        return found


ROOMS_KEY = web.AppKey("rooms", RoomsService)


async def speak_handler(request: web.Request) -> web.Response:
    body = parse_json_object(await request.read())
    reply = await request.app[ROOMS_KEY].speak(request.match_info["room"], body)
    return web.json_response(reply, status=202)


async def rooms_handler(request: web.Request) -> web.Response:
    return web.json_response({"rooms": await request.app[ROOMS_KEY].rooms()})


def add_room_routes(app: web.Application, settings: LiveKitSettings | None) -> None:
    service = RoomsService(settings)
    app[ROOMS_KEY] = service

    async def close(_: web.Application) -> None:
        await service.aclose()

    app.on_cleanup.append(close)
    app.router.add_post("/rooms/{room}/speak", speak_handler)
    app.router.add_get("/rooms", rooms_handler)
