"""What the two Postgres-backed stores (asyncpg direct, and Supabase via PostgREST) share:
the columns they read and the schema they need, and how a row becomes a ChatSession."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bot.store.base import AnswerClaim, AnswerKey, ChatSession, OpenAnswer, ThreadKey

SESSION_COLUMNS = (
    "agent_session_id",
    "title",
    "created_at",
    "updated_at",
    "last_run_id",
    "last_run_status",
)

SLACK_KEY_COLUMNS = ("slack_team_id", "slack_channel_id", "slack_thread_ts", "slack_user_id")
SLACK_KEY_CONFLICT = ",".join(SLACK_KEY_COLUMNS)

# What `sql/` must have created for the bot to work; health() and doctor check exactly this,
# plus, on Postgres-direct only, 007's lock on agent_session_id (see session_id_lock_missing).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "chat_sessions": (
        "id",
        "user_id",
        *SESSION_COLUMNS,
        *SLACK_KEY_COLUMNS,
        "last_trace",
    ),
    "slack_events": ("event_id", "claimed_at"),
    "slack_answers": (
        "team_id",
        "channel_id",
        "message_ts",
        "event_ids",
        "question",
        "owner",
        "lease_expires_at",
        "reply_ts",
        "reply_native",
        "status",
        "attempts",
    ),
    "slack_identities": ("team_id", "slack_user_id", "email", "user_id"),
    "slack_budget": ("key", "tat"),  # 008: the Slack budget shared by the replicas
}


# 007: one row per Powabase session id, and web users may not change a row's id.
UNIQUE_SESSION_ID_INDEX = "chat_sessions_agent_session_id_key"


def session_id_lock_missing(*, unique_ids: bool, web_may_repoint: bool) -> list[str]:
    """What health() reports missing of migration 007, from what the catalogs show."""
    missing: list[str] = []
    if not unique_ids:
        missing.append(f"migration 007 (unique index {UNIQUE_SESSION_ID_INDEX})")
    if web_may_repoint:
        missing.append(
            "migration 007 (authenticated may still update chat_sessions.agent_session_id)"
        )
    return missing


def key_values(key: ThreadKey) -> dict[str, str]:
    """The Slack key of a conversation as column → value."""
    return dict(
        zip(
            SLACK_KEY_COLUMNS,
            (key.team_id, key.channel_id, key.thread_ts, key.user_id),
            strict=True,
        )
    )


def missing_columns(found: Mapping[str, set[str]]) -> list[str]:
    """`table` or `table.column` for everything REQUIRED_COLUMNS names but `found` lacks."""
    missing: list[str] = []
    for table, columns in REQUIRED_COLUMNS.items():
        if table not in found:
            missing.append(table)
            continue
        missing.extend(f"{table}.{c}" for c in columns if c not in found[table])
    return missing


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def session_from_row(key: ThreadKey, row: Mapping[str, Any]) -> ChatSession:
    """A chat_sessions row (asyncpg Record or PostgREST JSON object) as a ChatSession."""
    return ChatSession(
        key=key,
        agent_session_id=row["agent_session_id"],
        title=row["title"],
        created_at=_timestamp(row["created_at"]),
        updated_at=_timestamp(row["updated_at"]),
        last_run_id=row["last_run_id"],
        last_run_status=row["last_run_status"],
    )


def trace_json(trace: Mapping[str, Any]) -> str:
    """The trace as JSON text; values JSON lacks (datetimes, …) as their str(), like SQLite."""
    return json.dumps(trace, default=str)


def answer_keys_json(keys: list[AnswerKey]) -> str:
    """Answer keys as sql/009's functions take them: a JSON array of [team, channel, ts]."""
    return json.dumps([[k.team_id, k.channel_id, k.message_ts] for k in keys])


def open_answer_from_row(row: Mapping[str, Any]) -> OpenAnswer:
    """A `slack_answers` row just taken over (asyncpg Record or PostgREST JSON object)."""
    event_ids = list(row["event_ids"] or []) or [""]
    claim = AnswerClaim(
        key=AnswerKey(row["team_id"], row["channel_id"], row["message_ts"]),
        event_id=str(event_ids[0]),
        user_id=row["user_id"],
        question=row["question"] or "",
        thread_ts=row["thread_ts"],
        channel_type=row["channel_type"],
    )
    return OpenAnswer(
        claim,
        attempts=int(row["attempts"]),
        reply_ts=row["reply_ts"],
        reply_native=bool(row["reply_native"]),
    )
