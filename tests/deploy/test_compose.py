"""deploy/compose.yaml (no Docker engine here, so not `docker compose config`): the services wait
for each other in the right order, the bot uses the compose Postgres and drains within its stop
timeout, and the migration scripts of compose and of the Kubernetes Job really migrate an empty
Postgres, twice in a row, so that the bot's own store check says "migrated"."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from bot.settings import REQUIRED, Settings
from bot.store.postgres import PostgresStore
from sandbox.pgcluster import PgCluster

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NewDatabase = Callable[[PgCluster, str], Awaitable[str]]
needs_psql = pytest.mark.skipif(
    shutil.which("psql") is None, reason="psql is not installed (apt package postgresql-client)"
)


def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def interpolated(value: str, **variables: str) -> str:
    """Compose's `${NAME:?message}` / `${NAME}` interpolation, for the variables given."""
    for name, replacement in variables.items():
        while f"${{{name}" in value:
            start = value.index(f"${{{name}")
            value = value[:start] + replacement + value[value.index("}", start) + 1 :]
    return value


def test_services_start_in_order_postgres_then_migrations_then_the_bot() -> None:
    """The bot starts only after the migration job succeeded, which waits for a healthy Postgres."""
    services = compose()["services"]
    postgres, migrate, bot = services["postgres"], services["migrate"], services["bot"]
    assert postgres["image"] == "postgres:16"
    assert postgres["healthcheck"]["test"]
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in compose()["volumes"]  # a named volume: data outlives the container
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["restart"] == "no"
    assert "../sql:/sql:ro" in migrate["volumes"]
    assert bot["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert (DEPLOY / bot["build"]["context"] / bot["build"]["dockerfile"]).is_file()


def test_the_bot_uses_the_compose_postgres_and_drains_before_docker_kills_it() -> None:
    """POWABOT_STORE names the postgres service's database; the stop timeout exceeds the drain."""
    services = compose()["services"]
    bot, postgres = services["bot"], services["postgres"]
    store = urlsplit(interpolated(bot["environment"]["POWABOT_STORE"], POSTGRES_PASSWORD="pw"))
    assert store.scheme == "postgresql" and store.hostname == "postgres"
    assert store.username == postgres["environment"]["POSTGRES_USER"]
    assert store.path == "/" + postgres["environment"]["POSTGRES_DB"]
    assert store.password == "pw"
    grace = bot["stop_grace_period"]
    assert grace.endswith("s")
    assert float(grace[:-1]) > Settings.model_fields["POWABOT_SHUTDOWN_GRACE"].default
    assert bot["env_file"] == ".env" and bot["read_only"] is True


def test_env_example_names_every_setting_the_bot_needs() -> None:
    """deploy/.env.example lists each variable `powabot run` requires, plus the DB password."""
    names = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines()
        if "=" in line
    }
    assert set(REQUIRED["run"]) | {"POSTGRES_PASSWORD", "SLACK_APP_TOKEN"} <= names
    assert "SLACK_SIGNING_SECRET" in names


async def _migrated(dsn: str) -> bool:
    store = PostgresStore(dsn)
    await store.open()
    try:
        health = await store.health()
    finally:
        await store.close()
    assert health.reachable, health.detail
    return health.migrated


def _run(script: str, env: dict[str, str]) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    result = subprocess.run(
        ["sh", "-ec", script], env={**clean, **env}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "applying" in result.stdout


@needs_psql
async def test_compose_migration_job_migrates_an_empty_postgres_and_can_rerun(
    pg_cluster: PgCluster, new_database: NewDatabase
) -> None:
    """The compose `migrate` command leaves a bare Postgres migrated, and running it again works."""
    dsn = await new_database(pg_cluster, "powabot_empty")
    assert not await _migrated(dsn)
    (script,) = compose()["services"]["migrate"]["command"]
    script = script.replace("$$", "$").replace("/sql/", f"{REPO}/sql/")
    target = urlsplit(dsn)
    env = {
        "PGHOST": str(target.hostname),
        "PGPORT": str(target.port),
        "PGUSER": str(target.username),
        "PGDATABASE": target.path.lstrip("/"),
    }
    for _ in range(2):  # every `docker compose up` runs it again
        _run(script, env)
        assert await _migrated(dsn)


@needs_psql
async def test_kubernetes_migration_job_migrates_an_empty_postgres_and_can_rerun(
    pg_cluster: PgCluster, new_database: NewDatabase, tmp_path: Path
) -> None:
    """The k8s Job's script (shim only where auth.users is missing) migrates, and re-runs."""
    dsn = await new_database(pg_cluster, "powabot_empty")
    job = yaml.safe_load((DEPLOY / "k8s" / "migrate" / "job.yaml").read_text(encoding="utf-8"))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    script = container["command"][-1].replace("/migrations/", f"{tmp_path}/migrations/")
    shutil.copytree(REPO / "sql", tmp_path / "migrations")  # what the init container copies
    for _ in range(2):  # the Job runs before each rollout
        _run(script, {"POWABOT_STORE": dsn})
        assert await _migrated(dsn)
