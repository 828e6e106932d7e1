# The hub, the ledger writer and the demo city, in one image (deploy/compose.yaml runs each
# as its own container). Built in two stages: the first installs the locked dependency tree
# (every file checked against its hash) into a virtual environment, with the compilers some
# wheels may need; the second carries only that environment and the source, and runs as a
# user without privileges.
#
#   docker build -t city-linkage-dispatch .
#   docker run -p 8000:8000 city-linkage-dispatch        # embedded Redis, SQLite, in /data

FROM python:3.11-slim AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /venv
COPY requirements.lock /tmp/requirements.lock
RUN /venv/bin/pip install --require-hashes --no-deps -r /tmp/requirements.lock

FROM python:3.11-slim AS hub
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/venv/bin:$PATH \
    PYTHONPATH=/app:/app/fieldapp-api \
    DISPATCH_DATA_DIR=/data

RUN groupadd --system --gid 10001 dispatch \
    && useradd --system --uid 10001 --gid dispatch --create-home --home-dir /home/dispatch \
        --shell /usr/sbin/nologin dispatch \
    && mkdir -p /data && chown dispatch:dispatch /data && chmod 700 /data

COPY --from=deps /venv /venv
WORKDIR /app
COPY server ./server
COPY fieldapp-api ./fieldapp-api
COPY simulations ./simulations
VOLUME /data

USER dispatch
WORKDIR /home/dispatch
EXPOSE 8000 9100

# Ready: Redis answers and the process is not draining (GET /readyz).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]

STOPSIGNAL SIGTERM
CMD ["python", "-m", "server", "--host", "0.0.0.0", "--port", "8000"]
