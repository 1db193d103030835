// Health: GET /health (engines, breakers, queue, sessions) and a few totals from GET /metrics,
// refreshed every few seconds while the page is visible.

import { apiJson, apiText, ApiError, describeError } from "./api";
import { byId, element, formatMs } from "./dom";

const REFRESH_MS = 5_000;
const BYTES_PER_MIB = 1024 * 1024;

interface EngineHealth {
  engine: string;
  state: string;
  detail: string;
  available: boolean;
  queue_depth?: number;
  expected_wait_s?: number;
  streaming?: boolean | null;
  health: {
    state: string;
    consecutive_failures: number;
    cooldown_remaining_s: number;
    last_error: string | null;
    ttfa_ms: number | null;
  } | null;
}

interface Health {
  status: "pass" | "warn" | "fail";
  problems: string[];
  engines: EngineHealth[];
  active_sessions: number;
  active_utterances: number;
  queue_depth: number;
  uptime_s: number;
  memory_usage: { rss_bytes: number; percent: number };
  livekit: {
    configured: boolean;
    workers: { url: string; registered?: boolean }[];
    agents_redispatched: number;
  };
}

/** The sum of every sample of ``name`` in a Prometheus text exposition. */
export function metricTotal(exposition: string, name: string): number {
  let total = 0;
  for (const line of exposition.split("\n")) {
    if (line.startsWith("#")) continue;
    const [series, value] = line.split(" ");
    if (!series || value === undefined) continue;
    const metric = series.split("{")[0];
    if (metric === name) total += Number(value);
  }
  return total;
}

export class HealthSection {
  private readonly section = byId("health");
  private readonly status = byId("health-status");
  private readonly body = byId<HTMLTableElement>("health-engines").tBodies[0]!;
  private timer: number | undefined;

  start(): void {
    window.clearInterval(this.timer);
    void this.refresh();
    this.timer = window.setInterval(() => {
      if (!document.hidden) void this.refresh();
    }, REFRESH_MS);
  }

  async refresh(): Promise<void> {
    try {
      const health = await apiJson<Health>("/health", { okStatuses: [503] });
      this.render(health);
      await this.renderMetrics();
      byId("health-updated").textContent =
        `Updated ${new Date().toLocaleTimeString()}; refreshed every ${REFRESH_MS / 1000} s.`;
    } catch (error) {
      this.status.textContent = `Health could not be read: ${describeError(error)}`;
    }
  }

  private render(health: Health): void {
    this.section.dataset.status = health.status;
    if (this.status.textContent !== `Service status: ${health.status}`) {
      // a status region is read out on every change: only when there is news
      this.status.replaceChildren(
        document.createTextNode("Service status: "),
        element("strong", health.status, `status-${health.status}`),
      );
    }
    byId("health-problems").replaceChildren(
      ...health.problems.map((problem) => element("li", problem)),
    );
    const registered = health.livekit.workers.filter((w) => w.registered).length;
    this.summary([
      ["Sessions", String(health.active_sessions)],
      ["Utterances", String(health.active_utterances)],
      ["Queue depth", String(health.queue_depth)],
      ["Uptime", `${Math.round(health.uptime_s)} s`],
      ["Memory", `${(health.memory_usage.rss_bytes / BYTES_PER_MIB).toFixed(0)} MiB ` +
        `(${health.memory_usage.percent} %)`],
      ["LiveKit", health.livekit.configured
        ? `${registered} of ${health.livekit.workers.length} workers registered`
        : "not configured"],
    ]);
    this.body.replaceChildren(...health.engines.map((engine) => engineRow(engine)));
  }

  private summary(items: [string, string][], append = false): void {
    const list = byId("health-summary");
    const entries = items.map(([term, value]) => {
      const group = element("div");
      group.append(element("dt", term), element("dd", value));
      return group;
    });
    if (append) list.append(...entries);
    else list.replaceChildren(...entries);
  }

  private async renderMetrics(): Promise<void> {
    let exposition: string;
    try {
      exposition = await apiText("/metrics");
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return; // the key prompt says why
      throw error;
    }
    const requests = metricTotal(exposition, "tts_synthesis_requests_total");
    const ttftSum = metricTotal(exposition, "tts_ttft_duration_seconds_sum");
    const ttftCount = metricTotal(exposition, "tts_ttft_duration_seconds_count");
    this.summary(
      [
        ["Requests", String(requests)],
        ["Mean time to first audio", ttftCount ? formatMs((ttftSum / ttftCount) * 1000) : "–"],
        ["Fallbacks", String(metricTotal(exposition, "tts_fallbacks_total"))],
        ["Errors", String(metricTotal(exposition, "tts_request_errors_total"))],
        ["Audio out", `${metricTotal(exposition, "tts_audio_output_seconds_total").toFixed(1)} s`],
      ],
      true,
    );
  }
}

function engineRow(engine: EngineHealth): HTMLTableRowElement {
  const row = element("tr");
  row.dataset.engine = engine.engine;
  const state = engine.available ? `${engine.state}, speaking` : engine.state;
  const health = engine.health;
  let breaker = "–";
  if (health) {
    breaker = health.state;
    const cooling = health.cooldown_remaining_s;
    if (cooling > 0) breaker += ` (${cooling.toFixed(0)} s)`;
    if (health.consecutive_failures) breaker += `, ${health.consecutive_failures} failures`;
  }
  row.append(
    element("th", engine.engine),
    element("td", state, engine.available ? "state-yes" : "state-no"),
    element("td", breaker),
    element("td", engine.queue_depth === undefined ? "–" : String(engine.queue_depth)),
    element("td", engine.expected_wait_s === undefined ? "–" : `${engine.expected_wait_s} s`),
    element("td", formatMs(health?.ttfa_ms)),
    element("td", [engine.detail, health?.last_error].filter(Boolean).join("; ")),
  );
  row.firstElementChild?.setAttribute("scope", "row");
  return row;
}
