"""sql/010-013 on a real PostgreSQL with the Supabase shim: what a signed-in web user (the
`authenticated` role with a JWT `sub`), the anon key and the bot (service_role) may see and do
with answers, ratings, escalations, history and workspace settings; and the races the
functions settle."""

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest

from tests.store.test_store_migrations import SLACK_ROW, _new_user, _race, _visible, admin

__all__ = ["admin"]  # the migrations suite's fixture

RECORD_ANSWER = (
    "select public.answer_log_record($1, $2, $3, $4, $5, 'orch_run_1', 'q', 'a', 'done',"
    " '[\"billing-agent\"]'::jsonb, '[]'::jsonb, 10)"
)
RECORD_FEEDBACK = "select public.chat_feedback_record($1, $2, $3, $4, $5)"
OPEN_ESCALATION = (
    "select id from public.escalation_open($1, $2, $3, $4, 'orch_run_1', 'billing-agent', $4,"
    " 'CESC')"
)


async def _slack_user_with_history(
    admin: asyncpg.Connection, slack_user: str, owner: uuid.UUID | None, thread_ts: str
) -> uuid.UUID:
    """A Slack conversation (linked to `owner` when given) with one answer, one rating by a
    colleague, one escalation and one reset; returns its chat_sessions id."""
    if owner is not None:
        await admin.execute("select public.link_slack_identity('T1', $1, $2)", slack_user, owner)
    session_id: uuid.UUID = await admin.fetchval(
        SLACK_ROW, "T1", "C1", thread_ts, slack_user, f"orch_sess_{slack_user.lower():0>22}", "q"
    )
    reply_ts = f"{thread_ts}9"
    assert await admin.fetchval(RECORD_ANSWER, "T1", "C1", thread_ts, slack_user, reply_ts)
    assert await admin.fetchval(RECORD_FEEDBACK, "T1", "C1", reply_ts, "UCOLLEAGUE", -1)
    assert await admin.fetchval(OPEN_ESCALATION, "T1", "C1", thread_ts, slack_user)
    await admin.execute(
        "select public.chat_session_reset('T1', 'C1', $1, $2, $3)",
        thread_ts,
        slack_user,
        f"orch_sess_new{slack_user.lower():0>19}",
    )
    return session_id


SUPPORT_TABLES = ("answer_log", "chat_feedback", "escalations", "chat_session_history")


async def test_web_users_see_only_the_support_rows_of_their_own_conversations(
    admin: asyncpg.Connection, authenticator_dsn: str
) -> None:
    """A linked web user sees the answers, Slack ratings (whoever rated), escalations and
    history of their own conversations, and none of another user's or an unlinked one's."""
    alice = await _new_user(admin, "alice@example.com")
    bob = await _new_user(admin, "bob@example.com")
    mine = await _slack_user_with_history(admin, "UALICE", alice, "1.1")
    theirs = await _slack_user_with_history(admin, "UBOB", bob, "2.1")
    await _slack_user_with_history(admin, "UNOBODY", None, "3.1")
    for table in SUPPORT_TABLES:
        assert await admin.fetchval(f"select count(*) from public.{table}") == 3, table
        seen = await _visible(
            authenticator_dsn,
            "authenticated",
            alice,
            f"select chat_session_id from public.{table}",
        )
        assert [r["chat_session_id"] for r in seen] == [mine], table
        seen = await _visible(
            authenticator_dsn, "authenticated", bob, f"select chat_session_id from public.{table}"
        )
        assert [r["chat_session_id"] for r in seen] == [theirs], table
    ratings = await _visible(
        authenticator_dsn,
        "authenticated",
        alice,
        "select slack_user_id, rating, source from public.chat_feedback",
    )
    assert [tuple(r) for r in ratings] == [("UCOLLEAGUE", -1, "slack")]


