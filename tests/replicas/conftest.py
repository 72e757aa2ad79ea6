"""Several real `powabot run` processes on one Postgres, against the stand-ins.

`replicas.start(name, **env)` spawns one replica (Socket Mode, PORT=0: the port it bound is
read from its `bot_started` log line); `gate` is a TCP gate in front of the test's Postgres that
a test can close (the store goes down for every replica behind it) and open again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from sandbox.pgcluster import PgCluster
from sandbox.powabase import PowabaseStandin
from sandbox.slack import SlackStandin
from tests.conftest import SEED_CONTENT
from tests.faults.test_shutdown import bot_env

NewDatabase = Callable[[PgCluster, str], Awaitable[str]]
# Seconds: short leases keep the takeover tests fast (production default: 10; measure with
# REPLICAS_TEST_LEASE=10).
LEASE = float(os.environ.get("REPLICAS_TEST_LEASE", "2"))


class Replica:
    """One `python -m bot run` child; its stderr (JSON log lines) goes to a file."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Its structured log events so far (only those named `name`, when given)."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if name is None or event.get("event") == name:
                    found.append(event)
        return found

    @property
    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    @property
    def port(self) -> int:
        (started,) = self.events("bot_started")
        return int(started["port"])

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
            response = await client.get(f"http://127.0.0.1:{self.port}/readyz")
        return response.status_code, response.json()

    def signal(self, sig: signal.Signals) -> float:
        """Send `sig`; returns when (loop time)."""
        self.proc.send_signal(sig)
        return asyncio.get_running_loop().time()

    async def exited(self, timeout: float) -> int:  # noqa: ASYNC109 (a helper, not an API)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            pytest.fail(f"replica {self.name} still running; log:\n{self.log_tail}")


class Replicas:
    """The replicas of one test, all killed at its end."""

    def __init__(
        self, slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path, store: str
    ) -> None:
        self.slack = slack
        self.powabase = powabase
        self.tmp_path = tmp_path
        self.store = store
        self.running: list[Replica] = []
        self._logs: list[Any] = []

    async def start(self, name: str, *, store: str | None = None, **extra: str) -> Replica:
        """Spawn one replica (on `store`, else the test's database) and wait until it takes
        events (its Socket Mode connection is up)."""
        log_path = self.tmp_path / f"replica-{name}.log"
        log_file = log_path.open("wb")
        self._logs.append(log_file)
        env = bot_env(
            self.slack,
            self.powabase,
            self.tmp_path,
            **{"POWABOT_STORE": store or self.store, "POWABOT_LEASE_SECONDS": str(LEASE), **extra},
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            cwd=str(self.tmp_path),  # no developer `.env` is read
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log_file,
        )
        replica = Replica(name, proc, log_path)
        self.running.append(replica)
        try:
            await self.slack.wait_for(
                lambda: bool(replica.events("bot_started")) or proc.returncode is not None,
                timeout=30,
            )
        except TimeoutError:
            pytest.fail(f"replica {name} did not start; log:\n{replica.log_tail}")
        if proc.returncode is not None:
            pytest.fail(f"replica {name} exited {proc.returncode}; log:\n{replica.log_tail}")
        return replica

    def owner_of(self, owner: str) -> Replica:
        """The replica a `slack_answers.owner` (host:pid:random) names."""
        pid = int(owner.split(":")[1])
        (replica,) = [r for r in self.running if r.pid == pid]
        return replica

    async def close(self) -> None:
        for replica in self.running:
            if replica.proc.returncode is None:
                replica.proc.kill()
                await replica.proc.wait()
        for log_file in self._logs:
            log_file.close()


@pytest.fixture
async def powabase() -> AsyncIterator[PowabaseStandin]:
    """Powabase whose answers stream slowly enough to be in flight when a replica dies."""
    standin = PowabaseStandin(delta_delay=0.002)
    await standin.start()
    standin.orchestration_id = standin.seed_from(SEED_CONTENT)
    try:
        yield standin
    finally:
        await standin.stop()


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandin]:
    """Slack spreading envelopes over the replicas' connections at random (seeded)."""
    async with SlackStandin(socket_seed=11) as standin:
        yield standin


@pytest.fixture
async def database(pg_cluster: PgCluster, new_database: NewDatabase) -> str:
    """A fresh, migrated database for this test's replicas (its DSN)."""
    return await new_database(pg_cluster, "powabot_migrated")


class TcpGate:
    """A TCP forwarder on 127.0.0.1 in front of `target`: `close()` cuts every connection
    through it and refuses new ones (the database is unreachable), `open()` lets them in."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.is_open = True
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.is_open:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._pipes |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._pipes.discard(sink)
            sink.close()

    def close(self) -> None:
        self.is_open = False
        for pipe in list(self._pipes):
            if pipe.transport is not None:
                pipe.transport.abort()
        self._pipes.clear()

    def open(self) -> None:
        self.is_open = True

    async def stop(self) -> None:
        self.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def dsn(self, dsn: str) -> str:
        """`dsn` pointed at this gate."""
        parts = urlsplit(dsn)
        netloc = f"{parts.username}@127.0.0.1:{self.port}" if parts.username else None
        return urlunsplit(parts._replace(netloc=netloc or f"127.0.0.1:{self.port}"))


@pytest.fixture
async def gate(database: str) -> AsyncIterator[TcpGate]:
    parts = urlsplit(database)
    tcp = TcpGate(parts.hostname or "127.0.0.1", int(parts.port or 5432))
    await tcp.start()
    try:
        yield tcp
    finally:
        await tcp.stop()


@pytest.fixture
async def replicas(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path, database: str
) -> AsyncIterator[Replicas]:
    group = Replicas(slack, powabase, tmp_path, database)
    try:
        yield group
    finally:
        await group.close()


async def answer_row(dsn: str, channel: str) -> asyncpg.Record | None:
    """The `slack_answers` row of the one question asked in `channel`, if any yet."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchrow(
            "select * from public.slack_answers where channel_id = $1", channel
        )
    finally:
        await conn.close()


async def poll(
    probe: Callable[[], Awaitable[Any]],
    until: Callable[[Any], bool],
    timeout: float,  # noqa: ASYNC109 (a helper)
    every: float = 0.05,
) -> Any:
    """`await probe()` until `until(result)`; the result; fail at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await probe()
        if until(result):
            return result
        if loop.time() > deadline:
            pytest.fail(f"still {result!r} after {timeout}s")
        await asyncio.sleep(every)
