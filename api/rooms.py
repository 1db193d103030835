"""``POST /rooms/{room}/speak``, ``GET /rooms``, ``POST /rooms/{room}/token`` (a short-lived
room token for a browser) and ``POST /livekit/webhook``: the agent in LiveKit rooms, over HTTP.

Speaking dispatches the agent (LiveKit's agent dispatch API) when it is not in the room yet,
waits until it is listening, then hands the text over as a ``tts.speak`` packet sent through
the server API. A dispatch that LiveKit dropped (every worker busy launching, none registered
yet) is made again until the agent joins or the wait runs out.

Rooms keep their agent: :class:`~api.agent_watch.AgentWatch` brings a new agent to a room whose
agent left without the room ending (LiveKit's ``participant_left`` webhook, and a periodic look
at the rooms that have our dispatch). Needs ``LIVEKIT_URL``, ``LIVEKIT_API_KEY`` and
``LIVEKIT_API_SECRET``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

import aiohttp
from aiohttp import web
from livekit import api as lkapi

from agent.speak_request import (
    AGENT_ATTRIBUTE,
    READY_ATTRIBUTE,
    SERVER_AUTH_KEY,
    TOPIC_SPEAK,
    TRACK_ATTRIBUTE_PREFIX,
    new_request_id,
    server_signature,
    speak_request,
)
from agent.speech_journal import (
    PendingSpeech,
    pending_of,
    unspoken_text,
    with_handover,
    without_handover,
)
from api.auth import is_admin, may_speak_in, room_patterns
from api.errors import json_error
from api.rate_limit import RATE_LIMITER, caller_of
from api.request_parsing import parse_json_object
from engines.config import ApiSettings
from engines.errors import HiveTTSError, InvalidOptionError, RequestError

logger = logging.getLogger(__name__)

DISPATCH_WAIT_S = 45.0
"""How long a speak request waits for the agent to be listening (covers a worker that is still
loading its engines at start-up)."""
REDISPATCH_AFTER_S = 6.0
"""A dispatch whose agent has not even begun to join this long after it was made was dropped:
make another. (An agent that finds another one ready in its room leaves, so a dispatch made
twice never leaves two agents speaking.) Rooms connect one at a time on a worker, so a burst's
last room may take seconds to join."""
POLL_S = 0.1
SEND_RETRY_S = 15.0
SEND_TRIES = 3
ACCEPT_WAIT_S = 3.0
"""How long a sent request may take to show in the agent's journal before it is sent again."""
SEND_RETRY_POLL_S = 0.5
ROOM_NAME_MAX = 128
SENT_PER_ROOM = 64
"""Requests sent through this API remembered per room, to replay their unspoken part."""
SENT_ROOMS = 1024
MANAGED_ROOMS = 4096
WORKER_URLS_ENV = "HIVE_TTS_WORKER_URLS"
PUBLIC_URL_ENV = "LIVEKIT_PUBLIC_URL"
ROOM_TOKEN_TTL = timedelta(minutes=10)
"""Room tokens handed to browsers (``POST /rooms/{room}/token``) are short-lived."""
IDENTITY_MAX = 64
WEB_IDENTITY_PREFIX = "web-"
WORKER_STATUS_TIMEOUT_S = 2.0


class LiveKitNotConfiguredError(HiveTTSError):
    code = "livekit_not_configured"
    http_status = 503


class AgentNotJoinedError(HiveTTSError):
    code = "agent_not_joined"
    http_status = 504


class LiveKitError(HiveTTSError):
    code = "livekit_error"
    http_status = 502


class BadWebhookError(RequestError):
    code = "bad_webhook"
    http_status = 401


@dataclass(frozen=True)
class LiveKitSettings:
    url: str
    api_key: str
    api_secret: str
    agent_name: str
    worker_urls: tuple[str, ...] = ()
    """Status URLs (``/worker``) of agent workers this API should report on and wait for."""
    public_url: str | None = None
    """Where browsers reach the LiveKit server (``LIVEKIT_PUBLIC_URL``) when that is not
    ``url`` (a name on a container network); handed out with room tokens."""

    @classmethod
    def from_env(cls, agent_name: str) -> LiveKitSettings | None:
        url = os.environ.get("LIVEKIT_URL", "")
        key = os.environ.get("LIVEKIT_API_KEY", "")
        secret = os.environ.get("LIVEKIT_API_SECRET", "")
        if not (url and key and secret):
            return None
        workers = tuple(
            u.strip() for u in os.environ.get(WORKER_URLS_ENV, "").split(",") if u.strip()
        )
        public_url = os.environ.get(PUBLIC_URL_ENV, "").strip() or None
        return cls(url, key, secret, agent_name, workers, public_url)


