"""Postgres fixtures for every suite (a pytest plugin, loaded by tests/conftest.py): ONE
throwaway cluster for the whole run (`sandbox/pgcluster.py`), a fresh database per test cloned
from migrated templates, and the PostgREST stand-in in front of it.

Without server binaries (or as root without an unprivileged user) the Postgres-backed tests are
skipped with the reason.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import pytest

from sandbox.pgcluster import (
    BOOTSTRAP_SQL,
    MIGRATIONS,
    SQL_DIR,
    PgCluster,
    PgClusterError,
    apply_sql,
    find_pg_bin,
)
from sandbox.postgrest import PostgrestStandin

__all__ = ["MIGRATIONS", "SQL_DIR", "PgCluster", "find_pg_bin"]

JWT_SECRET = "standin-jwt-secret-for-tests-only-0123456789"
NewDatabase = Callable[[PgCluster, str], Awaitable[str]]


async def _make_templates(cluster: PgCluster) -> None:
    admin = await asyncpg.connect(cluster.dsn("postgres"))
    try:
        await admin.execute("create database powabot_bootstrapped")
        await admin.execute("create database powabot_empty")
    finally:
        await admin.close()
    await apply_sql(cluster.dsn("powabot_bootstrapped"), [BOOTSTRAP_SQL])
    admin = await asyncpg.connect(cluster.dsn("postgres"))
    try:
        await admin.execute("create database powabot_migrated template powabot_bootstrapped")
    finally:
        await admin.close()
    await apply_sql(cluster.dsn("powabot_migrated"), MIGRATIONS)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    try:
        cluster = PgCluster.start()
    except PgClusterError as exc:
        if find_pg_bin() is None or "root" in str(exc):
            pytest.skip(str(exc))
        pytest.fail(str(exc))
    try:
        # In a thread of its own: this fixture may be set up while a test's loop is running.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, _make_templates(cluster)).result()
        yield cluster
    finally:
        cluster.stop()


_db_numbers = itertools.count()


async def _clone(cluster: PgCluster, template: str) -> str:
    name = f"t{os.getpid()}_{next(_db_numbers)}"
    admin = await asyncpg.connect(cluster.dsn("postgres"))
    try:
        await admin.execute(f"create database {name} template {template}")
    finally:
        await admin.close()
    return name


async def _drop(cluster: PgCluster, name: str) -> None:
    admin = await asyncpg.connect(cluster.dsn("postgres"))
    try:
        await admin.execute(f"drop database if exists {name} with (force)")
    finally:
        await admin.close()


@pytest.fixture
async def migrated_db(pg_cluster: PgCluster) -> AsyncIterator[str]:
    """A fresh database with the Supabase shim and every migration applied; yields its DSN."""
    name = await _clone(pg_cluster, "powabot_migrated")
    yield pg_cluster.dsn(name)
    await _drop(pg_cluster, name)


@pytest.fixture
async def bootstrapped_db(pg_cluster: PgCluster) -> AsyncIterator[str]:
    """A fresh database with only the Supabase shim (no migrations); yields its DSN."""
    name = await _clone(pg_cluster, "powabot_bootstrapped")
    yield pg_cluster.dsn(name)
    await _drop(pg_cluster, name)


@pytest.fixture
async def postgrest(migrated_db: str) -> AsyncIterator[PostgrestStandin]:
    """The PostgREST stand-in in front of a migrated database, connecting as `authenticator`."""
    async with PostgrestStandin(_as_user(migrated_db, "authenticator"), JWT_SECRET) as rest:
        yield rest


def _as_user(dsn: str, user: str) -> str:
    return dsn.replace("postgresql://postgres@", f"postgresql://{user}@", 1)


@pytest.fixture
def authenticator_dsn(migrated_db: str) -> str:
    """The migrated database as PostgREST's login role (no privileges until it sets a role)."""
    return _as_user(migrated_db, "authenticator")


@pytest.fixture
def jwt_secret() -> str:
    return JWT_SECRET


@pytest.fixture
async def new_database() -> AsyncIterator[Callable[[PgCluster, str], Awaitable[str]]]:
    """`await new_database(cluster, template)` → DSN of a fresh clone, dropped after the test."""
    created: list[tuple[PgCluster, str]] = []

    async def make(cluster: PgCluster, template: str = "powabot_migrated") -> str:
        name = await _clone(cluster, template)
        created.append((cluster, name))
        return cluster.dsn(name)

    yield make
    for cluster, name in created:
        await _drop(cluster, name)
