# Gatehouse: one image for every role. The command is `gatehouse <role>`:
#   serve (the default: everything in one process, on embedded defaults), api, worker, relay,
#   courier, migrate, and the operator commands (keys, users, jobs, db check).
#   docker build -t gatehouse .
#   docker run --rm -p 8000:8000 gatehouse          # http://localhost:8000, mail in the logs
# compose.yaml runs each role as its own service on PostgreSQL, Redis, Kafka and a mail catcher.

# --- deps: the virtual environment with the dependencies, from uv.lock only -----------------
FROM python:3.11-slim AS deps
# uv from PyPI (not copied from another image), pinned so that builds repeat.
ARG UV_VERSION=0.13.9
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN python3 -m pip install "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml uv.lock ./
# Bytecode ahead of time (the runtime user cannot write it, and every process would compile its
# imports at each start), valid whatever the files' times. Not for Twilio's REST API modules (a
# third of all bytecode): only a courier with Twilio configured imports them, and few of them.
RUN uv sync --frozen --no-dev --no-install-project \
    && python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash -x '/twilio/rest/' /app/.venv/lib

# --- build: the project itself, installed as a package (not an editable link to /src) ---------
FROM deps AS build
COPY README.md ./
COPY src ./src
# Its files alone are set aside, so that the image's layer for a new release is the project's few
# megabytes, over the dependencies' layer, which changes only with uv.lock.
RUN uv sync --frozen --no-dev --no-editable \
    && cd /app/.venv \
    && python3 -m compileall -q --invalidation-mode unchecked-hash lib/python3.*/site-packages/gatehouse \
    && mkdir /project \
    && cp -a --parents bin/gatehouse lib/python3.*/site-packages/gatehouse \
       lib/python3.*/site-packages/gatehouse-*.dist-info /project/

# --- runtime: the environment and a user, nothing else --------------------------------------
FROM python:3.11-slim
RUN groupadd --gid 10001 gatehouse \
    && useradd --no-log-init --uid 10001 --gid gatehouse --home-dir /var/lib/gatehouse \
       --no-create-home --shell /usr/sbin/nologin gatehouse \
    && mkdir -p /var/lib/gatehouse/keys \
    && chown -R gatehouse:gatehouse /var/lib/gatehouse \
    && chmod 700 /var/lib/gatehouse/keys
COPY --from=deps /app/.venv /app/.venv
COPY --from=build /project/ /app/.venv/
# Listen on every interface of the container; GATEHOUSE_* settings come from the environment
# (or an env file) at run time, secrets from GATEHOUSE_SECRETS_FILE or GATEHOUSE_SECRETS_JSON:
# none is in the image. `gatehouse serve` keeps its SQLite file and development keys in the
# working directory, /var/lib/gatehouse (mount a volume there to keep them).
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEHOUSE_HOST=0.0.0.0 \
    GATEHOUSE_PORT=8000
WORKDIR /var/lib/gatehouse
USER 10001:10001
EXPOSE 8000
# No curl in the image: the venv's Python asks the api (serve, api) for /health/live.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('GATEHOUSE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["gatehouse"]
CMD ["serve"]
