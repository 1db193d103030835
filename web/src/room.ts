// Room: listen to the agent in a LiveKit room, pick a language's track, read the captions,
// send it text (tts.speak) and see what it answers (tts.events).

import {
  type Participant,
  type RemoteTrack,
  type RemoteTrackPublication,
  Room,
  RoomEvent,
  Track,
  type TextStreamReader,
} from "livekit-client";
import { apiJson, describeError } from "./api";
import { LevelMeter, type MeterCounts } from "./audio";
import { byId, element, showError } from "./dom";

const TOPIC_SPEAK = "tts.speak";
const TOPIC_EVENTS = "tts.events";
/** Sends of one text at most, while the agent answers `sender_unknown`. */
const MAX_ATTEMPTS = 5;
const TOPIC_TRANSCRIPTION = "lk.transcription";
const AGENT_ATTRIBUTE = "hive-tts.agent";
const TRACK_ATTRIBUTE_PREFIX = "tts.track.";
const SEGMENT_ATTRIBUTE = "lk.segment_id";
const MAX_LOG_ITEMS = 200;

interface RoomToken {
  url: string;
  token: string;
  room: string;
  identity: string;
}

interface TrackInfo {
  language: string;
  voice_id: string;
  track_sid?: string;
}

interface AgentTrack {
  name: string;
  info: TrackInfo | null;
  publication?: RemoteTrackPublication;
}

interface Heard {
  element: HTMLMediaElement;
  meter: LevelMeter | null;
}

function isAgent(participant: Participant): boolean {
  return Boolean(participant.attributes[AGENT_ATTRIBUTE]);
}

function appendLimited(list: HTMLElement, item: HTMLElement): void {
  list.append(item);
  while (list.children.length > MAX_LOG_ITEMS) list.firstElementChild?.remove();
  list.scrollTop = list.scrollHeight;
}

export class RoomSection {
  private readonly section = byId("room");
  private readonly form = byId<HTMLFormElement>("room-form");
  private readonly trackChoice = byId<HTMLSelectElement>("room-track");
  private readonly status = byId("room-status");
  private readonly error = byId("room-error");
  private readonly join = byId<HTMLButtonElement>("room-join");
  private readonly leave = byId<HTMLButtonElement>("room-leave");
  private readonly send = byId<HTMLButtonElement>("speak-send");
  private readonly speakForm = byId<HTMLFormElement>("speak-form");
  private readonly captions = byId<HTMLOListElement>("captions");
  private readonly events = byId<HTMLOListElement>("events");
  private readonly audioElements = element("div");
  private room: Room | null = null;
  private readonly heard = new Map<string, Heard>();
  private frames = 0;
  private audibleFrames = 0;
  private captionCount = 0;
  private sent = 0;
  /** What was sent, by id, until the agent answers it with anything but `sender_unknown`. */
  private readonly unanswered = new Map<string, { payload: Uint8Array<ArrayBuffer>; attempts: number }>();

