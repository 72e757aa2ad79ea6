"""Fixtures for the store tests: a throwaway PostgreSQL cluster (session-wide), a fresh
database per test cloned from migrated templates, and the PostgREST stand-in in front of it.

The server binaries are looked up on PATH, then under /usr/lib/postgresql/*/bin (Debian /
Ubuntu package `postgresql`), /usr/pgsql-*/bin (PGDG RPMs) and /usr/local/pgsql/bin. initdb and
postgres refuse to run as root, so as root the cluster runs as the `postgres` user (or
`nobody`) through `runuser`. Without binaries the Postgres-backed tests are skipped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from sandbox.postgrest import PostgrestStandin

REPO = Path(__file__).resolve().parents[2]
SQL_DIR = REPO / "sql"
BOOTSTRAP_SQL = SQL_DIR / "test-support" / "supabase-bootstrap.sql"
MIGRATIONS = sorted(SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))

BIN_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin")
UNPRIVILEGED_USERS = ("postgres", "nobody")
JWT_SECRET = "standin-jwt-secret-for-tests-only-0123456789"

_PROXY_AND_SLACK_ENV = ("HTTPS_PROXY", "HTTP_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_AND_SLACK_ENV:
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith(("SLACK_", "SUPABASE_", "POWABOT_")):
            monkeypatch.delenv(name, raising=False)


def find_pg_bin() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, newest major version first."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    candidates = [Path(p) for pattern in BIN_GLOBS for p in glob.glob(pattern)]

    def version(path: Path) -> tuple[int, ...]:
        digits = "".join(ch if ch.isdigit() else " " for ch in str(path)).split()
        return tuple(int(d) for d in digits)

    for directory in sorted(candidates, key=version, reverse=True):
        if all((directory / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class PgCluster:
    port: int
    bin_dir: Path

    def dsn(self, database: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"


def _run_as(user: str | None, argv: list[str]) -> subprocess.CompletedProcess[str]:
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


async def _apply(dsn: str, files: list[Path]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for path in files:
            await conn.execute(path.read_text())
    finally:
        await conn.close()


async def _make_templates(cluster: PgCluster) -> None:
    admin = await asyncpg.connect(cluster.dsn("postgres"))
    try:
        await admin.execute("create database powabot_bootstrapped")
        await admin.execute("create database powabot_empty")
    finally:
        await admin.close()
    await _apply(cluster.dsn("powabot_bootstrapped"), [BOOTSTRAP_SQL])
    admin = await asyncpg.connect(cluster.dsn("postgres"))
    try:
        await admin.execute("create database powabot_migrated template powabot_bootstrapped")
    finally:
        await admin.close()
    await _apply(cluster.dsn("powabot_migrated"), MIGRATIONS)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in "
            + ", ".join(BIN_GLOBS)
            + "; install the apt package `postgresql`"
        )
    user: str | None = None
    if os.geteuid() == 0:
        user = next((u for u in UNPRIVILEGED_USERS if _user_exists(u)), None)
        if user is None or shutil.which("runuser") is None:
            pytest.skip("running as root without a `postgres`/`nobody` user or `runuser`")
    workdir = Path(tempfile.mkdtemp(prefix="powabot-pg-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
    data = workdir / "data"
    init = _run_as(
        user,
        [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
         "-E", "UTF8", "--no-locale", "--no-sync"],
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"initdb failed: {init.stderr.strip()}")
    started = None
    for _attempt in range(3):
        port = _free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {workdir} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        started = _run_as(
            user,
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options,
             "-l", str(workdir / "server.log"), "-w", "-t", "60", "start"],
        )  # fmt: skip
        if started.returncode == 0:
            break
    if started is None or started.returncode != 0:
        log = (workdir / "server.log").read_text() if (workdir / "server.log").exists() else ""
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed: {started.stderr if started else ''}\n{log}")
    cluster = PgCluster(port=port, bin_dir=bin_dir)
    try:
        # In a thread of its own: this fixture may be set up while a test's loop is running.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, _make_templates(cluster)).result()
        yield cluster
    finally:
        _run_as(user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(workdir, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


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