def is_agent(participant: lkapi.ParticipantInfo) -> bool:
    return bool(participant.attributes.get(AGENT_ATTRIBUTE))


class RoomsService:
    """The control API's side of the LiveKit agent (one API client per app)."""

    def __init__(self, settings: LiveKitSettings | None) -> None:
        self._settings = settings
        self._client: lkapi.LiveKitAPI | None = None
        self._http: aiohttp.ClientSession | None = None
        self._dispatching: dict[str, asyncio.Lock] = {}
        self._sent: OrderedDict[str, OrderedDict[str, dict[str, object]]] = OrderedDict()
        self._managed: OrderedDict[str, str] = OrderedDict()
        """Rooms this API brought the agent to, with their dispatch metadata: a room that
        LiveKit restarts on another node (its node lost) loses its dispatches with it."""
        self.redispatches = 0

    @property
    def settings(self) -> LiveKitSettings:
        if self._settings is None:
            raise LiveKitNotConfiguredError(
                "no LiveKit server configured: set LIVEKIT_URL, LIVEKIT_API_KEY and "
                "LIVEKIT_API_SECRET (`hive-tts dev` does this for a local server)"
            )
        return self._settings

    @property
    def configured(self) -> bool:
        return self._settings is not None

    def api(self) -> lkapi.LiveKitAPI:
        settings = self.settings
        if self._client is None:
            self._client = lkapi.LiveKitAPI(settings.url, settings.api_key, settings.api_secret)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._http is not None:
            await self._http.close()

    # -- workers --------------------------------------------------------------------------

    async def workers(self) -> list[dict[str, object]]:
        """The status of each configured worker (``registered`` false when unreachable)."""
        if self._settings is None or not self._settings.worker_urls:
            return []
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=WORKER_STATUS_TIMEOUT_S)
            )
        return list(await asyncio.gather(*(self._worker(u) for u in self._settings.worker_urls)))

    async def _worker(self, url: str) -> dict[str, object]:
        assert self._http is not None
        try:
            async with self._http.get(url) as reply:
                body = await reply.json(content_type=None)
                return {"url": url, **body} if isinstance(body, dict) else {"url": url}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return {"url": url, "registered": False, "error": str(exc) or type(exc).__name__}

    # -- the agent in a room --------------------------------------------------------------

    async def participants(self, room: str) -> list[lkapi.ParticipantInfo] | None:
        """The room's participants, or None when the room does not exist."""
        try:
            reply = await self.api().room.list_participants(
                lkapi.ListParticipantsRequest(room=room)
            )
        except lkapi.TwirpError as exc:
            if exc.status == 404 or exc.code == "not_found":
                return None
            raise LiveKitError(f"listing participants of {room!r}: {exc.message}") from exc
        return list(reply.participants)

    async def agent_in(
        self, room: str, *, excluding: Collection[str] = ()
    ) -> lkapi.ParticipantInfo | None:
        """The agent listening in ``room`` (not one of ``excluding``), if there is one."""
        for participant in await self.participants(room) or []:
            if (
                is_agent(participant)
                and participant.attributes.get(READY_ATTRIBUTE)
                and participant.identity not in excluding
            ):
                return participant
        return None

    async def dispatches(self, room: str) -> list[lkapi.AgentDispatch]:
        """This service's agent dispatches in ``room``."""
        try:
            found = await self.api().agent_dispatch.list_dispatch(room_name=room)
        except lkapi.TwirpError as exc:
            # a room no node hosts (not created yet, deleted, or on a lost node) has none
            if exc.status == 404 or exc.code == "not_found" or _node_unreachable(exc):
                return []
            raise LiveKitError(f"listing dispatches of {room!r}: {exc.message}") from exc
        return [d for d in found if d.agent_name == self.settings.agent_name]

    def _lock(self, room: str) -> asyncio.Lock:
        return self._dispatching.setdefault(room, asyncio.Lock())

    def _release(self, room: str, lock: asyncio.Lock) -> None:
        if not lock.locked() and self._dispatching.get(room) is lock:
            del self._dispatching[room]

    async def ensure_agent(self, room: str) -> bool:
        """Dispatch the agent into ``room`` unless it is there; True if it was dispatched."""
        lock = self._lock(room)
        try:
            async with lock:
                if await self.agent_in(room) is not None:
                    return False
                await self.dispatch(room, metadata=None, wait_s=DISPATCH_WAIT_S)
                return True
        finally:
            self._release(room, lock)

    async def dispatch(
        self,
        room: str,
        *,
        metadata: str | None,
        wait_s: float,
        replacing: str | None = None,
        ignoring: Collection[str] = (),
    ) -> lkapi.ParticipantInfo:
        """Make sure a dispatch of our agent stands in ``room`` and wait until its agent
        listens; a dispatch whose job never started is made again.

        ``metadata`` None keeps (or creates with empty) metadata; a replacement (``replacing``
        names the agent that left) always gets a new dispatch with the given metadata."""
        deadline = time.monotonic() + wait_s
        await self._create_room(room)
        standing = await self.dispatches(room)
        if metadata is None:
            metadata = standing[0].metadata if standing else ""
        self._managed[room] = without_handover(metadata)
        self._managed.move_to_end(room)
        while len(self._managed) > MANAGED_ROOMS:
            self._managed.popitem(last=False)
        if replacing is not None:
            await self._replace_dispatches(room, metadata)
        elif not standing or (
            await self.dropped(room) and all(_age_s(d) > REDISPATCH_AFTER_S for d in standing)
        ):
            await self._add_dispatch(room, metadata)
        made_at = time.monotonic()  # else an agent is joining already
        while True:
            agent = await self.agent_in(room, excluding={*ignoring, replacing or ""})
            if agent is not None:
                return agent
            if time.monotonic() >= deadline:
                raise AgentNotJoinedError(
                    f"the agent {self.settings.agent_name!r} did not join {room!r} within "
                    f"{wait_s:.0f} s: is a `hive-tts agent` worker running and not full? "
                    f"(workers: {await self._worker_summary()})"
                )
            if time.monotonic() - made_at >= REDISPATCH_AFTER_S and await self.dropped(room):
                self.redispatches += 1
                logger.warning("LiveKit dropped the agent's job in %s: dispatching again", room)
                await self._add_dispatch(room, metadata)
                made_at = time.monotonic()
            await asyncio.sleep(POLL_S)

    async def dropped(self, room: str) -> bool:
        """No agent of ours is in the room, ready or joining. (LiveKit drops a job that no
        worker took and never tries again; its dispatch state records no jobs to tell.)"""
        participants = await self.participants(room)
        return participants is not None and not any(is_agent(p) for p in participants)

    async def _create_room(self, room: str) -> None:
        try:
            await self.api().room.create_room(lkapi.CreateRoomRequest(name=room))
        except lkapi.TwirpError as exc:
            raise LiveKitError(f"creating room {room!r}: {exc.message}") from exc

    async def _replace_dispatches(self, room: str, metadata: str | None) -> None:
        """Delete this agent's dispatches in ``room`` (their jobs are gone) and make one
        (with ``metadata``, or the old dispatch's when that is None)."""
        client = self.api()
        try:
            for old in await self.dispatches(room):
                if metadata is None:
                    metadata = old.metadata
                await client.agent_dispatch.delete_dispatch(old.id, room)
        except lkapi.TwirpError as exc:
            raise LiveKitError(f"dispatching the agent to {room!r}: {exc.message}") from exc
        await self._add_dispatch(room, metadata)

    async def _add_dispatch(self, room: str, metadata: str | None) -> None:
        """One more dispatch; a job still on its way is left alone (of two agents that end up
        in a room, one leaves)."""
        if metadata is None:
            standing = await self.dispatches(room)
            metadata = standing[0].metadata if standing else ""
        try:
            await self.api().agent_dispatch.create_dispatch(
                lkapi.CreateAgentDispatchRequest(
                    agent_name=self.settings.agent_name, room=room, metadata=metadata
                )
            )
        except lkapi.TwirpError as exc:
            raise LiveKitError(f"dispatching the agent to {room!r}: {exc.message}") from exc

    async def _worker_summary(self) -> str:
        workers = await self.workers()
        if not workers:
            return "none configured to report"
        registered = sum(1 for w in workers if w.get("registered"))
        return f"{registered} of {len(workers)} registered"

    # -- speaking -------------------------------------------------------------------------

    def _remember(self, room: str, body: dict[str, object]) -> None:
        sent = self._sent.setdefault(room, OrderedDict())
        self._sent.move_to_end(room)
        sent[str(body["id"])] = body
        while len(sent) > SENT_PER_ROOM:
            sent.popitem(last=False)
        while len(self._sent) > SENT_ROOMS:
            self._sent.popitem(last=False)

    def manages(self, room: str) -> bool:
        return room in self._managed

    def forget(self, room: str) -> None:
        """The room ended: nothing of it is kept."""
        self._managed.pop(room, None)
        self._sent.pop(room, None)

    def sent(self, room: str, request_id: str) -> dict[str, object] | None:
        sent = self._sent.get(room)
        return None if sent is None else sent.get(request_id)

    async def send(self, room: str, body: dict[str, object]) -> None:
        """Hand ``body`` to the room's agent; while LiveKit moves a room off a lost node
        ("no response from servers"), try again for a while."""
        deadline = time.monotonic() + SEND_RETRY_S
        signature = server_signature(self.settings.api_secret, room, str(body.get("id", "")))
        request = lkapi.SendDataRequest(
            room=room,
            data=json.dumps({**body, SERVER_AUTH_KEY: signature}).encode(),
            kind=lkapi.DataPacket.Kind.RELIABLE,
            topic=TOPIC_SPEAK,
        )
        while True:
            try:
                await self.api().room.send_data(request)
                return
            except lkapi.TwirpError as exc:
                if not _node_unreachable(exc) or time.monotonic() >= deadline:
                    raise LiveKitError(f"sending text to {room!r}: {exc.message}") from exc
            await asyncio.sleep(SEND_RETRY_POLL_S)

    async def speak(self, room: str, body: dict[str, object]) -> dict[str, object]:
        if not 0 < len(room) <= ROOM_NAME_MAX:
            raise RequestError(f"room name must have 1..{ROOM_NAME_MAX} characters")
        if "id" not in body:
            body = {**body, "id": new_request_id()}
        request = speak_request(body, sender=None, require_text=True)
        if not request.synthesis.text.strip():
            raise RequestError("'text' is empty")
        dispatched = await self.ensure_agent(room)
        body = {**body, "id": request.id}
        self._remember(room, body)
        accepted = False
        for _ in range(SEND_TRIES):
            await self.send(room, body)
            if await self._accepted(room, request.id):
                accepted = True
                break
            # a packet sent the moment a new agent is ready can arrive before its data channel
            # is open and be lost; the agent speaks a resent id once
            logger.warning("the agent in %s did not take %s: sending it again", room, request.id)
        status = "accepted" if accepted else "sent"
        return {"id": request.id, "room": room, "dispatched": dispatched, "status": status}

    async def _accepted(self, room: str, request_id: str) -> bool:
        """Whether the room's agent took ``request_id`` (its journal lists it), within
        ``ACCEPT_WAIT_S``. A request spoken and finished before a look would be missed; the
        agent ignores the resend, so that costs a packet, not a second utterance."""
        deadline = time.monotonic() + ACCEPT_WAIT_S
        while time.monotonic() < deadline:
            agent = await self.agent_in(room)
            if agent is not None and any(e.id == request_id for e in pending_of(agent.attributes)):
                return True
            await asyncio.sleep(POLL_S)
        return False

    async def replace_agent(
        self, room: str, lost: lkapi.ParticipantInfo | None, *, restarted: bool = False
    ) -> bool:
        """Bring a new agent to ``room`` after ``lost`` left (or vanished); replay what this API
        sent that was not spoken and hand the rest to the new agent to report. True if a new
        agent was dispatched.

        ``restarted``: the room just started again on another node (its node was lost); the
        agents LiveKit still lists for it are the lost node's records, not in the room."""
        lock = self._lock(room)
        try:
            async with lock:
                return await self._replace(room, lost, restarted)
        finally:
            self._release(room, lock)

    async def _replace(
        self, room: str, lost: lkapi.ParticipantInfo | None, restarted: bool
    ) -> bool:
        participants = await self.participants(room)
        if participants is None:
            self.forget(room)
            return False  # the room ended
        if not self.manages(room) and not await self.dispatches(room):
            return False  # nobody asked for our agent here
        if lost is None and not any(not is_agent(p) for p in participants):
            return False  # nobody to hear it: the next speak request brings one
        lost_identity = lost.identity if lost is not None else None
        ignored = {p.identity for p in participants if is_agent(p)} if restarted else set()
        if lost_identity is not None:
            ignored.add(lost_identity)
        if any(
            is_agent(p) and p.identity not in ignored and p.attributes.get(READY_ATTRIBUTE)
            for p in participants
        ):
            return False
        pending = pending_of(lost.attributes) if lost is not None else []
        replays: list[tuple[dict[str, object], PendingSpeech]] = []
        unknown: list[PendingSpeech] = []
        for entry in pending:
            body = self.sent(room, entry.id)
            (unknown.append(entry) if body is None else replays.append((body, entry)))
        old = await self.dispatches(room)
        standing = old[0].metadata if old else self._managed.get(room, "")
        metadata = with_handover(standing, unknown, lost_identity)
        self.redispatches += 1
        logger.warning(
            "agent %s left %s: dispatching a new one (%d to replay, %d to report lost)",
            lost_identity,
            room,
            len(replays),
            len(unknown),
        )
        await self.dispatch(
            room,
            metadata=metadata,
            wait_s=DISPATCH_WAIT_S,
            replacing=lost_identity,
            ignoring=ignored,
        )
        for body, entry in replays:
            rest = unspoken_text(str(body.get("text", "")), entry.spoken)
            if rest.strip():
                await self.send(room, {**body, "text": rest})
        return True

    async def rooms(self) -> list[dict[str, object]]:
        client = self.api()
        try:
            listing = await client.room.list_rooms(lkapi.ListRoomsRequest())
        except lkapi.TwirpError as exc:
            raise LiveKitError(f"listing rooms: {exc.message}") from exc
        found: list[dict[str, object]] = []
        for room in listing.rooms:
            agent = await self.agent_in(room.name)
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


