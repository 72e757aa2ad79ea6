"""The Supabase store: the same tables as the Postgres store, reached through PostgREST with
supabase-py's async client and the service-role key (which bypasses RLS).

The key goes to supabase-py and nowhere else: it is never logged, never part of an error
message and not shown by repr().
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
from postgrest import APIError, ReturnMethod
from pydantic import SecretStr
from supabase import AsyncClient, AsyncClientOptions, acreate_client
from supabase._async.client import SupabaseException

from bot.errors import StoreError
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
    ANSWER_PARAMS,
    ESCALATION_COLUMNS,
    ESCALATION_PARAMS,
    HISTORY_COLUMNS,
    KEY_PARAMS,
    REQUIRED_COLUMNS,
    SESSION_COLUMNS,
    SLACK_KEY_COLUMNS,
    SLACK_KEY_CONFLICT,
    answer_from_row,
    answer_keys_json,
    answer_params,
    aware,
    escalation_from_row,
    escalation_params,
    export_row_from_row,
    history_from_row,
    key_args,
    key_values,
    open_answer_from_row,
    row_key,
    session_from_row,
    settings_from_value,
    trace_json,
)

log = structlog.get_logger(__name__)

_SELECT = ",".join(SESSION_COLUMNS)

# PostgREST codes meaning "the schema is not there": undefined table / column (Postgres), and
# PostgREST's own "not in the schema cache" codes for tables and columns.
_NOT_MIGRATED_CODES = frozenset({"42P01", "42703", "PGRST200", "PGRST204", "PGRST205"})


class SupabaseStore:
    backend = "supabase"
    shared = True

    def __init__(
        self,
        url: str,
        service_role_key: SecretStr | str,
        *,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        retry_reads: bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self._key = (
            service_role_key
            if isinstance(service_role_key, SecretStr)
            else SecretStr(service_role_key)
        )
        self._given_http = http_client
        self._timeout = timeout
        self._retry_reads = retry_reads
        self._http: httpx.AsyncClient | None = None
        self._client: AsyncClient | None = None
        self._claims = 0

    def __repr__(self) -> str:
        return f"SupabaseStore({self.url!r})"

    @asynccontextmanager
    async def _translate(self, action: str) -> AsyncIterator[None]:
        """The one place postgrest / httpx / supabase errors become StoreError."""
        try:
            yield
        except APIError as exc:
            raise StoreError(
                f"Supabase store {self.url}: {action} failed: {exc.code} {exc.message}"
            ) from exc
        except httpx.HTTPError as exc:
            raise StoreError(
                f"Supabase store {self.url}: {action} failed: {type(exc).__name__}: {exc}"
            ) from exc
        except SupabaseException as exc:
            raise StoreError(f"Supabase store {self.url}: {action}: {exc.message}") from exc
        except TimeoutError as exc:
            raise StoreError(f"Supabase store {self.url}: {action} timed out") from exc

    async def open(self) -> None:
        self._http = self._given_http or httpx.AsyncClient(timeout=self._timeout)
        options = AsyncClientOptions(
            httpx_client=self._http,
            auto_refresh_token=False,
            persist_session=False,
            postgrest_client_retry=self._retry_reads,
        )
        try:
            async with self._translate("connect"):
                self._client = await acreate_client(
                    self.url, self._key.get_secret_value(), options=options
                )
        except StoreError:
            await self.close()
            raise
        log.info("store_opened", backend=self.backend, url=self.url)

    async def close(self) -> None:
        self._client = None
        if self._http is not None and self._given_http is None:
            http, self._http = self._http, None
            await http.aclose()
        self._http = None

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            raise StoreError("the Supabase store is not open")
        return self._client

    def _first_row(self, data: list[Any], action: str) -> dict[str, Any] | None:
        """The first row of a PostgREST answer, which must be a JSON object."""
        if not data:
            return None
        if not isinstance(data[0], dict):
            raise StoreError(f"Supabase store {self.url}: {action}: unexpected answer {data[0]!r}")
        return data[0]

    async def get_session(self, key: ThreadKey) -> ChatSession | None:
        query = self.client.table("chat_sessions").select(_SELECT)
        for column, value in key_values(key).items():
            query = query.eq(column, value)
        async with self._translate("get_session"):
            response = await query.limit(1).execute()
        row = self._first_row(response.data, "get_session")
        return None if row is None else session_from_row(key, row)

    async def reserve_session(
        self, key: ThreadKey, agent_session_id: str, title: str | None
    ) -> ChatSession:
        row = {**key_values(key), "agent_session_id": agent_session_id, "title": title}
        query = (
            self.client.table("chat_sessions")
            .upsert(row, on_conflict=SLACK_KEY_CONFLICT, ignore_duplicates=True)
            .select(_SELECT)
        )
        async with self._translate("reserve_session"):
            response = await query.execute()
        inserted = self._first_row(response.data, "reserve_session")
        if inserted is not None:  # we won: PostgREST returned the new row
            return session_from_row(key, inserted)
        found = await self.get_session(key)  # someone else did: read theirs
        if found is None:
            raise StoreError(f"Supabase store {self.url}: reserved row vanished for {key}")
        return found

    async def _update(self, key: ThreadKey, values: dict[str, Any], action: str) -> None:
        query = self.client.table("chat_sessions").update(values, returning=ReturnMethod.minimal)
        for column, value in key_values(key).items():
            query = query.eq(column, value)
        async with self._translate(action):
            await query.execute()

    async def set_agent_session_id(self, key: ThreadKey, agent_session_id: str) -> None:
        await self._update(key, {"agent_session_id": agent_session_id}, "set_agent_session_id")

    async def record_run(
        self, key: ThreadKey, *, run_id: str | None, status: str, trace: dict[str, Any]
    ) -> None:
        values = {
            "last_run_id": run_id,
            "last_run_status": status,
            "last_trace": json.loads(trace_json(trace)),
        }
        await self._update(key, values, "record_run")

    async def claim_event(self, event_id: str) -> bool:
        self._claims += 1
        events = self.client.table("slack_events")
        async with self._translate("claim_event"):
            if self._claims % PRUNE_EVERY == 0:
                cutoff = datetime.now(UTC) - timedelta(hours=EVENT_RETENTION_HOURS)
                await (
                    events.delete(returning=ReturnMethod.minimal)
                    .lt("claimed_at", cutoff.isoformat())
                    .execute()
                )
            response = await (
                events.upsert(
                    {"event_id": event_id}, on_conflict="event_id", ignore_duplicates=True
                )
                .select("event_id")
                .execute()
            )
        return len(response.data) == 1

    # Answers and leases: PostgREST's query builder has no `update … returning` over a
    # subselect with `skip locked`, so the atomic statements are sql/009's functions (/rpc).

    async def _rpc(self, function: str, params: dict[str, Any], action: str) -> Any:
        async with self._translate(action):
            response = await self.client.rpc(function, params).execute()
        return response.data

    async def claim_answer(self, claim: AnswerClaim, *, owner: str, lease: float) -> bool:
        self._claims += 1
        key = claim.key
        if self._claims % PRUNE_EVERY == 0:  # housekeeping: never fails the claim
            keep = f"{EVENT_RETENTION_HOURS} hours"
            try:
                await self._rpc("prune_slack_answers", {"keep": keep}, "claim_answer (prune)")
            except StoreError as exc:
                log.warning("store_prune_failed", what="slack_answers", error=str(exc))
        claimed = await self._rpc(
            "slack_answer_claim",
            {
                "p_team_id": key.team_id,
                "p_channel_id": key.channel_id,
                "p_message_ts": key.message_ts,
                "p_event_id": claim.event_id,
                "p_user_id": claim.user_id,
                "p_question": claim.question,
                "p_thread_ts": claim.thread_ts,
                "p_channel_type": claim.channel_type,
                "p_owner": owner,
                "p_lease_seconds": lease,
            },
            "claim_answer",
        )
        return claimed is True

    async def renew_leases(
        self, keys: list[AnswerKey], *, owner: str, lease: float
    ) -> set[AnswerKey]:
        if not keys:
            return set()
        params = {
            "p_owner": owner,
            "p_lease_seconds": lease,
            "p_keys": json.loads(answer_keys_json(keys)),
        }
        rows = await self._rpc("slack_answer_renew", params, "renew_leases")
        return {AnswerKey(r["team_id"], r["channel_id"], r["message_ts"]) for r in rows or []}

    async def set_reply(self, key: AnswerKey, *, owner: str, reply_ts: str, native: bool) -> None:
        query = (
            self.client.table("slack_answers")
            .update({"reply_ts": reply_ts, "reply_native": native}, returning=ReturnMethod.minimal)
            .eq("team_id", key.team_id)
            .eq("channel_id", key.channel_id)
            .eq("message_ts", key.message_ts)
            .eq("owner", owner)
        )
        async with self._translate("set_reply"):
            await query.execute()

    async def finish_answer(self, key: AnswerKey, *, owner: str) -> None:
        params = {
            "p_owner": owner,
            "p_team_id": key.team_id,
            "p_channel_id": key.channel_id,
            "p_message_ts": key.message_ts,
        }
        await self._rpc("slack_answer_finish", params, "finish_answer")

    async def release_answers(self, keys: list[AnswerKey], *, owner: str) -> int:
        if not keys:
            return 0
        params = {"p_owner": owner, "p_keys": json.loads(answer_keys_json(keys))}
        released = await self._rpc("slack_answer_release", params, "release_answers")
        return int(released or 0)

    async def take_over_answers(self, *, owner: str, lease: float, limit: int) -> list[OpenAnswer]:
        params = {"p_owner": owner, "p_lease_seconds": lease, "p_limit": limit}
        rows = await self._rpc("slack_answer_take_over", params, "take_over_answers")
        return [open_answer_from_row(row) for row in rows or []]

    # The support loop (issue 13; sql/010-013): plain reads and writes through the table API,
    # the statements that must be atomic through sql's functions (/rpc).

    def _rows(self, data: Any, action: str) -> list[dict[str, Any]]:
        """A PostgREST answer that must be a JSON array of objects."""
        rows = data or []
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise StoreError(f"Supabase store {self.url}: {action}: unexpected answer {rows!r}")
        return rows

    async def record_answer(self, record: AnswerRecord) -> None:
        values = answer_params(record)
        params = dict(zip(ANSWER_PARAMS, values, strict=True))
        params["p_specialists"] = list(record.specialists)
        params["p_sources"] = list(record.sources)
        kept = await self._rpc("answer_log_record", params, "record_answer")
        if kept is not True:
            log.warning("answer_not_recorded", reason="no conversation", reply_ts=record.reply_ts)

    async def get_answer(self, team_id: str, channel_id: str, reply_ts: str) -> AnswerRecord | None:
        query = (
            self.client.table("answer_log")
            .select(",".join(ANSWER_COLUMNS))
            .eq("slack_team_id", team_id)
            .eq("slack_channel_id", channel_id)
            .eq("reply_ts", reply_ts)
            .limit(1)
        )
        async with self._translate("get_answer"):
            response = await query.execute()
        row = self._first_row(response.data, "get_answer")
        return None if row is None else answer_from_row(row)

    async def record_feedback(self, feedback: Feedback) -> bool:
        params = {
            "p_team_id": feedback.team_id,
            "p_channel_id": feedback.channel_id,
            "p_reply_ts": feedback.reply_ts,
            "p_rater_id": feedback.rater_id,
            "p_rating": feedback.rating,
        }
        kept = await self._rpc("chat_feedback_record", params, "record_feedback")
        return kept is True

    async def feedback_export(self, *, since: datetime | None = None) -> list[ExportRow]:
        when = aware(since)
        params = {"p_since": None if when is None else when.isoformat()}
        data = await self._rpc("chat_feedback_export", params, "feedback_export")
        return [export_row_from_row(row) for row in self._rows(data, "feedback_export")]

    async def open_escalation(self, escalation: Escalation) -> Escalation:
        params = dict(zip(ESCALATION_PARAMS, escalation_params(escalation), strict=True))
        data = await self._rpc("escalation_open", params, "open_escalation")
        rows = self._rows(data, "open_escalation")
        if not rows:
            raise StoreError(f"Supabase store {self.url}: open_escalation returned no row")
        return escalation_from_row(rows[0])

    async def set_escalation_message(self, escalation_id: int, message_ts: str) -> None:
        query = (
            self.client.table("escalations")
            .update({"message_ts": message_ts}, returning=ReturnMethod.minimal)
            .eq("id", escalation_id)
        )
        async with self._translate("set_escalation_message"):
            await query.execute()

    async def active_escalation(self, key: ThreadKey) -> Escalation | None:
        query = (
            self.client.table("escalations")
            .select(",".join(ESCALATION_COLUMNS))
            .eq("slack_team_id", key.team_id)
            .eq("slack_channel_id", key.channel_id)
            .eq("slack_thread_ts", key.thread_ts)
            .is_("resolved_at", "null")
            .limit(1)
        )
        async with self._translate("active_escalation"):
            response = await query.execute()
        row = self._first_row(response.data, "active_escalation")
        return None if row is None else escalation_from_row(row)

    async def resolve_escalation(
        self, escalation_id: int, *, resolved_by: str
    ) -> Escalation | None:
        params = {"p_id": escalation_id, "p_resolved_by": resolved_by}
        data = await self._rpc("escalation_resolve", params, "resolve_escalation")
        rows = self._rows(data, "resolve_escalation")
        return escalation_from_row(rows[0]) if rows else None

    async def reset_session(self, key: ThreadKey, agent_session_id: str) -> ChatSession | None:
        params: dict[str, str] = dict(zip(KEY_PARAMS, key_args(key), strict=True))
        params["p_agent_session_id"] = agent_session_id
        data = await self._rpc("chat_session_reset", params, "reset_session")
        rows = self._rows(data, "reset_session")
        return session_from_row(key, rows[0]) if rows else None

    async def session_history(self, key: ThreadKey) -> list[ChatSession]:
        query = self.client.table("chat_session_history").select(",".join(HISTORY_COLUMNS))
        for column, value in key_values(key).items():
            query = query.eq(column, value)
        async with self._translate("session_history"):
            response = await query.order("id").execute()
        return [history_from_row(row) for row in self._rows(response.data, "session_history")]

    async def recent_sessions(
        self, team_id: str, user_id: str, limit: int = 5
    ) -> list[ChatSession]:
        query = (
            self.client.table("chat_sessions")
            .select(",".join((*SESSION_COLUMNS, *SLACK_KEY_COLUMNS)))
            .eq("slack_team_id", team_id)
            .eq("slack_user_id", user_id)
            .order("updated_at", desc=True)
            .order("created_at", desc=True)
            .limit(limit)
        )
        async with self._translate("recent_sessions"):
            response = await query.execute()
        rows = self._rows(response.data, "recent_sessions")
        return [session_from_row(row_key(row), row) for row in rows]

    async def get_workspace_settings(self, team_id: str) -> dict[str, Any] | None:
        query = (
            self.client.table("workspace_settings")
            .select("settings")
            .eq("slack_team_id", team_id)
            .limit(1)
        )
        async with self._translate("get_workspace_settings"):
            response = await query.execute()
        row = self._first_row(response.data, "get_workspace_settings")
        return None if row is None else settings_from_value(row["settings"])

    async def save_workspace_settings(
        self, team_id: str, settings: dict[str, Any], *, updated_by: str
    ) -> None:
        row = {
            "slack_team_id": team_id,
            "settings": json.loads(json.dumps(settings)),
            "updated_by": updated_by,
        }
        query = self.client.table("workspace_settings").upsert(
            row, on_conflict="slack_team_id", returning=ReturnMethod.minimal
        )
        async with self._translate("save_workspace_settings"):
            await query.execute()

    # Shared Slack budget (sql/008; bot.slack.shared_budget): one RPC per reservation.

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
        `max_wait`: nothing reserved). Raises StoreError (also after `step_limit` seconds)."""
        params = {
            "p_key": key,
            "p_interval": interval,
            "p_burst": burst,
            "p_max_wait": max_wait,
            "p_reserve": reserve,
        }
        async with self._translate("reserve_budget"), asyncio.timeout(step_limit):
            response = await self.client.rpc("reserve_slack_budget", params).execute()
        wait = response.data
        if wait is None or wait == []:
            return None
        if not isinstance(wait, int | float):
            raise StoreError(f"Supabase store {self.url}: reserve_budget: unexpected {wait!r}")
        return float(wait)

    async def push_budget(self, key: str, seconds: float) -> None:
        """Nobody spends budget `key` for `seconds` from now (Slack said 429)."""
        params = {"p_key": key, "p_seconds": seconds}
        async with self._translate("push_budget"):
            await self.client.rpc("push_slack_budget", params).execute()

    async def has_table(self, name: str) -> bool:
        """Whether table `public.<name>` is there (`powabot doctor` asks about optional tables)."""
        query = self.client.table(name).select("*").limit(0)
        try:
            async with self._translate(f"looking for table {name}"):
                await query.execute()
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, APIError) and cause.code in _NOT_MIGRATED_CODES:
                return False
            raise
        return True

    async def health(self) -> StoreHealth:
        # Columns only: PostgREST shows no catalogs, so 007's unique index and column lock,
        # which the Postgres-direct store checks, cannot be seen from here (sql/README.md).
        if self._client is None:
            return StoreHealth(self.backend, False, False, f"{self.url} not open")
        missing: list[str] = []
        for table, columns in REQUIRED_COLUMNS.items():
            query = self._client.table(table).select(",".join(columns)).limit(0)
            try:
                async with self._translate(f"health check of {table}"):
                    await query.execute()
            except StoreError as exc:
                cause = exc.__cause__
                if isinstance(cause, APIError) and cause.code in _NOT_MIGRATED_CODES:
                    missing.append(f"{table} ({cause.message})")
                    continue
                return StoreHealth(self.backend, False, False, str(exc))
        if missing:
            return StoreHealth(
                self.backend, True, False, f"{self.url}: missing {'; '.join(missing)}"
            )
        return StoreHealth(self.backend, True, True, self.url)
