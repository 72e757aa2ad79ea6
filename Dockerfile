# powabot: the production image. `powabot run` reads its settings from the environment.
#
# Two stages: the wheel is built from the product's sources only (bot/, provisioning/ and the
# seed-content/ it packages), then installed into a clean slim image. The stand-ins, the demo,
# the bench and the tests (sandbox/, bench/, tests/) are tools of the source checkout and never
# enter the image.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY provisioning ./provisioning
# provisioning/seed-content links here: the wheel packages the built-in spec's content.
COPY seed-content ./seed-content
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
# The bot runs as an unprivileged user. /app (code and docs) stays root-owned and read-only to
# it; the one place it writes is /data, where the default SQLite session store lives.
RUN pip install /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /data --no-create-home powabot \
    && mkdir -p /data && chown powabot:powabot /data && chmod 0750 /data
WORKDIR /app
# The migrations, for a job that applies them with psql (deploy/k8s/migrate copies them out).
COPY sql ./sql
USER powabot
ENV LOG_FORMAT=json PORT=3000 POWABOT_STORE=sqlite:////data/powabot.db
# Mount a volume here (or set POWABOT_STORE to Postgres/Supabase) to keep conversations across
# container restarts; without one they live as long as the container.
VOLUME ["/data"]
EXPOSE 3000
# Liveness: the process and its event loop answer /healthz on PORT (the image has no curl;
# proxies are bypassed so HTTP_PROXY cannot intercept 127.0.0.1).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request as r; r.build_opener(r.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=3)"
CMD ["powabot", "run"]
