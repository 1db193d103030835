"""Rooms keep their agent: a new one is dispatched when the old one is gone and the room is not.

Two ways in, both on LiveKit's own state:
- LiveKit's ``participant_left`` webhook for an agent participant (at ``POST /livekit/webhook``,
  signed with the API key), which arrives when a dying worker's participant times out, or at
  once when a worker's supervisor removes the participants of a worker that crashed;
- a look every few seconds at the rooms that have a dispatch of our agent or that this API
  brought the agent to, for a room whose agent is neither there nor on its way (a lost node, a
  lost webhook, a drained worker). A room whose node is lost starts again on another node when
  its next participant joins, without its dispatches; the API's own list of rooms covers that.

Either way :meth:`RoomsService.replace_agent` decides, under the room's lock, so a room gets one
new agent however many signals arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from livekit import api as lkapi

from api.rooms import BadWebhookError, LiveKitError, RoomsService, is_agent

logger = logging.getLogger(__name__)

RECONCILE_INTERVAL_S = 2.0
PARTICIPANT_LEFT = "participant_left"
ROOM_FINISHED = "room_finished"
ROOM_STARTED = "room_started"


class AgentWatch:
    """Background task and webhook handling that bring agents back to their rooms."""

    def __init__(self, service: RoomsService, interval_s: float = RECONCILE_INTERVAL_S) -> None:
        self._service = service
        self._interval_s = interval_s
        self._tasks: set[asyncio.Task[bool]] = set()
        self._replacing: set[str] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._receiver: lkapi.WebhookReceiver | None = None
        self.webhooks = 0

    def start(self) -> None:
        if self._service.configured and self._loop_task is None:
            self._loop_task = asyncio.create_task(self._reconcile_forever(), name="agent-watch")

    async def aclose(self) -> None:
        tasks = [t for t in (self._loop_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def receive(self, body: str, authorization: str) -> lkapi.WebhookEvent:
        """A webhook LiveKit signed with our key, or ``BadWebhookError``."""
        settings = self._service.settings
        if self._receiver is None:
            verifier = lkapi.TokenVerifier(settings.api_key, settings.api_secret)
            self._receiver = lkapi.WebhookReceiver(verifier)
        try:
            return self._receiver.receive(body, authorization)
        except Exception as exc:  # the SDK raises plain exceptions for bad tokens and hashes
            raise BadWebhookError(f"webhook not signed by this LiveKit server: {exc}") from exc

    def on_event(self, event: lkapi.WebhookEvent) -> None:
        self.webhooks += 1
        if event.event == PARTICIPANT_LEFT and is_agent(event.participant):
            self._spawn(event.room.name, event.participant)
        elif event.event == ROOM_STARTED and self._service.manages(event.room.name):
            # a room of ours started again: its node was lost, and its dispatches with it
            self._spawn(event.room.name, None, restarted=True)
        elif event.event == ROOM_FINISHED:
            self._service.forget(event.room.name)

    def _spawn(
        self, room: str, lost: lkapi.ParticipantInfo | None, *, restarted: bool = False
    ) -> None:
        task = asyncio.create_task(
            self._replace(room, lost, restarted), name=f"replace-agent-{room}"
        )
        self._tasks.add(task)
        self._replacing.add(room)

        def done(_: asyncio.Task[bool]) -> None:
            self._tasks.discard(task)
            self._replacing.discard(room)

        task.add_done_callback(done)

    async def _replace(
        self, room: str, lost: lkapi.ParticipantInfo | None, restarted: bool = False
    ) -> bool:
        try:
            return await self._service.replace_agent(room, lost, restarted=restarted)
        except LiveKitError as exc:  # the room was deleted meanwhile, or its node is lost
            logger.warning("could not bring an agent back to %s: %s", room, exc)
        except Exception:
            logger.exception("could not bring an agent back to %s", room)
        return False

    async def reconcile(self) -> list[str]:
        """One look at every room; returns the rooms a new agent is being brought to."""
        service = self._service
        try:
            listing = await service.api().room.list_rooms(lkapi.ListRoomsRequest())
        except lkapi.TwirpError as exc:
            raise LiveKitError(f"listing rooms: {exc.message}") from exc
        started: list[str] = []
        for room in listing.rooms:
            if room.name in self._replacing:
                continue
            try:
                if await self._needs_agent(room.name):
                    self._spawn(room.name, None)  # one slow room never holds up the others
                    started.append(room.name)
            except LiveKitError as exc:  # e.g. a room whose node is lost: the others go on
                logger.info("agent watch: %s", exc)
        return started

    async def _needs_agent(self, room: str) -> bool:
        service = self._service
        participants = await service.participants(room)
        if participants is None or any(is_agent(p) for p in participants):
            return False
        if not participants:
            return False  # an empty room: nobody to hear an agent
        return service.manages(room) or bool(await service.dispatches(room))

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.reconcile()
            except Exception as exc:  # LiveKit restarting: try again next round
                logger.info("agent watch: %s", exc)


WATCH_KEY = web.AppKey("agent_watch", AgentWatch)


async def webhook_handler(request: web.Request) -> web.Response:
    watch = request.app[WATCH_KEY]
    body = (await request.read()).decode("utf-8", errors="replace")
    event = watch.receive(body, request.headers.get("Authorization", ""))
    watch.on_event(event)
    return web.json_response({"received": event.event})


def add_agent_watch(app: web.Application, service: RoomsService) -> None:
    watch = AgentWatch(service)
    app[WATCH_KEY] = watch

    async def lifecycle(_: web.Application):  # type: ignore[no-untyped-def]
        watch.start()
        yield
        await watch.aclose()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/livekit/webhook", webhook_handler)


__all__ = ["AgentWatch", "add_agent_watch"]
