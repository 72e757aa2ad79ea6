"""A throwaway PostgreSQL cluster on 127.0.0.1, for tests and benchmarks (a tool, not product).

The server binaries are looked up on PATH, then under /usr/lib/postgresql/*/bin (Debian /
Ubuntu package `postgresql`), /usr/pgsql-*/bin (PGDG RPMs) and /usr/local/pgsql/bin. initdb and
postgres refuse to run as root, so as root the cluster runs as the `postgres` user (or
`nobody`) through `runuser`. Durability is off (fsync, synchronous_commit): nothing here
outlives the run.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import asyncpg

REPO = Path(__file__).resolve().parent.parent
SQL_DIR = REPO / "sql"
BOOTSTRAP_SQL = SQL_DIR / "test-support" / "supabase-bootstrap.sql"
MIGRATIONS = sorted(SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))
BIN_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin")
UNPRIVILEGED_USERS = ("postgres", "nobody")


class PgClusterError(RuntimeError):
    """The cluster could not be created or started; the message says why."""


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


def unprivileged_user() -> str | None:
    """The user the server runs as: None when we are not root, else `postgres` or `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser") is not None:
            return name
    raise PgClusterError("running as root without a `postgres`/`nobody` user or `runuser`")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as(user: str | None, argv: list[str]) -> subprocess.CompletedProcess[str]:
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


@dataclass
class PgCluster:
    """A running cluster: `dsn(database)` connects as the superuser `postgres` (trust auth)."""

    port: int
    bin_dir: Path
    workdir: Path
    user: str | None

    def dsn(self, database: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(cls, *, max_connections: int = 200) -> PgCluster:
        """initdb + pg_ctl start in a new temporary directory; PgClusterError when impossible."""
        bin_dir = find_pg_bin()
        if bin_dir is None:
            raise PgClusterError(
                "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in "
                + ", ".join(BIN_GLOBS)
                + "; install the apt package `postgresql`"
            )
        user = unprivileged_user()
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
            raise PgClusterError(f"initdb failed: {init.stderr.strip()}")
        started = None
        port = 0
        for _attempt in range(3):
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {workdir} -c fsync=off"
                " -c synchronous_commit=off -c full_page_writes=off"
                f" -c max_connections={max_connections}"
            )
            started = _run_as(
                user,
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options,
                 "-l", str(workdir / "server.log"), "-w", "-t", "60", "start"],
            )  # fmt: skip
            if started.returncode == 0:
                break
        if started is None or started.returncode != 0:
            log_file = workdir / "server.log"
            log = log_file.read_text() if log_file.exists() else ""
            shutil.rmtree(workdir, ignore_errors=True)
            raise PgClusterError(f"pg_ctl start failed: {started.stderr if started else ''}\n{log}")
        return cls(port=port, bin_dir=bin_dir, workdir=workdir, user=user)

    def stop(self) -> None:
        """Stop the server at once and delete its files."""
        _run_as(
            self.user,
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.workdir / "data"), "-m", "immediate",
             "stop"],
        )  # fmt: skip
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def create_database(
        self, name: str, *, bootstrap: bool = True, migrate: bool = True
    ) -> str:
        """A new database with the Supabase roles (bootstrap) and every sql/ migration applied;
        returns its DSN."""
        admin = await asyncpg.connect(self.dsn("postgres"))
        try:
            await admin.execute(f'create database "{name}"')
        finally:
            await admin.close()
        files = ([BOOTSTRAP_SQL] if bootstrap else []) + (MIGRATIONS if migrate else [])
        await apply_sql(self.dsn(name), files)
        return self.dsn(name)


async def apply_sql(dsn: str, files: list[Path]) -> None:
    """Run each SQL file, in order, over one connection."""
    conn = await asyncpg.connect(dsn)
    try:
        for path in files:
            await conn.execute(path.read_text())
    finally:
        await conn.close()
