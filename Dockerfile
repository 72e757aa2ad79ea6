# powabot: the production image. `powabot run` reads its settings from the environment.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY provisioning ./provisioning
COPY sandbox ./sandbox
COPY seed-content ./seed-content
COPY sql ./sql
RUN pip install . && useradd --system --uid 10001 powabot
USER powabot
ENV LOG_FORMAT=json PORT=3000
EXPOSE 3000
CMD ["powabot", "run"]
