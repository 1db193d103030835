// The control API from the page: its API key (this tab only), JSON calls, the WebSocket URL.

const KEY_STORAGE = "hive-tts.api-key";

/** An error reply of the control API: ``{"error": {"code", "message"}}`` and its status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

type KeyListener = (reason: string) => void;
let onKeyNeeded: KeyListener = () => undefined;

export function whenKeyNeeded(listener: KeyListener): void {
  onKeyNeeded = listener;
}

export function apiKey(): string | null {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function setApiKey(key: string | null): void {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

function headers(extra: HeadersInit = {}): Headers {
  const result = new Headers(extra);
  const key = apiKey();
  if (key) result.set("Authorization", `Bearer ${key}`);
  return result;
}

async function errorOf(reply: Response): Promise<ApiError> {
  let code = "http_" + reply.status;
  let message = `${reply.status} ${reply.statusText}`;
  try {
    const body: unknown = await reply.json();
    const error = (body as { error?: { code?: unknown; message?: unknown } }).error;
    if (error && typeof error.code === "string") code = error.code;
    if (error && typeof error.message === "string") message = error.message;
  } catch {
    // not JSON: the status line says what we know
  }
  if (reply.status === 401) onKeyNeeded(message);
  return new ApiError(reply.status, code, message);
}

/** ``fetch`` with the API key; JSON in and out. ``okStatuses``: replies read as results. */
export async function apiJson<T>(
  path: string,
  init: { method?: string; body?: unknown; okStatuses?: number[] } = {},
): Promise<T> {
  const reply = await fetch(path, {
    method: init.method ?? "GET",
    headers: headers(init.body === undefined ? {} : { "Content-Type": "application/json" }),
    body: init.body === undefined ? null : JSON.stringify(init.body),
    cache: "no-store",
  });
  if (!reply.ok && !(init.okStatuses ?? []).includes(reply.status)) throw await errorOf(reply);
  return (await reply.json()) as T;
}

/** ``fetch`` of a text resource with the API key (Prometheus metrics). */
export async function apiText(path: string): Promise<string> {
  const reply = await fetch(path, { headers: headers(), cache: "no-store" });
  if (!reply.ok) throw await errorOf(reply);
  return reply.text();
}

/** The WebSocket URL of ``path`` on this server; browsers cannot set headers on a WebSocket,
 * so the key goes in ``?token=``. */
export function webSocketUrl(path: string): string {
  const url = new URL(path, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const key = apiKey();
  if (key) url.searchParams.set("token", key);
  return url.toString();
}

export function describeError(error: unknown): string {
  if (error instanceof ApiError) return `${error.code}: ${error.message}`;
  if (error instanceof Error) return error.message;
  return String(error);
}
