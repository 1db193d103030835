"""The studio page (``GET /``) in a real browser: Debian's chromium driven by Playwright against
the real control API on a loopback port, the real dev LiveKit server and an agent worker.

What the page did is read from what it exposes on its sections (``data-*``: samples decoded,
time to first audio, audio frames counted by an AudioWorklet on the room's track). Screenshots
go to ``out/screenshots/``; ``HIVE_TTS_DOCS_SCREENSHOT=1`` also rewrites ``docs/studio.png``
(the README's picture). Room tokens (``POST /rooms/{room}/token``) and the page's files are
checked over plain HTTP too.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from livekit import api as lkapi
from playwright.async_api import Browser, ConsoleMessage, Page, ViewportSize, async_playwright
from yarl import URL

from agent.livekit_server import DEV_API_KEY, DEV_API_SECRET, DevServer
from engines.audio import LIVEKIT_SAMPLE_RATE
from engines.config import ServiceConfig
from engines.synthesizer import SpeechSynthesizer
from tests.api_fixtures import (
    ApiClient,
    api_client,
    error_of,
    receive_json,
    rooms_api,
    with_api,
)
from tests.livekit_fixtures import WorkerProcess, room_name, settings_for

pytestmark = pytest.mark.asyncio(loop_scope="session")

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    # LiveKit's dev server offers loopback candidates only
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
SCREENSHOTS = REPO_ROOT / "out" / "screenshots"
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "studio.png"
DOCS_SCREENSHOT_ENV = "HIVE_TTS_DOCS_SCREENSHOT"
DOCS_SCREENSHOT_MAX_BYTES = 150_000
VIEWPORT: ViewportSize = {"width": 1100, "height": 900}
ZOOMED_VIEWPORT: ViewportSize = {"width": 320, "height": 256}
"""A 1280 × 1024 window at 400 % zoom, in CSS pixels (WCAG 1.4.10 reflow)."""
PAGE_TIMEOUT_MS = 30_000
ROOM_TIMEOUT_MS = 90_000
"""Joining dispatches the agent (a worker's first room); then speech must reach the page."""
MAX_TABS_TO_SPEAK = 25
AUDIBLE_FRAMES = 40
"""Render quanta (128 samples) with sound that count as audio flowing: ~0.1 s at 48 kHz."""
SAMPLES_TOLERANCE_S = 0.01
API_KEY = "studio-test-key"
ADMIN_KEY = "studio-admin-key"
ROOM_KEY = "studio-room-key"
ROOM_KEY_PATTERN = "lobby-*"
TOKEN_TTL_S = 600
VOICE = "en-us-male-premium"
SPOKEN = (
    "Hello from the studio page. The first words play while the rest is made. "
    "A third sentence keeps the stream going."
)
ROOM_TEXT = "Hello room, this is the studio page. These captions follow the speech as it plays."


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        if not CHROMIUM.exists():
            pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's package")
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture(scope="module")
async def studio(
    livekit_server: DevServer,
    agent_worker: WorkerProcess,
    service_config: ServiceConfig,
    synthesizer: SpeechSynthesizer,
) -> AsyncIterator[ApiClient]:
    """The control API with LiveKit, on a loopback port, with a registered agent worker."""
    async with rooms_api(service_config, synthesizer, settings_for(livekit_server)) as client:
        yield client


class Console:
    """The page's console errors and uncaught exceptions, for failure messages."""

    def __init__(self, page: Page) -> None:
        self.lines: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.lines.append(f"pageerror: {error}"))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.lines.append(f"{message.type}: {message.text}")

    def __str__(self) -> str:
        return "\n".join(self.lines[-30:]) or "(no console errors)"


async def open_page(browser: Browser, url: str) -> tuple[Page, Console]:
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = await context.new_page()
    console = Console(page)
    await page.goto(url)
    await page.wait_for_selector("body[data-ready='true']")
    return page, console


async def screenshot(page: Page, name: str, *, full_page: bool = False) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=path, full_page=full_page)
    return path


def base_url(client: ApiClient) -> str:
    return str(client.make_url("/"))


async def dataset(page: Page, selector: str) -> dict[str, str]:
    value = await page.eval_on_selector(selector, "element => ({...element.dataset})")
    assert isinstance(value, dict)
    return {str(k): str(v) for k, v in value.items()}


async def wait_for_data(page: Page, script: str, console: Console, timeout_ms: int) -> None:
    try:
        # as a function: a string would be eval'd in the page, which its CSP forbids
        await page.wait_for_function(f"() => ({script})", timeout=timeout_ms)
    except Exception as exc:
        shown = await page.evaluate(
            "() => ['#try-error', '#room-status', '#room-error', '#events', '#captions']"
            ".map(s => s + ': ' + document.querySelector(s).innerText).join('\\n')"
        )
        raise AssertionError(
            f"{script} never held: {exc}\nthe page:\n{shown}\nconsole:\n{console}"
        ) from exc


