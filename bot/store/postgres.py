"""The Postgres-direct store: asyncpg against a database migrated with `sql/`.

For deployments that reach the database directly (no PostgREST). Connect as the tables' owner
or a role with BYPASSRLS: the bot writes rows that the web app's RLS policy would hide.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import structlog

from bot.errors import StoreBusy, StoreError
from bot.store.base import (
    EVENT_RETENTION_HOURS,
    PRUNE_EVERY,
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
from bot.store.pg_common import (
    ANSWER_COLUMNS,
    ESCALATION_COLUMNS,
    HISTORY_COLUMNS,
    REQUIRED_COLUMNS,
    SESSION_COLUMNS,
    SLACK_KEY_COLUMNS,
    UNIQUE_SESSION_ID_INDEX,
    answer_from_row,
    answer_keys_json,
    answer_params,
    aware,
    escalation_from_row,
    escalation_params,
    export_row_from_row,
    history_from_row,
    key_args,
    missing_columns,
    open_answer_from_row,
    row_key,
    session_from_row,
    session_id_lock_missing,
    settings_from_value,
    trace_json,
)

log = structlog.get_logger(__name__)

_COLUMNS = ", ".join(SESSION_COLUMNS)
_KEY_MATCH = (
    "slack_team_id = $1 and slack_channel_id = $2 and slack_thread_ts = $3 and slack_user_id = $4"
)

_SELECT = f"select {_COLUMNS} from public.chat_sessions where {_KEY_MATCH}"

# The loser of a race inserts nothing; it then reads the winner's row in a new statement
# (a CTE would read with the statement's old snapshot and could miss the winner's row).
_RESERVE = f"""
insert into public.chat_sessions
    (slack_team_id, slack_channel_id, slack_thread_ts, slack_user_id, agent_session_id, title)
values ($1, $2, $3, $4, $5, $6)
on conflict (slack_team_id, slack_channel_id, slack_thread_ts, slack_user_id) do nothing
returning {_COLUMNS}
"""

_SET_AGENT_SESSION = f"update public.chat_sessions set agent_session_id = $5 where {_KEY_MATCH}"

_RECORD_RUN = f"""
update public.chat_sessions
   set last_run_id = $5, last_run_status = $6, last_trace = $7::jsonb
 where {_KEY_MATCH}
"""

_CLAIM = (
    "insert into public.slack_events (event_id) values ($1) on conflict (event_id) do nothing"
    " returning event_id"
)
_PRUNE = "delete from public.slack_events where claimed_at < now() - make_interval(hours => $1)"

_COLUMNS_PRESENT = """
select table_name::text, column_name::text
  from information_schema.columns
 where table_schema = 'public' and table_name = any($1::text[])
"""

# 007 adds no column, so the column check cannot see it: read its traces in the catalogs
# (which PostgREST does not expose, so only this store can check them). `web_may_repoint` is
# false when there is no `authenticated` role (a database without the Supabase roles).
_SESSION_ID_LOCK = f"""
select coalesce((select indisunique from pg_index
                  where indexrelid = to_regclass('public.{UNIQUE_SESSION_ID_INDEX}')), false)
           as unique_ids,
       coalesce((select has_column_privilege(r.oid, 'public.chat_sessions'::regclass,
                                             'agent_session_id', 'UPDATE')
                   from pg_roles r where r.rolname = 'authenticated'), false)
           as web_may_repoint
"""

_TABLE_EXISTS = "select to_regclass($1) is not null"

# The support loop (sql/010-013): the atomic statements are functions shared with Supabase.
_RECORD_ANSWER = (
    "select public.answer_log_record($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb,"
    " $11::jsonb, $12)"
)
_GET_ANSWER = f"""
select {", ".join(ANSWER_COLUMNS)} from public.answer_log
 where slack_team_id = $1 and slack_channel_id = $2 and reply_ts = $3
