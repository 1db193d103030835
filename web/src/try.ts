// Try: text to speech over WS /ws/synthesize, played through Web Audio as the chunks arrive.

import { describeError, webSocketUrl } from "./api";
import { audioContext, PcmPlayer } from "./audio";
import { byId, formatMs, showError } from "./dom";
import type { VoiceListing } from "./voices";

interface AudioMessage {
  type: "audio";
  audio_chunk: string;
  sample_rate: number;
  sequence: number;
  request_id: string;
}

interface FinalMessage {
  type: "final";
  request_id: string;
  cancelled: boolean;
  engine: string | null;
  engines: string[];
  voice_id: string;
  language: string;
  ttfa_ms: number | null;
  audio_duration_s: number;
  fallbacks: { engine: string; error: string }[];
  /** Not sent yet: word timings, for the highlighting hook below. */
  words?: WordTiming[];
}

interface ErrorMessage {
  type: "error";
  code: string;
  message: string;
  request_id?: string | null;
}

type ServerMessage = AudioMessage | FinalMessage | ErrorMessage;

/** A word and when it is heard, in seconds from the start of the utterance's audio. */
export interface WordTiming {
  word: string;
  start_s: number;
  end_s: number;
}

/** The word-highlighting hook: called with an utterance's word timings when the server sends
 * them (a later version of the protocol); the default marks each word as it is heard. */
export let onWordTimings = (
  words: WordTiming[],
  audioStartS: number,
  ctx: AudioContext,
): void => {
  const target = byId("try-spoken");
  const spans = words.map((timing) => {
    const span = document.createElement("span");
    span.textContent = timing.word + " ";
    return span;
  });
  target.replaceChildren(...spans);
  const startsInMs = (seconds: number) => (audioStartS + seconds - ctx.currentTime) * 1000;
  words.forEach((timing, index) => {
    const span = spans[index]!;
    window.setTimeout(() => span.classList.add("word-now"), startsInMs(timing.start_s));
    window.setTimeout(() => span.classList.remove("word-now"), startsInMs(timing.end_s));
  });
};

export function setWordTimingsHook(hook: typeof onWordTimings): void {
  onWordTimings = hook;
}

function decodeBase64(data: string): ArrayBuffer {
  const binary = atob(data);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes.buffer;
}

export class TrySection {
  private readonly section = byId("try");
  private readonly form = byId<HTMLFormElement>("try-form");
  private readonly voice = byId<HTMLSelectElement>("try-voice");
  private readonly engine = byId<HTMLSelectElement>("try-engine");
  private readonly languages = byId<HTMLDataListElement>("try-languages");
  private readonly speed = byId<HTMLInputElement>("try-speed");
  private readonly error = byId("try-error");
  private readonly status = byId("try-status");
  private socket: WebSocket | null = null;
  private player: PcmPlayer | null = null;
  private requestId: string | null = null;
  private sentAt = 0;
  private firstAudioAt: number | null = null;
  private audioStartS: number | null = null;
  private chunks = 0;
  private counter = 0;