async def test_the_page_lists_every_voice_with_its_engines(
    browser: Browser, studio: ApiClient
) -> None:
    listing = await (await studio.get("/voices")).json()
    page, console = await open_page(browser, base_url(studio))
    await wait_for_data(page, "document.querySelector('#voices').dataset.voices", console, 30_000)
    assert int((await dataset(page, "#voices"))["voices"]) == len(listing["voices"])
    assert await page.is_hidden("#not-built")
    row = page.locator(f"#voices-table tr[data-voice-id='{VOICE}']")
    assert "available" in await row.locator("li[data-engine='piper']").inner_text()
    labelled = [
        (voice["id"], engine["engine"], engine["label"])
        for voice in listing["voices"]
        for engine in voice["engines"]
        if engine["label"]
    ]
    assert labelled, "the library has accented voices with labels"
    voice_id, engine, label = labelled[0]
    cell = page.locator(f"#voices-table tr[data-voice-id='{voice_id}'] li[data-engine='{engine}']")
    assert label in await cell.inner_text()
    # health refreshes on its own: engines, breakers, sessions
    await wait_for_data(page, "document.querySelector('#health').dataset.status", console, 30_000)
    assert await page.locator("#health-engines tr[data-engine='piper']").count() == 1
    await screenshot(page, "voices", full_page=True)
    await page.context.close()


async def test_speak_streams_audio_into_web_audio_and_shows_the_engine(
    browser: Browser, studio: ApiClient
) -> None:
    page, console = await open_page(browser, base_url(studio))
    await page.wait_for_selector(f"#try-voice option[value='{VOICE}']", state="attached")
    await page.fill("#try-text", SPOKEN)
    await page.select_option("#try-voice", VOICE)
    # by keyboard: from the text, Tab to the Speak button and press Enter
    await page.focus("#try-text")
    for _ in range(MAX_TABS_TO_SPEAK):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "try-speak":
            break
    else:
        raise AssertionError("Tab never reached the Speak button")
    await page.keyboard.press("Enter")
    await wait_for_data(
        page,
        "['done', 'error'].includes(document.querySelector('#try').dataset.state)",
        console,
        PAGE_TIMEOUT_MS,
    )
    data = await dataset(page, "#try")
    assert data["state"] == "done", f"{await page.inner_text('#try-error')}\n{console}"
    assert data["audioState"] == "running"
    assert data["engine"] == "piper"
    assert await page.inner_text("#try-engine-used") == "piper"
    assert "ms" in await page.inner_text("#try-ttfa")
    assert await page.inner_text("#try-fallbacks") == "none"
    samples = int(data["samples"])
    duration_s = samples / LIVEKIT_SAMPLE_RATE
    assert duration_s > 3.0, data
    assert int(data["chunks"]) > 1, data
    # played as it streamed: the first chunk arrived, and was playing, before synthesis ended
    assert 0 < float(data["ttfaMs"]) < float(data["finalMs"]), data
    assert data["playedBeforeFinal"] == "true", data
    status = await page.inner_text("#try-status")
    spoken_s = float(status.split(": ")[1].split(" s")[0])
    assert abs(spoken_s - duration_s) < SAMPLES_TOLERANCE_S, (status, samples)
    await screenshot(page, "try")
    await page.context.close()


async def test_an_unknown_voice_shows_the_servers_message(
    browser: Browser, studio: ApiClient
) -> None:
    request = {"text": "Hello.", "voice_id": "no-such-voice", "language": "en", "stream": True}
    async with studio.ws_connect("/ws/synthesize") as ws:
        await ws.send_json(request)
        expected = await receive_json(ws)
    assert expected["type"] == "error", expected
    page, console = await open_page(browser, base_url(studio))
    await page.wait_for_selector(f"#try-voice option[value='{VOICE}']", state="attached")
    await page.evaluate(
        """() => {
            const voices = document.querySelector('#try-voice');
            voices.add(new Option('a voice the server does not know', 'no-such-voice'));
            voices.value = 'no-such-voice';
        }"""
    )
    await page.fill("#try-text", "Hello.")
    await page.click("#try-speak")
    await page.wait_for_selector("#try-error:not([hidden])")
    shown = await page.inner_text("#try-error")
    assert shown == f"{expected['code']}: {expected['message']}", (shown, str(console))
    assert (await dataset(page, "#try"))["errorCode"] == expected["code"]
    await screenshot(page, "unknown-voice")
    await page.context.close()