"""
_RECORD_FEEDBACK = "select public.chat_feedback_record($1, $2, $3, $4, $5)"
_EXPORT = "select * from public.chat_feedback_export($1)"
_OPEN_ESCALATION = "select * from public.escalation_open($1, $2, $3, $4, $5, $6, $7, $8)"
_SET_ESCALATION_MESSAGE = "update public.escalations set message_ts = $2 where id = $1"
_ACTIVE_ESCALATION = f"""
select {", ".join(ESCALATION_COLUMNS)} from public.escalations
 where slack_team_id = $1 and slack_channel_id = $2 and slack_thread_ts = $3
   and resolved_at is null
"""
_RESOLVE_ESCALATION = "select * from public.escalation_resolve($1, $2)"
_RESET_SESSION = "select * from public.chat_session_reset($1, $2, $3, $4, $5)"
_SESSION_HISTORY = f"""
select {", ".join(HISTORY_COLUMNS)} from public.chat_session_history where {_KEY_MATCH}
 order by id
"""
_RECENT_SESSIONS = f"""
select {_COLUMNS}, {", ".join(SLACK_KEY_COLUMNS)} from public.chat_sessions
 where slack_team_id = $1 and slack_user_id = $2
 order by updated_at desc, created_at desc limit $3
"""
_GET_SETTINGS = "select settings from public.workspace_settings where slack_team_id = $1"
_SAVE_SETTINGS = """
insert into public.workspace_settings (slack_team_id, settings, updated_by)
values ($1, $2::jsonb, $3)
on conflict (slack_team_id) do update
   set settings = excluded.settings, updated_by = excluded.updated_by
"""

# Per replica, besides the store's pool. A reservation holds one for about a millisecond; a
# burst of final edits queues for them (that wait is not "Postgres unreachable": StoreBusy).
BUDGET_CONNECTIONS = 6
_RESERVE_BUDGET = "select public.reserve_slack_budget($1, $2, $3, $4, $5)"
_PUSH_BUDGET = "select public.push_slack_budget($1, $2)"

# Answers and leases: the atomic statements are sql/009's functions (shared with Supabase).
_CLAIM_ANSWER = "select public.slack_answer_claim($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
_RENEW_LEASES = "select * from public.slack_answer_renew($1, $2, $3::jsonb)"
_SET_REPLY = """
update public.slack_answers set reply_ts = $4, reply_native = $5
 where team_id = $1 and channel_id = $2 and message_ts = $3 and owner = $6
"""
_FINISH_ANSWER = "select public.slack_answer_finish($1, $2, $3, $4)"
_RELEASE_ANSWERS = "select public.slack_answer_release($1, $2::jsonb)"
_TAKE_OVER = "select * from public.slack_answer_take_over($1, $2, $3)"
_PRUNE_ANSWERS = "select public.prune_slack_answers(make_interval(hours => $1))"


def redacted_target(url: str) -> str:
    """`host:port/database` of a postgres:// URL, never the user name or password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable URL>"
    return f"{host}{port}{parts.path or '/'}"