  constructor() {
    this.audioElements.hidden = true;
    document.body.append(this.audioElements);
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.connect();
    });
    this.leave.addEventListener("click", () => void this.disconnect());
    this.speakForm.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.speak();
    });
    this.trackChoice.addEventListener("change", () => this.subscribeChosen());
    const requested = new URLSearchParams(window.location.search).get("room");
    if (requested) byId<HTMLInputElement>("room-name").value = requested;
  }

  private setStatus(text: string, state: string): void {
    this.status.textContent = text;
    this.section.dataset.state = state;
  }

  async connect(): Promise<void> {
    showError(this.error, null);
    const name = byId<HTMLInputElement>("room-name").value.trim();
    this.join.disabled = true;
    try {
      await LevelMeter.prepare(); // on the click: browsers start audio on a gesture
      this.setStatus(`Asking for a token and bringing the agent to ${name}…`, "joining");
      const grant = await apiJson<RoomToken>(`/rooms/${encodeURIComponent(name)}/token`, {
        method: "POST",
        body: { role: "listener" },
      });
      const room = new Room({ adaptiveStream: false, dynacast: false });
      this.room = room;
      this.listen(room);
      this.setStatus(`Connecting to ${grant.url}…`, "joining");
      await room.connect(grant.url, grant.token, { autoSubscribe: false });
      await room.startAudio();
      this.section.dataset.identity = grant.identity;
      this.setStatus(`In room ${grant.room} as ${grant.identity}.`, "connected");
      this.leave.disabled = false;
      this.send.disabled = false;
      this.refreshTracks();
    } catch (error) {
      showError(this.error, `Could not join: ${describeError(error)}`);
      await this.disconnect();
    }
  }

  async disconnect(): Promise<void> {
    const room = this.room;
    this.room = null;
    for (const sid of Array.from(this.heard.keys())) this.forget(sid);
    if (room) await room.disconnect();
    this.join.disabled = false;
    this.leave.disabled = true;
    this.send.disabled = true;
    if (this.section.dataset.state !== "idle") this.setStatus("Not connected.", "idle");
  }

  private listen(room: Room): void {
    room
      .on(RoomEvent.TrackPublished, () => this.refreshTracks())
      .on(RoomEvent.TrackUnpublished, () => this.refreshTracks())
      .on(RoomEvent.ParticipantConnected, () => this.refreshTracks())
      .on(RoomEvent.ParticipantDisconnected, () => this.refreshTracks())
      .on(RoomEvent.ParticipantAttributesChanged, () => this.refreshTracks())
      .on(RoomEvent.TrackSubscribed, (track, pub) => void this.hear(track, pub))
      .on(RoomEvent.TrackUnsubscribed, (_track, publication) => this.forget(publication.trackSid))
      .on(RoomEvent.DataReceived, (payload, _participant, _kind, topic) => {
        if (topic === TOPIC_EVENTS) this.onEvent(payload);
      })
      .on(RoomEvent.Disconnected, () => {
        if (this.room === room) void this.disconnect();
      });
    room.registerTextStreamHandler(TOPIC_TRANSCRIPTION, (reader, from) => {
      void this.caption(reader, from.identity);
    });
  }

  /** The agent's tracks, from its ``tts.track.*`` attributes and its publications. */
  private agentTracks(): AgentTrack[] {
    const found = new Map<string, AgentTrack>();
    for (const participant of this.room?.remoteParticipants.values() ?? []) {
      if (!isAgent(participant)) continue;
      for (const [key, value] of Object.entries(participant.attributes)) {
        if (!key.startsWith(TRACK_ATTRIBUTE_PREFIX) || !value) continue;
        const name = key.slice(TRACK_ATTRIBUTE_PREFIX.length);
        try {
          found.set(name, { name, info: JSON.parse(value) as TrackInfo });
        } catch {
          found.set(name, { name, info: null });
        }
      }
      for (const publication of participant.audioTrackPublications.values()) {
        const name = publication.trackName;
        const entry = found.get(name) ?? { name, info: null };
        entry.publication = publication;
        found.set(name, entry);
      }
    }
    return Array.from(found.values()).sort((a, b) => a.name.localeCompare(b.name));
  }

  /** The choice of tracks follows the agent's ``tts.track.*`` attributes and publications. */
  private refreshTracks(): void {
    const chosen = this.trackChoice.value;
    const options = [new Option("Every language", "")];
    for (const track of this.agentTracks()) {
      const label = track.info
        ? `${track.info.language} — ${track.name} (${track.info.voice_id})`
        : track.name;
      options.push(new Option(label, track.name));
    }
    // attributes change often (the agent's journal): rebuild the choice only when it changed,
    // so a keyboard user moving through it is not reset
    const shown = Array.from(this.trackChoice.options).map((o) => `${o.value}=${o.text}`);
    if (shown.join("\n") !== options.map((o) => `${o.value}=${o.text}`).join("\n")) {
      this.trackChoice.replaceChildren(...options);
      this.trackChoice.value = options.some((o) => o.value === chosen) ? chosen : "";
    }
    this.subscribeChosen();
  }

  private subscribeChosen(): void {
    const chosen = this.trackChoice.value;
    for (const track of this.agentTracks()) {
      const publication = track.publication;
      if (!publication || publication.kind !== Track.Kind.Audio) continue;
      const wanted = chosen === "" || chosen === track.name;
      if (publication.isDesired !== wanted) publication.setSubscribed(wanted);
    }
  }

  private async hear(track: RemoteTrack, publication: RemoteTrackPublication): Promise<void> {
    if (track.kind !== Track.Kind.Audio) return;
    const media = track.attach();
    media.dataset.track = publication.trackName;
    this.audioElements.append(media);
    const heard: Heard = { element: media, meter: null };
    this.heard.set(publication.trackSid, heard);
    this.updateTracks();
    try {
      heard.meter = await LevelMeter.attach(track.mediaStreamTrack, (counts) => this.count(counts));
    } catch (error) {
      showError(this.error, `The level meter did not start: ${describeError(error)}`);
    }
    if (this.heard.get(publication.trackSid) !== heard) heard.meter?.detach(); // gone meanwhile
  }

  private forget(trackSid: string): void {
    const heard = this.heard.get(trackSid);
    if (!heard) return;
    this.heard.delete(trackSid);
    heard.meter?.detach();
    heard.element.remove();
    this.updateTracks();
  }

  private updateTracks(): void {
    const names = Array.from(this.heard.values()).map((h) => h.element.dataset.track ?? "?");
    byId("room-tracks").textContent = names.length ? names.join(", ") : "none";
    this.section.dataset.subscribedTracks = String(names.length);
  }

  private count(delta: MeterCounts): void {
    this.frames += delta.frames;
    this.audibleFrames += delta.audibleFrames;
    byId("room-frames").textContent = `${this.audibleFrames} / ${this.frames}`;
    this.section.dataset.frames = String(this.frames);
    this.section.dataset.audibleFrames = String(this.audibleFrames);
  }

  private async caption(reader: TextStreamReader, identity: string): Promise<void> {
    const item = element("li");
    const segment = reader.info.attributes?.[SEGMENT_ATTRIBUTE] ?? reader.info.id;
    item.dataset.segment = segment;
    item.dataset.from = identity;
    const text = element("span");
    item.append(text);
    appendLimited(this.captions, item);
    for await (const delta of reader) {
      text.textContent += delta;
      this.captions.scrollTop = this.captions.scrollHeight;
    }
    item.classList.add("final");
    this.captionCount += 1;
    this.section.dataset.captions = String(this.captionCount);
  }

  private onEvent(payload: Uint8Array): void {
    let event: Record<string, unknown>;
    try {
      event = JSON.parse(new TextDecoder().decode(payload)) as Record<string, unknown>;
    } catch {
      return;
    }
    const { type, id, ...fields } = event;
    const details = Object.entries(fields)
      .map(([key, value]) => {
        const shown = typeof value === "object" ? JSON.stringify(value) : String(value);
        return `${key}=${shown}`;
      })
      .join(", ");
    const item = element("li", `${String(type)} (${String(id)})${details ? ": " + details : ""}`);
    item.dataset.type = String(type);
    appendLimited(this.events, item);
    const sent = this.unanswered.get(String(id));
    if (!sent) return;
    // sent as this page joined, the text reached the agent before it had seen us join, in a
    // room that limits who may speak: it asks for the same text again
    if (type === "error" && fields.code === "sender_unknown" && sent.attempts < MAX_ATTEMPTS) {
      sent.attempts += 1;
      const wait = Number(fields.retry_after_s ?? 1) * 1000;
      window.setTimeout(() => void this.publish(String(id), sent.payload), wait);
    } else {
      this.unanswered.delete(String(id));
    }
  }

  private async publish(id: string, payload: Uint8Array<ArrayBuffer>): Promise<void> {
    const room = this.room;
    if (!room) return;
    try {
      await room.localParticipant.publishData(payload, { reliable: true, topic: TOPIC_SPEAK });
    } catch (error) {
      this.unanswered.delete(id);
      showError(this.error, `Not sent: ${describeError(error)}`);
    }
  }

  async speak(): Promise<void> {
    const room = this.room;
    if (!room) return;
    const data = new FormData(this.speakForm);
    this.sent += 1;
    const body = {
      id: `${room.localParticipant.identity}-${this.sent}`,
      text: String(data.get("text") ?? ""),
      language: String(data.get("language") ?? "").trim() || undefined,
      mode: String(data.get("mode") ?? "queue"),
      // the agent answers the sender; a packet that reaches it before it has seen this
      // participant join names no sender, and then this says where the events go
      reply_to: room.localParticipant.identity,
    };
    const payload = new TextEncoder().encode(JSON.stringify(body));
    this.unanswered.set(body.id, { payload, attempts: 1 });
    while (this.unanswered.size > MAX_LOG_ITEMS) {
      this.unanswered.delete(this.unanswered.keys().next().value as string);
    }
    appendLimited(this.events, element("li", `sent (${body.id}): ${body.text}`));
    await this.publish(body.id, payload);
  }
}