async def test_the_demo_room_plays_the_agents_track_with_captions_and_events(
    browser: Browser, studio: ApiClient
) -> None:
    room = room_name("studio")
    page, console = await open_page(browser, f"{base_url(studio)}?room={room}")
    assert await page.input_value("#room-name") == room
    await page.click("#room-join")
    await wait_for_data(
        page,
        "['connected', 'idle'].includes(document.querySelector('#room').dataset.state)",
        console,
        ROOM_TIMEOUT_MS,
    )
    assert (await dataset(page, "#room"))["state"] == "connected", (
        f"{await page.inner_text('#room-error')}\n{console}"
    )
    await page.fill("#speak-text", ROOM_TEXT)
    await page.click("#speak-send")
    await wait_for_data(
        page,
        "Number(document.querySelector('#room').dataset.subscribedTracks) >= 1",
        console,
        ROOM_TIMEOUT_MS,
    )
    await wait_for_data(
        page,
        f"Number(document.querySelector('#room').dataset.audibleFrames) > {AUDIBLE_FRAMES}",
        console,
        ROOM_TIMEOUT_MS,
    )
    await wait_for_data(
        page,
        "document.querySelector('#events li[data-type=finished]')",
        console,
        ROOM_TIMEOUT_MS,
    )
    await wait_for_data(
        page, "document.querySelector('#captions li.final')", console, ROOM_TIMEOUT_MS
    )
    caption = await page.inner_text("#captions li.final")
    assert caption.split()[:3] == ROOM_TEXT.split()[:3], caption
    events = await page.locator("#events li[data-type]").evaluate_all(
        "items => items.map(item => item.dataset.type)"
    )
    assert events.index("started") < events.index("finished"), events
    # the language's track is a choice, named after its language
    assert await page.locator("#room-track option[value='tts-en']").count() == 1
    data = await dataset(page, "#room")
    assert int(data["frames"]) >= int(data["audibleFrames"]) > AUDIBLE_FRAMES
    await page.evaluate("document.querySelector('#room').scrollIntoView()")
    shot = await screenshot(page, "room")
    if os.environ.get(DOCS_SCREENSHOT_ENV):
        shutil.copyfile(shot, DOCS_SCREENSHOT)
    await page.click("#room-leave")
    await wait_for_data(
        page, "document.querySelector('#room').dataset.state === 'idle'", console, PAGE_TIMEOUT_MS
    )
    await page.context.close()


async def test_the_page_reflows_at_400_percent_and_labels_every_control(
    browser: Browser, studio: ApiClient
) -> None:
    page, console = await open_page(browser, base_url(studio))
    await page.set_viewport_size(ZOOMED_VIEWPORT)
    await wait_for_data(page, "document.querySelector('#voices').dataset.voices", console, 30_000)
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px at 320 CSS px"
    unlabelled = await page.evaluate(
        """() => Array.from(document.querySelectorAll('input, select, textarea, button'))
            .filter(control => !(control.labels && control.labels.length)
                && !control.getAttribute('aria-label')
                && !(control.tagName === 'BUTTON' && control.textContent.trim()))
            .map(control => control.id || control.outerHTML)"""
    )
    assert unlabelled == []
    await screenshot(page, "zoomed-400")
    await page.context.close()


# --- with API keys --------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def keyed_studio(
    livekit_server: DevServer, service_config: ServiceConfig, synthesizer: SpeechSynthesizer
) -> AsyncIterator[ApiClient]:
    config = with_api(
        service_config,
        api_keys=(API_KEY,),
        admin_keys=(ADMIN_KEY,),
        room_keys={ROOM_KEY: (ROOM_KEY_PATTERN,)},
    )
    async with rooms_api(config, synthesizer, settings_for(livekit_server)) as client:
        yield client


async def test_with_keys_the_page_asks_for_one_and_uses_it(
    browser: Browser, keyed_studio: ApiClient
) -> None:
    page, console = await open_page(browser, base_url(keyed_studio))
    await page.wait_for_selector("#key:not([hidden])")
    assert await page.evaluate("document.activeElement.id") == "key-input"
    await page.keyboard.type(API_KEY)
    await page.keyboard.press("Enter")
    await wait_for_data(page, "document.querySelector('#voices').dataset.voices", console, 30_000)
    assert await page.evaluate("sessionStorage.getItem('hive-tts.api-key')") == API_KEY
    await page.fill("#try-text", "Keys work.")
    await page.click("#try-speak")  # the WebSocket carries the key as ?token=
    await wait_for_data(
        page,
        "['done', 'error'].includes(document.querySelector('#try').dataset.state)",
        console,
        PAGE_TIMEOUT_MS,
    )
    assert (await dataset(page, "#try"))["state"] == "done", await page.inner_text("#try-error")
    assert int((await dataset(page, "#try"))["samples"]) > 0
    await page.context.close()