def _node_unreachable(exc: lkapi.TwirpError) -> bool:
    """The room's node did not answer (lost; LiveKit moves the room when it is next joined)."""
    return exc.code in ("unavailable", "unknown") and "no response" in exc.message


def _age_s(dispatch: lkapi.AgentDispatch) -> float:
    return (time.time_ns() - dispatch.state.created_at) / 1e9


ROOMS_KEY = web.AppKey("rooms", RoomsService)
ROOM_ACCESS = web.AppKey("room_access", ApiSettings)


def _may_speak_in(request: web.Request, room: str) -> bool:
    keys = request.app[ROOM_ACCESS]
    return may_speak_in(request, room, keys.api_keys, keys.admin_keys, keys.room_keys)


@contextlib.contextmanager
def _livekit_reachable() -> Iterator[None]:
    """A LiveKit server that does not answer is a 502 naming it, not a 500."""
    try:
        yield
    except aiohttp.ClientError as exc:
        raise LiveKitError(f"LiveKit did not answer: {exc}") from exc


async def speak_handler(request: web.Request) -> web.Response:
    room = request.match_info["room"]
    if not _may_speak_in(request, room):
        # checked before the body is read: the agent is never dispatched for this caller
        return json_error(
            403,
            "forbidden",
            f"making the agent speak in room {room!r} needs an admin key or a key for that room",
        )
    limiter = request.app.get(RATE_LIMITER)
    if limiter is not None:
        limiter.take(caller_of(request))
    body = parse_json_object(await request.read())
    with _livekit_reachable():
        reply = await request.app[ROOMS_KEY].speak(room, body)
    return web.json_response(reply, status=202)