  constructor() {
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.speak();
    });
    byId("try-stop").addEventListener("click", () => this.stop());
    this.speed.addEventListener("input", () => {
      byId("try-speed-value").textContent = `${Number(this.speed.value).toFixed(1)}×`;
    });
  }

  /** Fills the voice, engine and language choices (once; later listings keep the choice). */
  useListing(listing: VoiceListing): void {
    if (this.voice.options.length <= 1) {
      const byLanguage = new Map<string, HTMLOptGroupElement>();
      for (const voice of listing.voices) {
        let group = byLanguage.get(voice.language);
        if (!group) {
          group = document.createElement("optgroup");
          group.label = voice.language;
          byLanguage.set(voice.language, group);
          this.voice.append(group);
        }
        group.append(new Option(`${voice.name} (${voice.locale}, ${voice.tier})`, voice.id));
      }
      for (const engine of listing.engines) {
        this.engine.append(new Option(engine.engine, engine.engine));
      }
      this.languages.replaceChildren(...listing.languages.map((code) => new Option(code, code)));
    }
    for (const option of Array.from(this.engine.options).slice(1)) {
      const status = listing.engines.find((engine) => engine.engine === option.value);
      const usable = status?.available ?? false;
      option.textContent = usable ? option.value : `${option.value} (${status?.state ?? "?"})`;
    }
  }

  private request(): Record<string, unknown> {
    const data = new FormData(this.form);
    const request: Record<string, unknown> = {
      text: String(data.get("text") ?? ""),
      stream: true,
      format: "pcm16",
      sample_rate: Number(data.get("sample_rate") ?? 48000),
      speed: Number(data.get("speed") ?? 1),
      request_id: this.requestId,
    };
    for (const key of ["voice_id", "language", "engine", "strategy"]) {
      const value = String(data.get(key) ?? "").trim();
      if (value) request[key] = value;
    }
    return request;
  }

  private async connection(): Promise<WebSocket> {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) return this.socket;
    const socket = new WebSocket(webSocketUrl("/ws/synthesize"));
    socket.onmessage = (event: MessageEvent<string>) => {
      this.onMessage(JSON.parse(event.data) as ServerMessage);
    };
    await new Promise<void>((resolve, reject) => {
      socket.onopen = () => resolve();
      socket.onerror = () => reject(new Error("the WebSocket to /ws/synthesize did not open"));
    });
    socket.onclose = (event) => {
      if (this.socket === socket) this.socket = null;
      if (event.code !== 1000 && this.requestId !== null) {
        const reason = event.reason ? `: ${event.reason}` : "";
        this.fail(`the connection closed (${event.code}${reason})`);
      }
    };
    socket.onerror = null;
    this.socket = socket;
    return socket;
  }

  async speak(): Promise<void> {
    showError(this.error, null);
    this.stopAudio();
    try {
      const ctx = await audioContext(); // on the click: browsers start audio on a gesture
      this.player = new PcmPlayer(ctx);
      this.section.dataset.audioState = ctx.state;
      const socket = await this.connection();
      if (this.requestId !== null) socket.send(JSON.stringify({ type: "cancel" })); // superseded
      this.counter += 1;
      this.requestId = `web-${Date.now().toString(36)}-${this.counter}`;
      this.firstAudioAt = null;
      this.audioStartS = null;
      this.chunks = 0;
      this.resetResult();
      this.status.textContent = "Speaking…";
      this.section.dataset.state = "speaking";
      this.sentAt = performance.now();
      socket.send(JSON.stringify(this.request()));
    } catch (error) {
      this.fail(describeError(error));
    }
  }

  stop(): void {
    if (this.socket && this.requestId !== null) {
      this.socket.send(JSON.stringify({ type: "cancel" }));
    }
    this.stopAudio();
  }

  private stopAudio(): void {
    this.player?.stop();
  }

  private resetResult(): void {
    for (const id of ["try-ttfa", "try-server-ttfa", "try-engine-used", "try-voice-used",
      "try-fallbacks", "try-received"]) {
      byId(id).textContent = "–";
    }
    byId("try-spoken").textContent = "";
    for (const key of ["samples", "ttfaMs", "engine", "chunks", "finalMs", "playedBeforeFinal",
      "errorCode"]) {
      delete this.section.dataset[key];
    }
  }

  private onMessage(message: ServerMessage): void {
    if (message.type === "error") {
      if (message.request_id && message.request_id !== this.requestId) return;
      this.fail(`${message.code}: ${message.message}`);
      this.section.dataset.errorCode = message.code;
      return;
    }
    if (message.request_id !== this.requestId) return; // a cancelled request's leftovers
    if (message.type === "audio") this.onAudio(message);
    else this.onFinal(message);
  }

  private onAudio(message: AudioMessage): void {
    if (!this.player) return;
    const startsAt = this.player.play(decodeBase64(message.audio_chunk), message.sample_rate);
    this.chunks += 1;
    if (this.firstAudioAt === null) {
      this.firstAudioAt = performance.now() - this.sentAt;
      this.audioStartS = startsAt;
      byId("try-ttfa").textContent = formatMs(this.firstAudioAt);
      this.section.dataset.ttfaMs = this.firstAudioAt.toFixed(1);
    }
    const seconds = this.player.samplesDecoded / message.sample_rate;
    byId("try-received").textContent =
      `${seconds.toFixed(2)} s (${this.chunks} chunks, ${message.sample_rate / 1000} kHz)`;
    this.section.dataset.samples = String(this.player.samplesDecoded);
    this.section.dataset.chunks = String(this.chunks);
  }

  private onFinal(message: FinalMessage): void {
    const text = String(new FormData(this.form).get("text") ?? "");
    this.requestId = null;
    this.section.dataset.finalMs = (performance.now() - this.sentAt).toFixed(1);
    if (this.player && this.audioStartS !== null) {
      // true when the first chunk was already playing as synthesis ended: streamed, not waited for
      this.section.dataset.playedBeforeFinal = String(this.player.now > this.audioStartS);
    }
    byId("try-server-ttfa").textContent = formatMs(message.ttfa_ms);
    byId("try-engine-used").textContent = message.engine ?? "none";
    byId("try-voice-used").textContent = message.voice_id;
    byId("try-fallbacks").textContent = message.fallbacks.length
      ? message.fallbacks.map((f) => `${f.engine}: ${f.error}`).join("; ")
      : "none";
    const spoken = byId("try-spoken");
    spoken.lang = message.language || "en";
    spoken.textContent = text;
    if (message.words && this.audioStartS !== null && this.player) {
      void audioContext().then((ctx) => onWordTimings(message.words!, this.audioStartS!, ctx));
    }
    this.section.dataset.engine = message.engine ?? "";
    this.section.dataset.state = message.cancelled ? "cancelled" : "done";
    this.status.textContent = message.cancelled
      ? "Stopped."
      : `Spoken by ${message.engine ?? "no engine"}: ` +
        `${message.audio_duration_s.toFixed(2)} s of audio.`;
  }

  private fail(message: string): void {
    this.requestId = null;
    this.section.dataset.state = "error";
    this.status.textContent = "Not spoken.";
    showError(this.error, message);
  }
}