def grants_of(reply: dict[str, object]) -> tuple[lkapi.access_token.Claims, int]:
    """The token's claims (signature checked with the dev key pair) and its lifetime (s)."""
    token = str(reply["token"])
    claims = lkapi.TokenVerifier(DEV_API_KEY, DEV_API_SECRET).verify(token)
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    return claims, int(payload["exp"]) - int(payload["nbf"])


async def test_a_room_token_is_a_short_listener_grant_unless_an_admin_asks(
    keyed_studio: ApiClient, livekit_server: DevServer
) -> None:
    room = room_name("token")
    as_user = {"Authorization": f"Bearer {API_KEY}"}
    as_admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    reply = await keyed_studio.post(f"/rooms/{room}/token", json={"agent": False}, headers=as_user)
    assert reply.status == 200, await reply.text()
    body = await reply.json()
    assert body["url"] == settings_for(livekit_server).url and body["room"] == room
    assert str(body["identity"]).startswith("web-") and body["role"] == "listener"
    claims, lifetime_s = grants_of(body)
    assert claims.identity == body["identity"]
    assert claims.video is not None and claims.video.room == room and claims.video.room_join
    assert claims.video.can_subscribe and claims.video.can_publish_data
    assert not claims.video.can_publish
    assert lifetime_s == TOKEN_TTL_S == body["expires_in_s"]

    speaker = {"role": "speaker", "agent": False}
    refused = await keyed_studio.post(f"/rooms/{room}/token", json=speaker, headers=as_user)
    assert (await error_of(refused, 403))["code"] == "forbidden"
    chosen = {"identity": "alice", "agent": False}
    refused = await keyed_studio.post(f"/rooms/{room}/token", json=chosen, headers=as_user)
    await error_of(refused, 403)
    granted = await keyed_studio.post(
        f"/rooms/{room}/token", json={**speaker, "identity": "alice"}, headers=as_admin
    )
    assert granted.status == 200, await granted.text()
    claims, _ = grants_of(await granted.json())
    assert claims.identity == "alice" and claims.video is not None and claims.video.can_publish

    as_room_key = {"Authorization": f"Bearer {ROOM_KEY}"}
    elsewhere = await keyed_studio.post(
        f"/rooms/{room}/token", json={"agent": False}, headers=as_room_key
    )
    await error_of(elsewhere, 403)
    lobby = await keyed_studio.post(
        "/rooms/lobby-1/token", json={"agent": False}, headers=as_room_key
    )
    assert lobby.status == 200, await lobby.text()

    bad = await keyed_studio.post(f"/rooms/{room}/token", json={"rol": "x"}, headers=as_user)
    assert (await error_of(bad, 400))["code"] == "invalid_option"
    anonymous = await keyed_studio.post(f"/rooms/{room}/token", json={"agent": False})
    await error_of(anonymous, 401)


async def test_the_page_and_its_files_are_open_and_nothing_else_is(
    keyed_studio: ApiClient,
) -> None:
    page = await keyed_studio.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assert "/static/build/studio.js" in html
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    script = await keyed_studio.get("/static/build/studio.js")
    assert script.status == 200, "the bundle is missing: `make web` builds it"
    assert script.content_type == "text/javascript"
    assert script.headers["X-Content-Type-Options"] == "nosniff"
    for escape in ("/static/%2E%2E/%2E%2E/config.yaml", "/static/..%2F..%2Fconfig.yaml"):
        reply = await keyed_studio.get(URL(escape, encoded=True))
        assert (await error_of(reply, 404))["code"] == "not_found", escape
    await error_of(await keyed_studio.get("/voices"), 401)


async def test_without_livekit_the_token_route_says_what_to_set(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer
) -> None:
    async with api_client(service_config, synthesizer) as client:
        reply = await client.post("/rooms/hive-demo/token")
        assert (await error_of(reply, 503))["code"] == "livekit_not_configured"


async def test_the_readme_picture_is_small() -> None:
    if os.environ.get(DOCS_SCREENSHOT_ENV):
        pytest.skip("rewritten by this run")
    assert DOCS_SCREENSHOT.stat().st_size < DOCS_SCREENSHOT_MAX_BYTES
    assert "docs/studio.png" in (REPO_ROOT / "README.md").read_text(encoding="utf-8")
