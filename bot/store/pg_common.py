"""What the two Postgres-backed stores (asyncpg direct, and Supabase via PostgREST) share:
the columns they read and the schema they need, and how a row becomes a ChatSession."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bot.store.base import (
    QUESTION_MAX,
    AnswerClaim,
    AnswerKey,
    AnswerRecord,
    ChatSession,
    Escalation,
    ExportRow,
    OpenAnswer,
    ThreadKey,
)

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
    # 010-013: the support loop (answers kept, ratings, escalations, history, settings).
    "answer_log": (
        "id",
        "chat_session_id",
        *SLACK_KEY_COLUMNS,
        "reply_ts",
        "run_id",
        "question",
        "answer",
        "status",
        "specialists",
        "sources",
        "tokens",
        "created_at",
    ),
    "chat_feedback": (
        "chat_session_id",
        "run_id",
        "rating",
        "slack_team_id",
        "slack_channel_id",
        "reply_ts",
        "slack_user_id",
        "answer_log_id",
        "updated_at",
    ),
    "escalations": (
        "id",
        "chat_session_id",
        *SLACK_KEY_COLUMNS,
        "run_id",
        "specialist",
        "requested_by",
        "escalation_channel_id",
        "message_ts",
        "created_at",
        "resolved_by",
        "resolved_at",
    ),
    "chat_session_history": (
        "chat_session_id",
        *SLACK_KEY_COLUMNS,
        "agent_session_id",
        "title",
        "last_run_id",
        "last_run_status",
        "started_at",
        "archived_at",
    ),
    "workspace_settings": ("slack_team_id", "settings", "updated_by", "updated_at"),
}

ANSWER_COLUMNS = REQUIRED_COLUMNS["answer_log"]
ESCALATION_COLUMNS = REQUIRED_COLUMNS["escalations"]
HISTORY_COLUMNS = REQUIRED_COLUMNS["chat_session_history"]


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


def key_args(key: ThreadKey) -> tuple[str, str, str, str]:
    """The Slack key of a conversation, in the order of SLACK_KEY_COLUMNS (and KEY_PARAMS)."""
    return (key.team_id, key.channel_id, key.thread_ts, key.user_id)


def key_values(key: ThreadKey) -> dict[str, str]:
    """The Slack key of a conversation as column → value."""
    return dict(zip(SLACK_KEY_COLUMNS, key_args(key), strict=True))


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


# The support loop (issue 13): rows of sql/010-013 as the store's dataclasses. asyncpg returns
# jsonb as text and timestamps as datetimes; PostgREST returns parsed JSON and ISO strings.


def capped(text: str) -> str:
    """A question or answer as kept: at most QUESTION_MAX characters."""
    return text[:QUESTION_MAX]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _strings(value: Any) -> tuple[str, ...]:
    """A JSON array of strings (jsonb as text or parsed) as a tuple."""
    items = _json(value) or []
    return tuple(str(item) for item in items)


def aware(when: datetime | None) -> datetime | None:
    """A time for a timestamptz comparison: a naive one is taken as UTC."""
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=UTC)


def _maybe_timestamp(value: Any) -> datetime | None:
    return None if value is None else _timestamp(value)


def row_key(row: Mapping[str, Any]) -> ThreadKey:
    """The Slack key columns of a row as a ThreadKey."""
    return ThreadKey(*(row[c] for c in SLACK_KEY_COLUMNS))


def answer_params(record: AnswerRecord) -> tuple[Any, ...]:
    """`answer_log_record`'s arguments, in order (jsonb as JSON text)."""
    return (
        *key_args(record.key),
        record.reply_ts,
        record.run_id,
        capped(record.question),
        capped(record.answer),
        record.status,
        json.dumps(list(record.specialists)),
        json.dumps(list(record.sources)),
        record.tokens,
    )


# The Slack key as the parameters of sql's functions (/rpc), in the order of key_args.
KEY_PARAMS = ("p_team_id", "p_channel_id", "p_thread_ts", "p_user_id")

ANSWER_PARAMS = (
    *KEY_PARAMS,
    "p_reply_ts",
    "p_run_id",
    "p_question",
    "p_answer",
    "p_status",
    "p_specialists",
    "p_sources",
    "p_tokens",
)


def answer_from_row(row: Mapping[str, Any]) -> AnswerRecord:
    return AnswerRecord(
        key=row_key(row),
        reply_ts=row["reply_ts"],
        run_id=row["run_id"],
        question=row["question"],
        answer=row["answer"],
        status=row["status"],
        specialists=_strings(row["specialists"]),
        sources=_strings(row["sources"]),
        tokens=row["tokens"],
        created_at=_maybe_timestamp(row["created_at"]),
    )


def escalation_from_row(row: Mapping[str, Any]) -> Escalation:
    return Escalation(
        id=int(row["id"]),
        key=row_key(row),
        run_id=row["run_id"],
        specialist=row["specialist"],
        requested_by=row["requested_by"],
        channel_id=row["escalation_channel_id"],
        message_ts=row["message_ts"],
        created_at=_maybe_timestamp(row["created_at"]),
        resolved_by=row["resolved_by"],
        resolved_at=_maybe_timestamp(row["resolved_at"]),
    )


def escalation_params(escalation: Escalation) -> tuple[Any, ...]:
    """`escalation_open`'s arguments, in order."""
    return (
        *key_args(escalation.key),
        escalation.run_id,
        escalation.specialist,
        escalation.requested_by,
        escalation.channel_id,
    )


ESCALATION_PARAMS = (
    *KEY_PARAMS,
    "p_run_id",
    "p_specialist",
    "p_requested_by",
    "p_escalation_channel_id",
)


def export_row_from_row(row: Mapping[str, Any]) -> ExportRow:
    """A row of `chat_feedback_export` as an ExportRow."""
    return ExportRow(
        rated_at=_timestamp(row["rated_at"]),
        team_id=row["team_id"],
        channel_id=row["channel_id"],
        thread_ts=row["thread_ts"],
        asker_id=row["asker_id"],
        rater_id=row["rater_id"],
        rating=int(row["rating"]),
        run_id=row["run_id"],
        question=row["question"],
        answer=row["answer"],
        specialists=_strings(row["specialists"]),
        sources=_strings(row["sources"]),
        tokens=row["tokens"],
        escalations=int(row["escalations"]),
    )


def history_from_row(row: Mapping[str, Any]) -> ChatSession:
    """A `chat_session_history` row as the ChatSession it was (from start to reset)."""
    return ChatSession(
        key=row_key(row),
        agent_session_id=row["agent_session_id"],
        title=row["title"],
        created_at=_timestamp(row["started_at"]),
        updated_at=_timestamp(row["archived_at"]),
        last_run_id=row["last_run_id"],
        last_run_status=row["last_run_status"],
    )


def settings_from_value(value: Any) -> dict[str, Any] | None:
    """The `settings` jsonb (text or parsed) as a dict."""
    settings = _json(value)
    return dict(settings) if isinstance(settings, dict) else None
