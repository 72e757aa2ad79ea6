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

import structlog

from bot.errors import StoreError
from bot.store.base import (
    EVENT_RETENTION_HOURS,
    PRUNE_EVERY,
    QUESTION_MAX,
    AnswerClaim,
    AnswerKey,
    AnswerRecord,
    ChatSession,
    Escalation,
    ExportRow,
    Feedback,
    OpenAnswer,
    StoreHealth,
    ThreadKey,
)

T = TypeVar("T")
log = structlog.get_logger(__name__)

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
create table if not exists answer_log (
    id integer primary key autoincrement,
    chat_session_id integer not null references chat_sessions (id) on delete cascade,
    slack_team_id text not null,
    slack_channel_id text not null,
    slack_thread_ts text not null,
    slack_user_id text not null,
    reply_ts text not null,
    run_id text,
    question text not null,
    answer text not null,
    status text not null,
    specialists text not null default '[]',
    sources text not null default '[]',
    tokens integer,
    created_at text not null,
    unique (slack_team_id, slack_channel_id, reply_ts)
);
create index if not exists answer_log_session on answer_log (chat_session_id);
create table if not exists chat_feedback (
    id integer primary key autoincrement,
    chat_session_id integer not null references chat_sessions (id) on delete cascade,
    run_id text,
    rating integer not null check (rating in (-1, 1)),
    comment text,
    source text not null default 'slack' check (source in ('web', 'slack')),
    slack_team_id text,
    slack_channel_id text,
    reply_ts text,
    slack_user_id text,
    answer_log_id integer references answer_log (id) on delete cascade,
    created_at text not null,
    updated_at text not null,
    unique (slack_team_id, slack_channel_id, reply_ts, slack_user_id)
);
create index if not exists chat_feedback_updated on chat_feedback (updated_at);
create table if not exists escalations (
    id integer primary key autoincrement,
    chat_session_id integer references chat_sessions (id) on delete cascade,
    slack_team_id text not null,
    slack_channel_id text not null,
    slack_thread_ts text not null,
    slack_user_id text not null,
    run_id text,
    specialist text,
    requested_by text not null,
    escalation_channel_id text not null,
    message_ts text,
    created_at text not null,
    resolved_by text,
    resolved_at text
);
create unique index if not exists escalations_one_open
    on escalations (slack_team_id, slack_channel_id, slack_thread_ts) where resolved_at is null;