class PostgresStore:
    backend = "postgres"
    shared = True

    def __init__(
        self,
        url: str,
        *,
        min_connections: int = 1,
        max_connections: int = 5,
        timeout: float = 10.0,
    ) -> None:
        if not url.startswith(("postgres://", "postgresql://")):
            raise StoreError("POWABOT_STORE must start with postgres:// or postgresql://")
        self._url = url
        self.target = redacted_target(url)
        self._min = min_connections
        self._max = max_connections
        self._timeout = timeout
        self._pool: asyncpg.Pool | None = None
        self._budget_pool: asyncpg.Pool | None = None  # Slack budget reservations (sql/008)
        self._claims = 0

    def __repr__(self) -> str:
        return f"PostgresStore({self.target!r})"

    @asynccontextmanager
    async def _translate(self, action: str) -> AsyncIterator[None]:
        """The one place asyncpg / socket errors become StoreError."""
        try:
            yield
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise StoreError(
                f"Postgres store {self.target}: {action} failed: {type(exc).__name__}: {exc}"
            ) from exc

    async def open(self) -> None:
        async with self._translate("connect"):
            try:
                self._pool = await asyncpg.create_pool(
                    self._url,
                    min_size=self._min,
                    max_size=self._max,
                    timeout=self._timeout,
                    command_timeout=self._timeout,
                )
                # Connections of their own: pacing Slack never queues behind session reads.
                self._budget_pool = await asyncpg.create_pool(
                    self._url,
                    min_size=1,
                    max_size=BUDGET_CONNECTIONS,
                    timeout=self._timeout,
                    command_timeout=self._timeout,
                )
            except ValueError as exc:  # a malformed DSN
                raise StoreError(
                    f"POWABOT_STORE is not a valid Postgres URL ({self.target})"
                ) from exc
        log.info("store_opened", backend=self.backend, target=self.target)

    async def close(self) -> None:
        if self._budget_pool is not None:
            budget_pool, self._budget_pool = self._budget_pool, None
            await budget_pool.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the Postgres store is not open")
        return self._pool

    async def get_session(self, key: ThreadKey) -> ChatSession | None:
        async with self._translate("get_session"):
            row = await self.pool.fetchrow(_SELECT, *key_args(key))
        return None if row is None else session_from_row(key, row)

    async def reserve_session(
        self, key: ThreadKey, agent_session_id: str, title: str | None
    ) -> ChatSession:
        async with self._translate("reserve_session"):
            row = await self.pool.fetchrow(_RESERVE, *key_args(key), agent_session_id, title)
            if row is None:
                row = await self.pool.fetchrow(_SELECT, *key_args(key))
        if row is None:
            raise StoreError(f"Postgres store {self.target}: reserved row vanished for {key}")
        return session_from_row(key, row)

    async def set_agent_session_id(self, key: ThreadKey, agent_session_id: str) -> None:
        async with self._translate("set_agent_session_id"):
            await self.pool.execute(_SET_AGENT_SESSION, *key_args(key), agent_session_id)

    async def record_run(
        self, key: ThreadKey, *, run_id: str | None, status: str, trace: dict[str, Any]
    ) -> None:
        async with self._translate("record_run"):
            await self.pool.execute(_RECORD_RUN, *key_args(key), run_id, status, trace_json(trace))

    async def _prune(self, statement: str, what: str) -> None:
        """Housekeeping on the claim path: a failure is logged, never fails the claim."""
        try:
            async with self._translate(f"pruning {what}"):
                await self.pool.execute(statement, EVENT_RETENTION_HOURS)
        except StoreError as exc:
            log.warning("store_prune_failed", what=what, error=str(exc))

    async def claim_event(self, event_id: str) -> bool:
        self._claims += 1
        if self._claims % PRUNE_EVERY == 0:
            await self._prune(_PRUNE, "slack_events")
        async with self._translate("claim_event"):
            claimed = await self.pool.fetchval(_CLAIM, event_id)
        return claimed is not None

    async def claim_answer(self, claim: AnswerClaim, *, owner: str, lease: float) -> bool:
        self._claims += 1
        key = claim.key
        if self._claims % PRUNE_EVERY == 0:
            await self._prune(_PRUNE_ANSWERS, "slack_answers")
        async with self._translate("claim_answer"):
            claimed = await self.pool.fetchval(
                _CLAIM_ANSWER,
                key.team_id,
                key.channel_id,
                key.message_ts,
                claim.event_id,
                claim.user_id,
                claim.question,
                claim.thread_ts,
                claim.channel_type,
                owner,
                lease,
            )
        return bool(claimed)

    async def renew_leases(
        self, keys: list[AnswerKey], *, owner: str, lease: float
    ) -> set[AnswerKey]:
        if not keys:
            return set()
        async with self._translate("renew_leases"):
            rows = await self.pool.fetch(_RENEW_LEASES, owner, lease, answer_keys_json(keys))
        return {AnswerKey(r["team_id"], r["channel_id"], r["message_ts"]) for r in rows}

    async def set_reply(self, key: AnswerKey, *, owner: str, reply_ts: str, native: bool) -> None:
        async with self._translate("set_reply"):
            await self.pool.execute(
                _SET_REPLY, key.team_id, key.channel_id, key.message_ts, reply_ts, native, owner
            )

    async def finish_answer(self, key: AnswerKey, *, owner: str) -> None:
        async with self._translate("finish_answer"):
            await self.pool.fetchval(
                _FINISH_ANSWER, owner, key.team_id, key.channel_id, key.message_ts
            )

    async def release_answers(self, keys: list[AnswerKey], *, owner: str) -> int:
        if not keys:
            return 0
        async with self._translate("release_answers"):
            released = await self.pool.fetchval(_RELEASE_ANSWERS, owner, answer_keys_json(keys))
        return int(released or 0)

    async def take_over_answers(self, *, owner: str, lease: float, limit: int) -> list[OpenAnswer]:
        async with self._translate("take_over_answers"):
            rows = await self.pool.fetch(_TAKE_OVER, owner, lease, limit)
        return [open_answer_from_row(row) for row in rows]

    async def health(self) -> StoreHealth:
        if self._pool is None:
            return StoreHealth(self.backend, False, False, f"{self.target} not open")
        try:
            async with self._translate("health check"):
                rows = await self._pool.fetch(_COLUMNS_PRESENT, list(REQUIRED_COLUMNS))
                found: dict[str, set[str]] = {}
                for table, column in rows:
                    found.setdefault(table, set()).add(column)
                missing = missing_columns(found)
                if not missing:
                    lock = await self._pool.fetchrow(_SESSION_ID_LOCK)
                    missing = session_id_lock_missing(
                        unique_ids=bool(lock and lock["unique_ids"]),
                        web_may_repoint=bool(lock and lock["web_may_repoint"]),
                    )
        except StoreError as exc:
            return StoreHealth(self.backend, False, False, str(exc))
        if missing:
            return StoreHealth(
                self.backend, True, False, f"{self.target}: missing {', '.join(missing)}"
            )
        return StoreHealth(self.backend, True, True, self.target)

    # Shared Slack budget (sql/008; bot.slack.shared_budget): one statement per reservation.

    async def reserve_budget(
        self,
        key: str,
        *,
        interval: float,
        burst: float,
        max_wait: float,
        reserve: float = 0.0,
        step_limit: float | None = None,
    ) -> float | None:
        """Seconds to wait before a Slack call on budget `key`, or None (not within
        `max_wait`: nothing reserved). Raises StoreError; StoreBusy when no connection of
        the budget pool came free within `step_limit` seconds (the statement then gets as long)."""
        pool = self._budgets()
        try:
            connection = await pool.acquire(timeout=step_limit)
        except TimeoutError as exc:
            raise StoreBusy(
                f"Postgres store {self.target}: reserve_budget: no free connection in {step_limit}s"
            ) from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise StoreError(
                f"Postgres store {self.target}: reserve_budget failed: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            async with self._translate("reserve_budget"):
                wait = await connection.fetchval(
                    _RESERVE_BUDGET, key, interval, burst, max_wait, reserve, timeout=step_limit
                )
        finally:
            await pool.release(connection)
        return None if wait is None else float(wait)

    async def push_budget(self, key: str, seconds: float) -> None:
        """Nobody spends budget `key` for `seconds` from now (Slack said 429)."""
        async with self._translate("push_budget"):
            await self._budgets().execute(_PUSH_BUDGET, key, seconds)

    def _budgets(self) -> asyncpg.Pool:
        if self._budget_pool is None:
            raise StoreError("the Postgres store is not open")
        return self._budget_pool

    async def has_table(self, name: str) -> bool:
        """Whether table `public.<name>` exists (`powabot doctor` asks about optional tables)."""
        async with self._translate(f"looking for table {name}"):
            found = await self.pool.fetchval(_TABLE_EXISTS, f"public.{name}")
        return bool(found)

    # The support loop (issue 13; sql/010-013).

    async def record_answer(self, record: AnswerRecord) -> None:
        async with self._translate("record_answer"):
            kept = await self.pool.fetchval(_RECORD_ANSWER, *answer_params(record))
        if not kept:
            log.warning("answer_not_recorded", reason="no conversation", reply_ts=record.reply_ts)

    async def get_answer(self, team_id: str, channel_id: str, reply_ts: str) -> AnswerRecord | None:
        async with self._translate("get_answer"):
            row = await self.pool.fetchrow(_GET_ANSWER, team_id, channel_id, reply_ts)
        return None if row is None else answer_from_row(row)

    async def record_feedback(self, feedback: Feedback) -> bool:
        async with self._translate("record_feedback"):
            kept = await self.pool.fetchval(
                _RECORD_FEEDBACK,
                feedback.team_id,
                feedback.channel_id,
                feedback.reply_ts,
                feedback.rater_id,
                feedback.rating,
            )
        return bool(kept)

    async def feedback_export(self, *, since: datetime | None = None) -> list[ExportRow]:
        async with self._translate("feedback_export"):
            rows = await self.pool.fetch(_EXPORT, aware(since))
        return [export_row_from_row(row) for row in rows]

    async def open_escalation(self, escalation: Escalation) -> Escalation:
        async with self._translate("open_escalation"):
            row = await self.pool.fetchrow(_OPEN_ESCALATION, *escalation_params(escalation))
        if row is None:
            raise StoreError(f"Postgres store {self.target}: open_escalation returned no row")
        return escalation_from_row(row)

    async def set_escalation_message(self, escalation_id: int, message_ts: str) -> None:
        async with self._translate("set_escalation_message"):
            await self.pool.execute(_SET_ESCALATION_MESSAGE, escalation_id, message_ts)

    async def active_escalation(self, key: ThreadKey) -> Escalation | None:
        async with self._translate("active_escalation"):
            row = await self.pool.fetchrow(
                _ACTIVE_ESCALATION, key.team_id, key.channel_id, key.thread_ts
            )
        return None if row is None else escalation_from_row(row)

    async def resolve_escalation(
        self, escalation_id: int, *, resolved_by: str
    ) -> Escalation | None:
        async with self._translate("resolve_escalation"):
            row = await self.pool.fetchrow(_RESOLVE_ESCALATION, escalation_id, resolved_by)
        return None if row is None else escalation_from_row(row)

    async def reset_session(self, key: ThreadKey, agent_session_id: str) -> ChatSession | None:
        async with self._translate("reset_session"):
            row = await self.pool.fetchrow(_RESET_SESSION, *key_args(key), agent_session_id)
        return None if row is None else session_from_row(key, row)

    async def session_history(self, key: ThreadKey) -> list[ChatSession]:
        async with self._translate("session_history"):
            rows = await self.pool.fetch(_SESSION_HISTORY, *key_args(key))
        return [history_from_row(row) for row in rows]

    async def recent_sessions(
        self, team_id: str, user_id: str, limit: int = 5
    ) -> list[ChatSession]:
        async with self._translate("recent_sessions"):
            rows = await self.pool.fetch(_RECENT_SESSIONS, team_id, user_id, limit)
        return [session_from_row(row_key(row), row) for row in rows]

    async def get_workspace_settings(self, team_id: str) -> dict[str, Any] | None:
        async with self._translate("get_workspace_settings"):
            value = await self.pool.fetchval(_GET_SETTINGS, team_id)
        return settings_from_value(value)

    async def save_workspace_settings(
        self, team_id: str, settings: dict[str, Any], *, updated_by: str
    ) -> None:
        async with self._translate("save_workspace_settings"):
            await self.pool.execute(_SAVE_SETTINGS, team_id, json.dumps(settings), updated_by)
