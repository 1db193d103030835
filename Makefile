# One command to set up and run, one to set up and test. Everything a fresh machine needs
# (virtual environment, pinned packages, model packages) is installed here.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PORT ?= 8003
SAMPLE_TEXT := Hello! This is HIVE TTS speaking. Streaming speech starts before the sentence is done.

.PHONY: install run test lint typecheck bench clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/hive-tts say "$(SAMPLE_TEXT)" -o out/sample.wav
	$(BIN)/hive-tts serve --host 127.0.0.1 --port $(PORT)

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

test: install lint typecheck
	$(BIN)/pytest -q

bench: install
	$(BIN)/python -m tools.bench
	$(BIN)/python -m tools.ws_bench

clean:
	rm -rf $(VENV) .cache out .mypy_cache .ruff_cache .pytest_cache
