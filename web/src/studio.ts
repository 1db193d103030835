// The HIVE TTS studio page (GET /): voices, a place to try them, the demo room, health.

import { apiKey, setApiKey, whenKeyNeeded } from "./api";
import { byId } from "./dom";
import { HealthSection } from "./health";
import { RoomSection } from "./room";
import { TrySection } from "./try";
import { VoicesSection } from "./voices";

function main(): void {
  byId("not-built").hidden = true;
  const voices = new VoicesSection();
  const trying = new TrySection();
  new RoomSection();
  const health = new HealthSection();
  voices.onListing((listing) => trying.useListing(listing));

  const keySection = byId("key");
  const keyInput = byId<HTMLInputElement>("key-input");
  whenKeyNeeded((reason) => {
    if (!keySection.hidden) return;
    byId("key-reason").textContent = apiKey()
      ? `The server refused the key in use (${reason}). Enter another.`
      : "This server needs an API key. It is kept in this tab only (session storage) and " +
        "sent with each request.";
    keySection.hidden = false;
    keyInput.focus();
  });
  byId<HTMLFormElement>("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey(keyInput.value.trim());
    keyInput.value = "";
    keySection.hidden = true;
    voices.start();
    health.start();
  });
  byId("key-forget").addEventListener("click", () => {
    setApiKey(null);
    keyInput.value = "";
    keyInput.focus();
  });

  voices.start();
  health.start();
  document.body.dataset.ready = "true";
}

main();