async def test_web_users_cannot_write_support_rows(
    admin: asyncpg.Connection, authenticator_dsn: str
) -> None:
    """A signed-in user cannot plant a Slack rating, an answer, an escalation or history, nor
    resolve an escalation; rating their own conversation from the web still works."""
    alice = await _new_user(admin, "alice@example.com")
    session_id = await _slack_user_with_history(admin, "UALICE", alice, "1.1")
    planted = (
        "insert into public.chat_feedback (chat_session_id, rating, source, slack_team_id,"
        " slack_channel_id, reply_ts, slack_user_id) values ($1, 1, 'web', 'T1', 'C1', '1.19',"
        " 'UALICE')",
        "insert into public.answer_log (chat_session_id, slack_team_id, slack_channel_id,"
        " slack_thread_ts, slack_user_id, reply_ts, question, answer, status)"
        " values ($1, 'T1', 'C1', '1.1', 'UALICE', '9.9', 'q', 'a', 'done')",
        "insert into public.escalations (chat_session_id, slack_team_id, slack_channel_id,"
        " slack_thread_ts, slack_user_id, requested_by, escalation_channel_id)"
        " values ($1, 'T1', 'C1', '1.1', 'UALICE', 'UALICE', 'CESC')",
        "insert into public.chat_session_history (chat_session_id, agent_session_id, started_at)"
        " values ($1, 'orch_sess_x', now())",
        "update public.escalations set resolved_by = 'UALICE', resolved_at = now()"
        " where chat_session_id = $1",
    )
    for sql in planted:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await _visible(authenticator_dsn, "authenticated", alice, sql, session_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # 006's policy: web ratings only
        await _visible(
            authenticator_dsn,
            "authenticated",
            alice,
            "insert into public.chat_feedback (chat_session_id, rating, source)"
            " values ($1, 1, 'slack')",
            session_id,
        )
    await _visible(
        authenticator_dsn,
        "authenticated",
        alice,
        "insert into public.chat_feedback (chat_session_id, rating) values ($1, 1)",
        session_id,
    )
    assert await admin.fetchval("select count(*) from public.chat_feedback") == 2
    assert await admin.fetchval("select count(*) from public.escalations") == 1


async def test_workspace_settings_are_the_bots_only(
    admin: asyncpg.Connection, authenticator_dsn: str
) -> None:
    """Neither a signed-in user nor the anon key can read or write workspace settings; the
    service role can."""
    await admin.execute(
        "insert into public.workspace_settings (slack_team_id, settings, updated_by)"
        " values ('T1', $1::jsonb, 'UADMIN')",
        json.dumps({"dms": False}),
    )
    alice = await _new_user(admin, "alice@example.com")
    for role, sub in (("authenticated", alice), ("anon", None)):
        for sql in (
            "select * from public.workspace_settings",
            "insert into public.workspace_settings (slack_team_id) values ('T2')",
            "update public.workspace_settings set settings = '{}'",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await _visible(authenticator_dsn, role, sub, sql)
    rows = await _visible(
        authenticator_dsn, "service_role", None, "select settings from public.workspace_settings"
    )
    assert [json.loads(r["settings"]) for r in rows] == [{"dms": False}]


async def test_anon_reads_no_support_rows(
    admin: asyncpg.Connection, authenticator_dsn: str
) -> None:
    """The anon key reads no answer, rating, escalation or history."""
    await _slack_user_with_history(admin, "UALICE", await _new_user(admin, "a@example.com"), "1.1")
    for table in SUPPORT_TABLES:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await _visible(authenticator_dsn, "anon", None, f"select * from public.{table}")


async def test_support_functions_are_the_bots_only(
    admin: asyncpg.Connection, authenticator_dsn: str
) -> None:
    """A signed-in user cannot call the bot's functions: record answers or ratings, open or
    resolve escalations, reset a conversation or export everyone's feedback."""
    mallory = await _new_user(admin, "mallory@example.com")
    for call in (
        "select public.answer_log_record('T1', 'C1', '1.1', 'U1', '1.2', null, 'q', 'a', 'done',"
        " '[]', '[]', null)",
        "select public.chat_feedback_record('T1', 'C1', '1.2', 'U1', 1)",
        "select * from public.chat_feedback_export()",
        "select * from public.escalation_open('T1', 'C1', '1.1', 'U1', null, null, 'U1', 'C9')",
        "select * from public.escalation_resolve(1, 'U1')",
        "select * from public.chat_session_reset('T1', 'C1', '1.1', 'U1', 'orch_sess_mine')",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await _visible(authenticator_dsn, "authenticated", mallory, call)


async def test_a_racing_escalation_request_gets_the_open_one(
    admin: asyncpg.Connection, authenticator_dsn: str
) -> None:
    """Two requests for a person in one thread at once: the second waits for the first and
    then gets its escalation back, not a second one."""
    await admin.fetchval(SLACK_ROW, "T1", "C1", "1.1", "U1", "orch_sess_race00000000", "q")
    won, lost = await _race(admin, authenticator_dsn, OPEN_ESCALATION, "T1", "C1", "1.1", "U1")
    assert won is not None and lost == won
    assert await admin.fetchval("select count(*) from public.escalations") == 1


async def test_a_racing_resolver_loses(admin: asyncpg.Connection, authenticator_dsn: str) -> None:
    """Two "Mark resolved" clicks at once: the first resolver is kept, the second gets nothing."""
    await admin.fetchval(SLACK_ROW, "T1", "C1", "1.1", "U1", "orch_sess_race00000000", "q")
    opened = await admin.fetchval(OPEN_ESCALATION, "T1", "C1", "1.1", "U1")
    won, lost = await _race(
        admin,
        authenticator_dsn,
        "select resolved_by from public.escalation_resolve($1, $2)",
        opened,
        "UAGENT",
    )
    assert (won, lost) == ("UAGENT", None)


async def test_deleting_a_conversation_deletes_its_support_rows(
    admin: asyncpg.Connection,
) -> None:
    """A deleted conversation takes its answers, ratings, escalations and history with it."""
    session_id = await _slack_user_with_history(admin, "UALICE", None, "1.1")
    await admin.execute("delete from public.chat_sessions where id = $1", session_id)
    for table in SUPPORT_TABLES:
        assert await admin.fetchval(f"select count(*) from public.{table}") == 0, table
