# Siyu bot: slim image, non-root, migrations then the server.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
RUN pip install . && python -c "import jieba; jieba.initialize()"

COPY persona ./persona
COPY scripts ./scripts

RUN useradd --system --uid 10001 --home /app siyu && mkdir -p /app/var && chown -R siyu /app/var /app/persona
USER siyu

# Production: refuses to start without WECHAT_OA_TOKEN (and AES or WECHAT_OA_ALLOW_PLAIN=1).
# /metrics and /readyz listen on BOT_OPS_PORT (9090), which is deliberately not exposed.
# One serving process per core of the container (SO_REUSEPORT); REDIS_URL is required for more than one.
ENV BOT_ENV=production BOT_PORT=8080 BOT_OPS_PORT=9090 BOT_WORKERS=auto PERSONA=/app/persona/demo PERSONA_HISTORY_DIR=/app/var/persona-history
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"BOT_PORT\"]}/healthz')"
CMD ["sh", "-c", "python -m bot db upgrade && exec python -m bot serve"]
