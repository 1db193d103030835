// Voices: the library (GET /voices), each voice's engines and whether each can speak it now.

import { apiJson, describeError } from "./api";
import { byId, element } from "./dom";

export interface EngineRow {
  engine: string;
  available: boolean;
  reason: string | null;
  label: string | null;
}

export interface Voice {
  id: string;
  name: string;
  language: string;
  locale: string;
  accent: string | null;
  gender: string | null;
  tier: string;
  clone_capable: boolean;
  available: boolean;
  engines: EngineRow[];
}

export interface EngineStatus {
  engine: string;
  state: string;
  available: boolean;
}

export interface VoiceListing {
  voices: Voice[];
  engines: EngineStatus[];
  languages: string[];
}

const REFRESH_MS = 15_000;
/** Availability changes as engines load, fail and recover: the table is redrawn this often. */

type ListingListener = (listing: VoiceListing) => void;

export class VoicesSection {
  private readonly section = byId("voices");
  private readonly status = byId("voices-status");
  private readonly body = byId<HTMLTableElement>("voices-table").tBodies[0]!;
  private readonly listeners: ListingListener[] = [];
  private timer: number | undefined;

  onListing(listener: ListingListener): void {
    this.listeners.push(listener);
  }

  start(): void {
    window.clearInterval(this.timer);
    void this.load();
    this.timer = window.setInterval(() => {
      if (!document.hidden) void this.load();
    }, REFRESH_MS);
  }

  async load(): Promise<void> {
    try {
      const listing = await apiJson<VoiceListing>("/voices");
      this.render(listing);
      for (const listener of this.listeners) listener(listing);
    } catch (error) {
      this.status.textContent = `The voices could not be loaded: ${describeError(error)}`;
    } finally {
      this.section.setAttribute("aria-busy", "false");
    }
  }

  private render(listing: VoiceListing): void {
    const rows = listing.voices.map((voice) => {
      const row = element("tr");
      row.dataset.voiceId = voice.id;
      const who = element("td");
      who.append(element("strong", voice.name), element("br"), element("code", voice.id));
      const language = element("td", voice.locale);
      const details = [voice.accent, voice.gender].filter(Boolean).join(", ");
      if (details) language.append(element("br"), element("span", details, "label"));
      const engines = element("ul", undefined, "engines");
      for (const engine of voice.engines) engines.append(engineItem(engine));
      const enginesCell = element("td");
      enginesCell.append(engines);
      const tier = voice.clone_capable ? `${voice.tier}, can clone` : voice.tier;
      row.append(who, language, element("td", tier), enginesCell);
      return row;
    });
    this.body.replaceChildren(...rows);
    const speaking = listing.voices.filter((voice) => voice.available).length;
    const summary =
      `${listing.voices.length} voices, ${speaking} of them can speak now; ` +
      `languages: ${listing.languages.join(", ")}.`;
    // a status region is read out on every change: only when there is news
    if (this.status.textContent !== summary) this.status.textContent = summary;
    this.section.dataset.voices = String(listing.voices.length);
  }
}

function engineItem(engine: EngineRow): HTMLLIElement {
  const item = element("li");
  item.dataset.engine = engine.engine;
  item.append(element("strong", engine.engine), document.createTextNode(" — "));
  if (engine.available) item.append(element("span", "available", "state-yes"));
  else item.append(element("span", `not available: ${engine.reason ?? "no"}`, "state-no"));
  if (engine.label) item.append(element("br"), element("span", engine.label, "label"));
  return item;
}