async def rooms_handler(request: web.Request) -> web.Response:
    keys = request.app[ROOM_ACCESS]
    admin = is_admin(request, (*keys.api_keys, *keys.room_keys), keys.admin_keys)
    if not admin and room_patterns(request, keys.room_keys) is None:
        return json_error(403, "forbidden", "listing rooms needs an admin key or a room key")
    with _livekit_reachable():
        rooms = await request.app[ROOMS_KEY].rooms()
    if not admin:  # a room key sees its rooms only
        rooms = [r for r in rooms if _may_speak_in(request, str(r["room"]))]
    return web.json_response({"rooms": rooms})


class RoomRole(StrEnum):
    LISTENER = "listener"
    """Hears the room and sends data (``tts.speak`` text); publishes no audio."""
    SPEAKER = "speaker"
    """Publishes audio too (an admin key)."""


def room_token(settings: LiveKitSettings, room: str, identity: str, role: RoomRole) -> str:
    """A LiveKit access token for ``room``, valid for ``ROOM_TOKEN_TTL``."""
    grants = lkapi.VideoGrants(
        room_join=True,
        room=room,
        can_subscribe=True,
        can_publish=role is RoomRole.SPEAKER,
        can_publish_data=True,
    )
    return (
        lkapi.AccessToken(settings.api_key, settings.api_secret)
        .with_identity(identity)
        .with_name(identity)
        .with_grants(grants)
        .with_ttl(ROOM_TOKEN_TTL)
        .to_jwt()
    )


