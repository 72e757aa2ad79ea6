"""The embedded default store: one SQLite file, fine for a single bot process."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from bot.errors import StoreError
from bot.store.base import (
    EVENT_RETENTION_HOURS,
    PRUNE_EVERY,
    ChatSession,
    StoreHealth,
    ThreadKey,
)

T = TypeVar("T")

SCHEMA = """
create table if not exists chat_sessions (
    id integer primary key autoincrement,
    slack_team_id text not null,
    slack_channel_id text not null,
    slack_thread_ts text not null,
    slack_user_id text not null,
    agent_session_id text not null,
    title text,
    last_run_id text,
    last_run_status text,
    last_trace text,
    created_at text not null,
    updated_at text not null,
    unique (slack_team_id, slack_channel_id, slack_thread_ts, slack_user_id)
);
create table if not exists slack_events (
    event_id text primary key,
    claimed_at text not null
);
create index if not exists slack_events_claimed_at on slack_events (claimed_at);
"""

# One conversation per agent session id (what sql/007 does for Postgres). A file written before
# the index existed may hold rows sharing an id: the oldest keeps it, every newer one gets a
# fresh id (its thread starts a new Powabase session) so that the index can be built. Both
# statements are no-ops on a file that already has the index; they run in one transaction.
UNIQUE_SESSION_IDS = """
begin immediate;
update chat_sessions
   set agent_session_id = 'orch_sess_' || lower(hex(randomblob(16)))
 where id not in (select min(id) from chat_sessions group by agent_session_id);
create unique index if not exists chat_sessions_agent_session_id_key
    on chat_sessions (agent_session_id);
commit;
"""


def sqlite_path(url: str) -> str:
    """`sqlite:///relative.db`, `sqlite:////abs/path.db` or `sqlite:///:memory:` → a path."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise StoreError(f"POWABOT_STORE must look like sqlite:///path.db, got {url!r}")
    path = url[len(prefix) :]
    if not path:
        raise StoreError("POWABOT_STORE names no file (sqlite:///path.db)")
    return path


def _now() -> str:
    return datetime.now(UTC).isoformat()


class SqliteStore:
    backend = "sqlite"

    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._claims = 0

    async def open(self) -> None:
        def connect() -> None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            try:
                conn.execute("pragma journal_mode=wal")
                conn.execute("pragma busy_timeout=5000")
                conn.executescript(SCHEMA)
                conn.executescript(UNIQUE_SESSION_IDS)
            except BaseException:
                conn.close()
                raise
            self._conn = conn

        await self._run(connect, needs_conn=False)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.to_thread(conn.close)

    async def _run(self, fn: Callable[[], T], *, needs_conn: bool = True) -> T:
        if needs_conn and self._conn is None:
            raise StoreError("the SQLite store is not open")

        def locked() -> T:
            with self._lock:
                return fn()

        try:
            return await asyncio.to_thread(locked)
        except (sqlite3.Error, OSError) as exc:  # OSError: the file's directory cannot be made
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    @property
    def conn(self) -> sqlite3.Connection:
        assert self._conn is not None
        return self._conn

    def _select(self, key: ThreadKey) -> ChatSession | None:
        row = self.conn.execute(
            "select agent_session_id, title, created_at, updated_at, last_run_id, last_run_status"
            " from chat_sessions where slack_team_id=? and slack_channel_id=?"
            " and slack_thread_ts=? and slack_user_id=?",
            (key.team_id, key.channel_id, key.thread_ts, key.user_id),
        ).fetchone()
        if row is None:
            return None
        return ChatSession(
            key=key,
            agent_session_id=row[0],
            title=row[1],
            created_at=datetime.fromisoformat(row[2]),
            updated_at=datetime.fromisoformat(row[3]),
            last_run_id=row[4],
            last_run_status=row[5],
        )

    async def get_session(self, key: ThreadKey) -> ChatSession | None:
        return await self._run(lambda: self._select(key))

    async def reserve_session(
        self, key: ThreadKey, agent_session_id: str, title: str | None
    ) -> ChatSession:
        def reserve() -> ChatSession:
            now = _now()
            self.conn.execute(
                "insert into chat_sessions (slack_team_id, slack_channel_id, slack_thread_ts,"
                " slack_user_id, agent_session_id, title, created_at, updated_at)"
                " values (?, ?, ?, ?, ?, ?, ?, ?) on conflict (slack_team_id, slack_channel_id,"
                " slack_thread_ts, slack_user_id) do nothing",
                (*_key_tuple(key), agent_session_id, title, now, now),
            )
            found = self._select(key)
            assert found is not None
            return found

        return await self._run(reserve)

    async def set_agent_session_id(self, key: ThreadKey, agent_session_id: str) -> None:
        await self._run(
            lambda: self.conn.execute(
                "update chat_sessions set agent_session_id=?, updated_at=? where slack_team_id=?"
                " and slack_channel_id=? and slack_thread_ts=? and slack_user_id=?",
                (agent_session_id, _now(), *_key_tuple(key)),
            )
        )

    async def record_run(
        self, key: ThreadKey, *, run_id: str | None, status: str, trace: dict[str, Any]
    ) -> None:
        await self._run(
            lambda: self.conn.execute(
                "update chat_sessions set last_run_id=?, last_run_status=?, last_trace=?,"
                " updated_at=? where slack_team_id=? and slack_channel_id=?"
                " and slack_thread_ts=? and slack_user_id=?",
                (run_id, status, json.dumps(trace, default=str), _now(), *_key_tuple(key)),
            )
        )

    async def claim_event(self, event_id: str) -> bool:
        def claim() -> bool:
            self._claims += 1
            if self._claims % PRUNE_EVERY == 0:
                cutoff = datetime.now(UTC) - timedelta(hours=EVENT_RETENTION_HOURS)
                self.conn.execute(
                    "delete from slack_events where claimed_at < ?", (cutoff.isoformat(),)
                )
            cur = self.conn.execute(
                "insert into slack_events (event_id, claimed_at) values (?, ?)"
                " on conflict do nothing",
                (event_id, _now()),
            )
            return cur.rowcount == 1

        return await self._run(claim)

    async def health(self) -> StoreHealth:
        if self._conn is None:
            return StoreHealth(self.backend, False, False, f"{self.path} not open")
        try:
            tables = await self._run(
                lambda: {
                    r[0]
                    for r in self.conn.execute("select name from sqlite_master where type='table'")
                }
            )
        except StoreError as exc:
            return StoreHealth(self.backend, False, False, str(exc))
        migrated = {"chat_sessions", "slack_events"} <= tables
        return StoreHealth(self.backend, True, migrated, self.path)


def _key_tuple(key: ThreadKey) -> tuple[str, str, str, str]:
    return (key.team_id, key.channel_id, key.thread_ts, key.user_id)