create index if not exists escalations_session on escalations (chat_session_id);
create table if not exists chat_session_history (
    id integer primary key autoincrement,
    chat_session_id integer not null references chat_sessions (id) on delete cascade,
    slack_team_id text not null,
    slack_channel_id text not null,
    slack_thread_ts text not null,
    slack_user_id text not null,
    agent_session_id text not null,
    title text,
    last_run_id text,
    last_run_status text,
    started_at text not null,
    archived_at text not null
);
create index if not exists chat_session_history_session on chat_session_history (chat_session_id);
create table if not exists workspace_settings (
    slack_team_id text primary key,
    settings text not null,
    updated_by text,
    updated_at text not null
);
"""

# What health() requires (the tables the embedded schema above creates).
TABLES = frozenset(
    {
        "chat_sessions",
        "slack_events",
        "slack_answers",
        "answer_log",
        "chat_feedback",
        "escalations",
        "chat_session_history",
        "workspace_settings",
    }
)
_SLACK_KEY = "slack_team_id=? and slack_channel_id=? and slack_thread_ts=? and slack_user_id=?"
_ANSWER_SELECT = (
    "select a.slack_team_id, a.slack_channel_id, a.slack_thread_ts, a.slack_user_id, a.reply_ts,"
    " a.run_id, a.question, a.answer, a.status, a.specialists, a.sources, a.tokens, a.created_at"
    " from answer_log a join chat_sessions cs on cs.id = a.chat_session_id"
)
_ESCALATION_COLUMNS = (
    "id, slack_team_id, slack_channel_id, slack_thread_ts, slack_user_id, run_id, specialist,"
    " requested_by, escalation_channel_id, message_ts, created_at, resolved_by, resolved_at"
)

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
    """Now as stored: ISO-8601 UTC, microseconds always shown (fixed width: sorts as text)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


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
                # Deleting a conversation deletes its answers, ratings, escalations, history.
                conn.execute("pragma foreign_keys=on")
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

            def close_when_idle() -> None:
                # Under the lock: closing a connection another worker thread is still using
                # (a lease renewal racing the shutdown) crashes sqlite3 outright.
                with self._lock:
                    conn.close()

            await asyncio.to_thread(close_when_idle)

    async def _run(self, fn: Callable[[], T], *, needs_conn: bool = True) -> T:
        if needs_conn and self._conn is None:
            raise StoreError("the SQLite store is not open")

        def locked() -> T:
            with self._lock:
                if needs_conn and self._conn is None:  # closed while this call waited
                    raise StoreError("the SQLite store is closed")
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
        return None if row is None else _session(key, row)

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
        missing = sorted(TABLES - tables)
        if missing:
            return StoreHealth(
                self.backend, True, False, f"{self.path}: missing {', '.join(missing)}"
            )
        return StoreHealth(self.backend, True, True, self.path)

    # The support loop (issue 13): the same tables as sql/010-013.

    async def record_answer(self, record: AnswerRecord) -> None:
        key = record.key

        def insert() -> int:
            cur = self.conn.execute(
                "insert into answer_log (chat_session_id, slack_team_id, slack_channel_id,"
                " slack_thread_ts, slack_user_id, reply_ts, run_id, question, answer, status,"
                " specialists, sources, tokens, created_at)"
                " select id, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
                f" from chat_sessions where {_SLACK_KEY}"
                " on conflict (slack_team_id, slack_channel_id, reply_ts) do update set"
                " chat_session_id=excluded.chat_session_id,"
                " slack_thread_ts=excluded.slack_thread_ts, slack_user_id=excluded.slack_user_id,"
                " run_id=excluded.run_id, question=excluded.question, answer=excluded.answer,"
                " status=excluded.status, specialists=excluded.specialists,"
                " sources=excluded.sources, tokens=excluded.tokens",
                (
                    *_key_tuple(key),
                    record.reply_ts,
                    record.run_id,
                    record.question[:QUESTION_MAX],
                    record.answer[:QUESTION_MAX],
                    record.status,
                    json.dumps(list(record.specialists)),
                    json.dumps(list(record.sources)),
                    record.tokens,
                    _now(),
                    *_key_tuple(key),
                ),
            )
            return cur.rowcount

        if await self._run(insert) == 0:
            log.warning("answer_not_recorded", reason="no conversation", reply_ts=record.reply_ts)

    async def get_answer(self, team_id: str, channel_id: str, reply_ts: str) -> AnswerRecord | None:
        row = await self._run(
            lambda: self.conn.execute(
                f"{_ANSWER_SELECT} where a.slack_team_id=? and a.slack_channel_id=?"
                " and a.reply_ts=?",
                (team_id, channel_id, reply_ts),
            ).fetchone()
        )
        if row is None:
            return None
        return AnswerRecord(
            key=ThreadKey(*row[0:4]),
            reply_ts=row[4],
            run_id=row[5],
            question=row[6],
            answer=row[7],
            status=row[8],
            specialists=tuple(json.loads(row[9])),
            sources=tuple(json.loads(row[10])),
            tokens=row[11],
            created_at=datetime.fromisoformat(row[12]),
        )

    async def record_feedback(self, feedback: Feedback) -> bool:
        def upsert() -> bool:
            now = _now()
            cur = self.conn.execute(
                "insert into chat_feedback (chat_session_id, run_id, rating, source,"
                " slack_team_id, slack_channel_id, reply_ts, slack_user_id, answer_log_id,"
                " created_at, updated_at)"
                " select a.chat_session_id, a.run_id, ?, 'slack', a.slack_team_id,"
                " a.slack_channel_id, a.reply_ts, ?, a.id, ?, ?"
                " from answer_log a join chat_sessions cs on cs.id = a.chat_session_id"
                " where a.slack_team_id=? and a.slack_channel_id=? and a.reply_ts=?"
                " on conflict (slack_team_id, slack_channel_id, reply_ts, slack_user_id)"
                " do update set rating=excluded.rating, run_id=excluded.run_id,"
                " chat_session_id=excluded.chat_session_id,"
                " answer_log_id=excluded.answer_log_id, updated_at=excluded.updated_at",
                (
                    feedback.rating,
                    feedback.rater_id,
                    now,
                    now,
                    feedback.team_id,
                    feedback.channel_id,
                    feedback.reply_ts,
                ),
            )
            return cur.rowcount == 1

        return await self._run(upsert)

    async def feedback_export(self, *, since: datetime | None = None) -> list[ExportRow]:
        cutoff = None if since is None else _stamp(since)

        def export() -> list[ExportRow]:
            rows = self.conn.execute(
                "select f.updated_at, a.slack_team_id, a.slack_channel_id, a.slack_thread_ts,"
                " a.slack_user_id, f.slack_user_id, f.rating, a.run_id, a.question, a.answer,"
                " a.specialists, a.sources, a.tokens,"
                " (select count(*) from escalations e where e.chat_session_id = a.chat_session_id)"
                " from chat_feedback f join answer_log a on a.id = f.answer_log_id"
                " join chat_sessions cs on cs.id = a.chat_session_id"
                " where ? is null or f.updated_at >= ? order by f.updated_at, f.id",
                (cutoff, cutoff),
            ).fetchall()
            return [
                ExportRow(
                    rated_at=datetime.fromisoformat(r[0]),
                    team_id=r[1],
                    channel_id=r[2],
                    thread_ts=r[3],
                    asker_id=r[4],
                    rater_id=r[5],
                    rating=int(r[6]),
                    run_id=r[7],
                    question=r[8],
                    answer=r[9],
                    specialists=tuple(json.loads(r[10])),
                    sources=tuple(json.loads(r[11])),
                    tokens=r[12],
                    escalations=int(r[13]),
                )
                for r in rows
            ]

        return await self._run(export)

    def _open_escalation_in_thread(self, key: ThreadKey) -> Escalation | None:
        row = self.conn.execute(
            f"select {_ESCALATION_COLUMNS} from escalations where slack_team_id=?"
            " and slack_channel_id=? and slack_thread_ts=? and resolved_at is null",
            (key.team_id, key.channel_id, key.thread_ts),
        ).fetchone()
        return None if row is None else _escalation(row)

    async def open_escalation(self, escalation: Escalation) -> Escalation:
        key = escalation.key

        def open_one() -> Escalation:
            row = self.conn.execute(
                "insert into escalations (chat_session_id, slack_team_id, slack_channel_id,"
                " slack_thread_ts, slack_user_id, run_id, specialist, requested_by,"
                " escalation_channel_id, created_at)"
                f" values ((select id from chat_sessions where {_SLACK_KEY}),"
                " ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " on conflict (slack_team_id, slack_channel_id, slack_thread_ts)"
                " where resolved_at is null do nothing"
                f" returning {_ESCALATION_COLUMNS}",
                (
                    *_key_tuple(key),
                    *_key_tuple(key),
                    escalation.run_id,
                    escalation.specialist,
                    escalation.requested_by,
                    escalation.channel_id,
                    _now(),
                ),
            ).fetchone()
            if row is not None:
                return _escalation(row)
            found = self._open_escalation_in_thread(key)  # the one already open in the thread
            if found is None:
                raise StoreError(f"SQLite store {self.path}: open_escalation found no row")
            return found

        return await self._run(open_one)

    async def set_escalation_message(self, escalation_id: int, message_ts: str) -> None:
        await self._run(
            lambda: self.conn.execute(
                "update escalations set message_ts=? where id=?", (message_ts, escalation_id)
            )
        )

    async def active_escalation(self, key: ThreadKey) -> Escalation | None:
        return await self._run(lambda: self._open_escalation_in_thread(key))

    async def resolve_escalation(
        self, escalation_id: int, *, resolved_by: str
    ) -> Escalation | None:
        row = await self._run(
            lambda: self.conn.execute(
                "update escalations set resolved_by=?, resolved_at=?"
                f" where id=? and resolved_at is null returning {_ESCALATION_COLUMNS}",
                (resolved_by, _now(), escalation_id),
            ).fetchone()
        )
        return None if row is None else _escalation(row)

    async def reset_session(self, key: ThreadKey, agent_session_id: str) -> ChatSession | None:
        def reset() -> ChatSession | None:
            row = self.conn.execute(
                "select id, agent_session_id, title, last_run_id, last_run_status, created_at"
                f" from chat_sessions where {_SLACK_KEY}",
                _key_tuple(key),
            ).fetchone()
            if row is None:
                return None
            session_id = row[0]
            now = _now()
            # One transaction: an id already mapped elsewhere leaves row and history as they were.
            self.conn.execute("begin immediate")
            try:
                started = self.conn.execute(
                    "select max(archived_at) from chat_session_history where chat_session_id=?",
                    (session_id,),
                ).fetchone()[0]
                self.conn.execute(
                    "insert into chat_session_history (chat_session_id, slack_team_id,"
                    " slack_channel_id, slack_thread_ts, slack_user_id, agent_session_id, title,"
                    " last_run_id, last_run_status, started_at, archived_at)"
                    " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (session_id, *_key_tuple(key), *row[1:5], started or row[5], now),
                )
                self.conn.execute(
                    "update chat_sessions set agent_session_id=?, last_run_id=null,"
                    " last_run_status=null, last_trace=null, updated_at=? where id=?",
                    (agent_session_id, now, session_id),
                )
            except BaseException:
                self.conn.execute("rollback")
                raise
            self.conn.execute("commit")
            return self._select(key)

        return await self._run(reset)

    async def session_history(self, key: ThreadKey) -> list[ChatSession]:
        rows = await self._run(
            lambda: self.conn.execute(
                "select agent_session_id, title, started_at, archived_at, last_run_id,"
                f" last_run_status from chat_session_history where {_SLACK_KEY} order by id",
                _key_tuple(key),
            ).fetchall()
        )
        return [_session(key, r) for r in rows]

    async def recent_sessions(
        self, team_id: str, user_id: str, limit: int = 5
    ) -> list[ChatSession]:
        rows = await self._run(
            lambda: self.conn.execute(
                "select slack_team_id, slack_channel_id, slack_thread_ts, slack_user_id,"
                " agent_session_id, title, created_at, updated_at, last_run_id, last_run_status"
                " from chat_sessions where slack_team_id=? and slack_user_id=?"
                " order by updated_at desc, id desc limit ?",
                (team_id, user_id, limit),
            ).fetchall()
        )
        return [_session(ThreadKey(*r[0:4]), r[4:]) for r in rows]

    async def get_workspace_settings(self, team_id: str) -> dict[str, Any] | None:
        row = await self._run(
            lambda: self.conn.execute(
                "select settings from workspace_settings where slack_team_id=?", (team_id,)
            ).fetchone()
        )
        if row is None:
            return None
        settings = json.loads(row[0])
        return settings if isinstance(settings, dict) else None

    async def save_workspace_settings(
        self, team_id: str, settings: dict[str, Any], *, updated_by: str
    ) -> None:
        text = json.dumps(settings)
        await self._run(
            lambda: self.conn.execute(
                "insert into workspace_settings (slack_team_id, settings, updated_by, updated_at)"
                " values (?, ?, ?, ?) on conflict (slack_team_id) do update set"
                " settings=excluded.settings, updated_by=excluded.updated_by,"
                " updated_at=excluded.updated_at",
                (team_id, text, updated_by, _now()),
            )
        )


def _stamp(when: datetime) -> str:
    """A time as stored (UTC, fixed width); a naive one is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _session(key: ThreadKey, row: tuple[Any, ...]) -> ChatSession:
    """A row of agent_session_id, title, created (or started) at, updated (or archived) at,
    last_run_id, last_run_status: the conversation's mapping then."""
    return ChatSession(
        key=key,
        agent_session_id=row[0],
        title=row[1],
        created_at=datetime.fromisoformat(row[2]),
        updated_at=datetime.fromisoformat(row[3]),
        last_run_id=row[4],
        last_run_status=row[5],
    )


def _escalation(row: tuple[Any, ...]) -> Escalation:
    """A row selected with `_ESCALATION_COLUMNS`."""
    return Escalation(
        id=int(row[0]),
        key=ThreadKey(*row[1:5]),
        run_id=row[5],
        specialist=row[6],
        requested_by=row[7],
        channel_id=row[8],
        message_ts=row[9],
        created_at=datetime.fromisoformat(row[10]),
        resolved_by=row[11],
        resolved_at=None if row[12] is None else datetime.fromisoformat(row[12]),
    )


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
