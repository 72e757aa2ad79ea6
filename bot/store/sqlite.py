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
    AnswerClaim,
    AnswerKey,
    ChatSession,
    OpenAnswer,
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
create table if not exists slack_answers (
    team_id text not null,
    channel_id text not null,
    message_ts text not null,
    event_ids text not null,
    user_id text not null,
    question text,
    thread_ts text,
    channel_type text,
    owner text not null,
    lease_expires_at text not null,
    reply_ts text,
    reply_native integer not null default 0,
    status text not null default 'running'
        check (status in ('running', 'released', 'done')),
    attempts integer not null default 1,
    created_at text not null,
    finished_at text,
    primary key (team_id, channel_id, message_ts)
);
create index if not exists slack_answers_open on slack_answers (lease_expires_at)
    where status <> 'done';
"""

# Lease times are ISO-8601 UTC strings of one fixed width, so they compare as text.
EVENT_IDS_KEPT = 20
_ANSWER_COLUMNS = (
    "team_id, channel_id, message_ts, event_ids, user_id, question, thread_ts, channel_type,"
    " attempts, reply_ts, reply_native"
)
_KEY_MATCH = "team_id=? and channel_id=? and message_ts=?"

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


def _after(seconds: float) -> str:
    """`seconds` from now, as a lease time (microseconds always shown: fixed width)."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


class SqliteStore:
    backend = "sqlite"
    shared = False

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

    async def claim_answer(self, claim: AnswerClaim, *, owner: str, lease: float) -> bool:
        key = claim.key

        def insert() -> bool:
            self._claims += 1
            if self._claims % PRUNE_EVERY == 0:
                cutoff = datetime.now(UTC) - timedelta(hours=EVENT_RETENTION_HOURS)
                self.conn.execute(
                    "delete from slack_answers where status='done' and finished_at < ?",
                    (cutoff.isoformat(),),
                )
            cur = self.conn.execute(
                "insert into slack_answers (team_id, channel_id, message_ts, event_ids, user_id,"
                " question, thread_ts, channel_type, owner, lease_expires_at, created_at)"
                " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) on conflict do nothing",
                (
                    *_answer_key(key),
                    json.dumps([claim.event_id]),
                    claim.user_id,
                    claim.question,
                    claim.thread_ts,
                    claim.channel_type,
                    owner,
                    _after(lease),
                    _now(),
                ),
            )
            if cur.rowcount == 1:
                return True
            row = self.conn.execute(
                f"select event_ids from slack_answers where {_KEY_MATCH}", _answer_key(key)
            ).fetchone()
            seen = json.loads(row[0]) if row else []
            if row and claim.event_id not in seen and len(seen) < EVENT_IDS_KEPT:
                self.conn.execute(
                    f"update slack_answers set event_ids=? where {_KEY_MATCH}",
                    (json.dumps([*seen, claim.event_id]), *_answer_key(key)),
                )
            return False

        return await self._run(insert)

    async def renew_leases(
        self, keys: list[AnswerKey], *, owner: str, lease: float
    ) -> set[AnswerKey]:
        def renew() -> set[AnswerKey]:
            renewed: set[AnswerKey] = set()
            until = _after(lease)
            for key in keys:
                cur = self.conn.execute(
                    "update slack_answers set lease_expires_at=?"
                    f" where {_KEY_MATCH} and owner=? and status='running'",
                    (until, *_answer_key(key), owner),
                )
                if cur.rowcount == 1:
                    renewed.add(key)
            return renewed

        return await self._run(renew)

    async def set_reply(self, key: AnswerKey, *, owner: str, reply_ts: str, native: bool) -> None:
        await self._run(
            lambda: self.conn.execute(
                f"update slack_answers set reply_ts=?, reply_native=? where {_KEY_MATCH}"
                " and owner=?",
                (reply_ts, int(native), *_answer_key(key), owner),
            )
        )

    async def finish_answer(self, key: AnswerKey, *, owner: str) -> None:
        await self._run(
            lambda: self.conn.execute(
                "update slack_answers set status='done', finished_at=?, question=null"
                f" where {_KEY_MATCH} and owner=? and status <> 'done'",
                (_now(), *_answer_key(key), owner),
            )
        )

    async def release_answers(self, keys: list[AnswerKey], *, owner: str) -> int:
        def release() -> int:
            now = _after(0)
            released = 0
            for key in keys:
                cur = self.conn.execute(
                    "update slack_answers set status='released', lease_expires_at=?"
                    f" where {_KEY_MATCH} and owner=? and status='running'",
                    (now, *_answer_key(key), owner),
                )
                released += cur.rowcount
            return released

        return await self._run(release)

    async def take_over_answers(self, *, owner: str, lease: float, limit: int) -> list[OpenAnswer]:
        def take() -> list[OpenAnswer]:
            # One statement: atomic even between two connections to the file.
            rows = self.conn.execute(
                "update slack_answers set owner=?, status='running', attempts=attempts + 1,"
                " lease_expires_at=? where rowid in (select rowid from slack_answers"
                " where status <> 'done' and lease_expires_at < ?"
                f" order by lease_expires_at limit ?) returning {_ANSWER_COLUMNS}",
                (owner, _after(lease), _after(0), limit),
            ).fetchall()
            return [_open_answer(row) for row in rows]

        return await self._run(take)

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
        migrated = {"chat_sessions", "slack_events", "slack_answers"} <= tables
        return StoreHealth(self.backend, True, migrated, self.path)


def _key_tuple(key: ThreadKey) -> tuple[str, str, str, str]:
    return (key.team_id, key.channel_id, key.thread_ts, key.user_id)


def _answer_key(key: AnswerKey) -> tuple[str, str, str]:
    return (key.team_id, key.channel_id, key.message_ts)


def _open_answer(row: tuple[Any, ...]) -> OpenAnswer:
    """A row returned with `_ANSWER_COLUMNS` by the takeover (attempts counts it already)."""
    event_ids = json.loads(row[3]) or [""]
    claim = AnswerClaim(
        key=AnswerKey(row[0], row[1], row[2]),
        event_id=str(event_ids[0]),
        user_id=row[4],
        question=row[5] or "",
        thread_ts=row[6],
        channel_type=row[7],
    )
    return OpenAnswer(claim, attempts=int(row[8]), reply_ts=row[9], reply_native=bool(row[10]))
