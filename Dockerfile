# HIVE TTS: one image for `hive-tts serve` (the default command) and `hive-tts agent`, on a CPU
# or, with `docker run --gpus all`, XTTS on an NVIDIA GPU (torch's wheels carry CUDA; only the
# driver comes from the host). Build and run commands: docs/deploy-images.md.
# tests/test_image.py checks this file and runs its command from a venv built the same way.

# Python 3.11 (the project's) on Debian 12, pinned by patch release and by the digest of the
# multi-platform index (update both together)
FROM python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3 AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# the runtime lock alone (every engine, torch included); requirements-test.lock stays out
COPY requirements-runtime.lock /tmp/requirements-runtime.lock
RUN pip install --no-deps -r /tmp/requirements-runtime.lock

WORKDIR /app
COPY pyproject.toml README.md control_api.py config.yaml voices.yaml ./
COPY engines engines
COPY agent agent
# api/static/ is the page at /; its script (static/build/) is bundled by `make` before this build
COPY api api
COPY hive_tts hive_tts
COPY tools/__init__.py tools/fetch_models.py tools/
# installed in place (hive_tts/paths.py finds config.yaml beside the packages), compiled, checked
RUN pip install --no-deps -e . \
    && python -m compileall -q /app \
    && pip check


FROM python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3

# no Debian packages: the wheels carry their native libraries (onnxruntime, torch and its OpenMP,
# libsndfile, espeak-ng, LiveKit's FFI), and need only libc, libstdc++ and zlib besides
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin hive

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HIVE_TTS_HEALTH_URL=http://127.0.0.1:8003/health
WORKDIR /app

# models_dir (config.yaml): fetched weights, and the Kokoro model and Piper split graphs that
# the first start writes into models/.cache; owned by the service's user
RUN mkdir -p /app/models && chown hive:hive /app/models
USER hive

# e.g. --build-arg FETCH_MODELS="piper kokoro": published weights baked into the image;
# otherwise mount them at /app/models
ARG FETCH_MODELS=""
RUN if [ -n "$FETCH_MODELS" ]; then python -m tools.fetch_models $FETCH_MODELS; fi
VOLUME ["/app/models"]

# control API; the agent's metrics with `hive-tts agent --metrics-host 0.0.0.0 --metrics-port 9100`
EXPOSE 8003 9100
# serve's /health (503 when failing); for the agent set HIVE_TTS_HEALTH_URL to its /worker
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HIVE_TTS_HEALTH_URL'], timeout=4)"]

# off loopback serve needs keys: -e HIVE_TTS_API_KEYS=... (or --insecure-no-auth)
CMD ["hive-tts", "serve", "--host", "0.0.0.0", "--port", "8003"]