def _token_options(body: dict[str, object]) -> tuple[RoomRole, str | None, bool]:
    """``role``, ``identity`` and ``agent`` of a token request, checked."""
    unknown = sorted(set(body) - {"role", "identity", "agent"})
    if unknown:
        raise InvalidOptionError(
            f"unknown keys {unknown}; a token request takes role, identity and agent"
        )
    role = body.get("role", RoomRole.LISTENER.value)
    if role not in tuple(RoomRole):
        raise InvalidOptionError(f"'role' must be one of {', '.join(RoomRole)}")
    identity = body.get("identity")
    if identity is not None and not (
        isinstance(identity, str) and 0 < len(identity) <= IDENTITY_MAX and identity.isprintable()
    ):
        raise InvalidOptionError(f"'identity' must be a string of 1..{IDENTITY_MAX} characters")
    agent = body.get("agent", True)
    if not isinstance(agent, bool):
        raise InvalidOptionError("'agent' must be true or false")
    return RoomRole(str(role)), identity, agent


async def token_handler(request: web.Request) -> web.Response:
    """A room token for a browser (the studio page): a listener's for any valid key, a
    speaker's or a chosen identity for an admin key (an identity can be what
    ``agent.permission`` lets speak). The agent is brought to the room first unless
    ``agent`` is false."""
    room = request.match_info["room"]
    keys = request.app[ROOM_ACCESS]
    if room_patterns(request, keys.room_keys) is not None and not _may_speak_in(request, room):
        return json_error(403, "forbidden", f"this room key does not open room {room!r}")
    raw = await request.read()
    role, identity, agent = _token_options(parse_json_object(raw) if raw.strip() else {})
    if not 0 < len(room) <= ROOM_NAME_MAX:
        raise RequestError(f"room name must have 1..{ROOM_NAME_MAX} characters")
    admin = is_admin(request, (*keys.api_keys, *keys.room_keys), keys.admin_keys)
    if role is RoomRole.SPEAKER and not admin:
        return json_error(403, "forbidden", "a speaker token (publishing audio) needs an admin key")
    if identity is not None and not admin:
        return json_error(403, "forbidden", "choosing the identity needs an admin key")
    limiter = request.app.get(RATE_LIMITER)
    if limiter is not None:
        limiter.take(caller_of(request))
    service = request.app[ROOMS_KEY]
    settings = service.settings
    with _livekit_reachable():
        dispatched = await service.ensure_agent(room) if agent else False
    identity = identity or WEB_IDENTITY_PREFIX + secrets.token_hex(4)
    reply = {
        "url": settings.public_url or settings.url,
        "token": room_token(settings, room, identity, role),
        "room": room,
        "identity": identity,
        "role": role.value,
        "expires_in_s": int(ROOM_TOKEN_TTL.total_seconds()),
        "agent_dispatched": dispatched,
    }
    return web.json_response(reply)


def add_room_routes(
    app: web.Application, settings: LiveKitSettings | None, access: ApiSettings
) -> RoomsService:
    """``access``: the keys; ``/rooms`` needs an admin key, or a room key for its rooms."""
    service = RoomsService(settings)
    app[ROOMS_KEY] = service
    app[ROOM_ACCESS] = access

    async def close(_: web.Application) -> None:
        await service.aclose()

    app.on_cleanup.append(close)
    app.router.add_post("/rooms/{room}/speak", speak_handler)
    app.router.add_post("/rooms/{room}/token", token_handler)
    app.router.add_get("/rooms", rooms_handler)
    return service
