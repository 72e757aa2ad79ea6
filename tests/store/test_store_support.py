"""The support loop's store (issue 13), the same suite on every backend: SQLite, Postgres direct
and Supabase (supabase-py → PostgREST stand-in → sql/010-013).

Delivered answers are kept by their Slack message; one rating per rater and answer; ratings of a
deleted conversation are dropped; one open escalation per thread, closed by the first resolver;
a fresh start keeps the old mapping as history; recent conversations; workspace settings; the
feedback export.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import UTC
from typing import Any

import pytest

from bot.errors import StoreError
from bot.store.base import (
    QUESTION_MAX,
    AnswerRecord,
    Escalation,
    Feedback,
    SessionStore,
    ThreadKey,
    new_agent_session_id,
)
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SqliteStore
from bot.store.supabase import SupabaseStore
from tests.store.test_store_contract import Backend, backend, backend_kind, store

__all__ = ["backend", "backend_kind", "store"]  # the contract suite's fixtures

KEY = ThreadKey("T1", "C1", "1700000000.000100", "U1")
OTHER_THREAD = ThreadKey("T1", "C1", "1700000000.000900", "U1")
SAME_THREAD_OTHER_USER = ThreadKey("T1", "C1", "1700000000.000100", "U2")
REPLY = "1700000001.000100"


ANSWER = AnswerRecord(
    key=KEY,
    reply_ts=REPLY,
    run_id="orch_run_1",
    question="How long is the refund window?",
    answer="30 days from delivery.",
    status="done",
    specialists=("billing-agent",),
    sources=("Refunds (Billing KB) <https://kb.example/refunds>",),
    tokens=812,
)


def answer(**changes: Any) -> AnswerRecord:
    return replace(ANSWER, **changes)


async def answered(store: SessionStore, record: AnswerRecord) -> None:
    """A conversation with one delivered answer, as the bot leaves it."""
    await store.reserve_session(record.key, new_agent_session_id(), record.question)
    await store.record_answer(record)


def rating(rater: str, value: int, reply_ts: str = REPLY) -> Feedback:
    return Feedback(KEY.team_id, KEY.channel_id, reply_ts, rater, value)


def escalation(key: ThreadKey = KEY, requested_by: str = "U1") -> Escalation:
    return Escalation(
        id=None,
        key=key,
        run_id="orch_run_1",
        specialist="billing-agent",
        requested_by=requested_by,
        channel_id="CESC",
    )


async def delete_conversation(store: SessionStore, key: ThreadKey) -> None:
    """What the web app (or an admin) does: the conversation row goes, nothing else is told."""
    args = (key.team_id, key.channel_id, key.thread_ts, key.user_id)
    if isinstance(store, SqliteStore):
        # Another connection, without the store's foreign-key cascade: rows may be left behind.
        with sqlite3.connect(store.path) as conn:
            conn.execute(
                "delete from chat_sessions where slack_team_id=? and slack_channel_id=?"
                " and slack_thread_ts=? and slack_user_id=?",
                args,
            )
        return
    if isinstance(store, PostgresStore):
        await store.pool.execute(
            "delete from chat_sessions where slack_team_id=$1 and slack_channel_id=$2"
            " and slack_thread_ts=$3 and slack_user_id=$4",
            *args,
        )
        return
    assert isinstance(store, SupabaseStore)
    await (
        store.client.table("chat_sessions")
        .delete()
        .eq("slack_team_id", key.team_id)
        .eq("slack_channel_id", key.channel_id)
        .eq("slack_thread_ts", key.thread_ts)
        .eq("slack_user_id", key.user_id)
        .execute()
    )


# --- answers -----------------------------------------------------------------------------------


async def test_a_delivered_answer_is_found_by_its_message(store: SessionStore) -> None:
    """A click on an answer message finds the question, answer, run, specialists and sources."""
    record = answer()
    await answered(store, record)
    found = await store.get_answer(KEY.team_id, KEY.channel_id, REPLY)
    assert found is not None and found.created_at is not None
    assert replace(found, created_at=None) == record
    assert found.created_at.tzinfo is not None
    assert await store.get_answer(KEY.team_id, KEY.channel_id, "1700000009.000000") is None
    assert await store.get_answer(KEY.team_id, "C2", REPLY) is None


async def test_recording_the_same_answer_again_replaces_it(store: SessionStore) -> None:
    """An answer recorded again for the same message (a takeover finishing it) keeps the last."""
    await answered(store, answer(answer="partial", status="failed"))
    await store.record_answer(answer(answer="complete", status="done", tokens=None))
    found = await store.get_answer(KEY.team_id, KEY.channel_id, REPLY)
    assert found is not None
    assert (found.answer, found.status, found.tokens) == ("complete", "done", None)


async def test_an_answer_without_a_conversation_is_not_kept(store: SessionStore) -> None:
    """Recording an answer for a thread with no conversation keeps nothing and does not fail."""
    await store.record_answer(answer())
    assert await store.get_answer(KEY.team_id, KEY.channel_id, REPLY) is None


async def test_long_texts_are_capped(store: SessionStore) -> None:
    """A question or answer longer than a Slack message is kept to QUESTION_MAX characters."""
    await answered(
        store, answer(question="q" * (QUESTION_MAX + 5), answer="a" * (QUESTION_MAX + 5))
    )
    found = await store.get_answer(KEY.team_id, KEY.channel_id, REPLY)
    assert found is not None
    assert (len(found.question), len(found.answer)) == (QUESTION_MAX, QUESTION_MAX)


# --- feedback and its export -------------------------------------------------------------------


async def test_a_second_rating_by_the_same_user_replaces_the_first(store: SessionStore) -> None:
    """One rater has one rating per answer (the last click); another rater has their own."""
    await answered(store, answer())
    assert await store.record_feedback(rating("U1", 1)) is True
    assert await store.record_feedback(rating("U1", -1)) is True
    assert await store.record_feedback(rating("U7", 1)) is True
    rows = await store.feedback_export()
    assert sorted((r.rater_id, r.rating) for r in rows) == [("U1", -1), ("U7", 1)]


async def test_rating_an_unknown_answer_is_dropped(store: SessionStore) -> None:
    """A click on a message the store does not know is dropped (False), nothing is exported."""
    await answered(store, answer())
    assert await store.record_feedback(rating("U1", 1, reply_ts="1700000009.000000")) is False
    assert await store.feedback_export() == []


async def test_a_deleted_conversation_drops_its_answers_and_feedback(store: SessionStore) -> None:
    """Once a conversation is deleted its answers are gone, ratings of it are dropped and it
    leaves the export."""
    await answered(store, answer())
    assert await store.record_feedback(rating("U1", 1)) is True
    await delete_conversation(store, KEY)
    assert await store.get_answer(KEY.team_id, KEY.channel_id, REPLY) is None
    assert await store.record_feedback(rating("U1", -1)) is False
    assert await store.feedback_export() == []


async def test_export_rows_carry_the_answer_and_the_escalations(store: SessionStore) -> None:
    """Each rating comes with its question, answer, asker, run, specialists, sources, tokens
    and how often that conversation was escalated, oldest rating first."""
    await answered(store, answer())
    other = answer(
        key=OTHER_THREAD,
        reply_ts="1700000002.000100",
        question="Reset my password?",
        answer="Use the link.",
        specialists=(),
        sources=(),
        tokens=None,
        run_id=None,
    )
    await answered(store, other)
    first = await store.open_escalation(escalation())
    await store.resolve_escalation(first.id or 0, resolved_by="UAGENT")
    await store.open_escalation(escalation())
    assert await store.record_feedback(rating("U1", -1)) is True
    assert await store.record_feedback(rating("U5", 1, reply_ts="1700000002.000100")) is True
    rows = await store.feedback_export()
    assert [(r.question, r.rater_id) for r in rows] == [
        ("How long is the refund window?", "U1"),
        ("Reset my password?", "U5"),
    ]
    row = rows[0]
    assert (row.team_id, row.channel_id, row.thread_ts, row.asker_id) == (
        KEY.team_id,
        KEY.channel_id,
        KEY.thread_ts,
        KEY.user_id,
    )
    assert (row.rating, row.run_id, row.answer, row.tokens, row.escalations) == (
        -1,
        "orch_run_1",
        "30 days from delivery.",
        812,
        2,
    )
    assert row.specialists == ("billing-agent",)
    assert row.sources == ("Refunds (Billing KB) <https://kb.example/refunds>",)
    assert row.rated_at.tzinfo is not None
    second = rows[1]
    assert (second.run_id, second.specialists, second.sources, second.tokens) == (
        None,
        (),
        (),
        None,
    )
    assert second.escalations == 0
    assert rows[0].rated_at <= rows[1].rated_at


async def test_export_since_filters_on_the_rating_time(store: SessionStore) -> None:
    """`--since` keeps the ratings given at or after it; a changed rating counts from its
    last click."""
    await answered(store, answer())
    await store.record_feedback(rating("U1", 1))
    await store.record_feedback(rating("U2", 1))
    await store.record_feedback(rating("U3", -1))
    everything = await store.feedback_export()
    assert [r.rater_id for r in everything] == ["U1", "U2", "U3"]
    since = everything[1].rated_at
    assert [r.rater_id for r in await store.feedback_export(since=since)] == ["U2", "U3"]
    await store.record_feedback(rating("U1", -1))  # U1 changes their mind: now the newest
    later = await store.feedback_export(since=since)
    assert [(r.rater_id, r.rating) for r in later] == [("U2", 1), ("U3", -1), ("U1", -1)]
    naive_utc = since.astimezone(UTC).replace(tzinfo=None)  # a naive time is taken as UTC
    assert len(await store.feedback_export(since=naive_utc)) == 3


# --- escalations -------------------------------------------------------------------------------


async def test_one_open_escalation_per_thread(store: SessionStore) -> None:
    """A second request for a person in the same thread (by anyone) gets the open escalation
    back; the whole thread is escalated; another thread is not."""
    await answered(store, answer())
    opened = await store.open_escalation(escalation())
    assert opened.id is not None and opened.created_at is not None
    assert (opened.key, opened.requested_by, opened.channel_id) == (KEY, "U1", "CESC")
    assert (opened.run_id, opened.specialist, opened.resolved_at) == (
        "orch_run_1",
        "billing-agent",
        None,
    )
    again = await store.open_escalation(escalation(requested_by="U9"))
    assert again == opened
    by_other_user = await store.open_escalation(escalation(key=SAME_THREAD_OTHER_USER))
    assert by_other_user.id == opened.id
    assert await store.active_escalation(KEY) == opened
    assert await store.active_escalation(SAME_THREAD_OTHER_USER) == opened
    assert await store.active_escalation(OTHER_THREAD) is None


async def test_racing_requests_open_one_escalation(backend: Backend) -> None:
    """Requests for a person racing on two replicas end in one open escalation."""
    replicas = [await backend.replica(), await backend.replica()]
    await answered(replicas[0], answer())
    results = await asyncio.gather(
        *(replicas[i % 2].open_escalation(escalation(requested_by=f"U{i}")) for i in range(8))
    )
    assert len({r.id for r in results}) == 1


async def test_first_resolver_wins(store: SessionStore) -> None:
    """ "Mark resolved" closes the escalation once: the first click is recorded, a later one
    gets None; the thread is no longer escalated and may be escalated again."""
    await answered(store, answer())
    opened = await store.open_escalation(escalation())
    assert opened.id is not None
    resolved = await store.resolve_escalation(opened.id, resolved_by="UAGENT1")
    assert resolved is not None and resolved.resolved_at is not None
    assert (resolved.id, resolved.resolved_by) == (opened.id, "UAGENT1")
    assert await store.resolve_escalation(opened.id, resolved_by="UAGENT2") is None
    assert await store.resolve_escalation(opened.id + 1000, resolved_by="UAGENT2") is None
    assert await store.active_escalation(KEY) is None
    reopened = await store.open_escalation(escalation())
    assert reopened.id != opened.id and reopened.resolved_at is None


async def test_racing_resolvers_have_one_winner(backend: Backend) -> None:
    """Two agents clicking "Mark resolved" at once on two replicas: exactly one wins."""
    replicas = [await backend.replica(), await backend.replica()]
    await answered(replicas[0], answer())
    opened = await replicas[0].open_escalation(escalation())
    assert opened.id is not None
    results = await asyncio.gather(
        *(replicas[i % 2].resolve_escalation(opened.id, resolved_by=f"UA{i}") for i in range(6))
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1


async def test_escalation_message_is_remembered(store: SessionStore) -> None:
    """The escalation message posted in the support channel is kept with the escalation."""
    await answered(store, answer())
    opened = await store.open_escalation(escalation())
    assert opened.id is not None and opened.message_ts is None
    await store.set_escalation_message(opened.id, "1700000005.000100")
    active = await store.active_escalation(KEY)
    assert active is not None and active.message_ts == "1700000005.000100"


async def test_escalation_without_a_conversation_is_still_recorded(store: SessionStore) -> None:
    """Someone the bot never answered may ask for a person in a thread: it is escalated."""
    opened = await store.open_escalation(escalation(key=SAME_THREAD_OTHER_USER))
    assert opened.id is not None
    assert await store.active_escalation(SAME_THREAD_OTHER_USER) == opened


# --- fresh starts ------------------------------------------------------------------------------


async def test_reset_keeps_history_and_maps_the_new_id(store: SessionStore) -> None:
    """ "New conversation" maps the thread to a new Powabase session; the old mappings stay
    in the history, oldest first, each with its last run."""
    first = await store.reserve_session(KEY, "orch_sess_first0000000", "Refunds?")
    await store.record_run(KEY, run_id="orch_run_1", status="done", trace={})
    reset = await store.reset_session(KEY, "orch_sess_second000000")
    assert reset is not None
    assert (reset.key, reset.agent_session_id, reset.title) == (
        KEY,
        "orch_sess_second000000",
        "Refunds?",
    )
    assert (reset.last_run_id, reset.last_run_status) == (None, None)
    assert reset.created_at == first.created_at
    assert await store.get_session(KEY) == reset
    await store.reset_session(KEY, "orch_sess_third0000000")
    history = await store.session_history(KEY)
    assert [(h.agent_session_id, h.last_run_id) for h in history] == [
        ("orch_sess_first0000000", "orch_run_1"),
        ("orch_sess_second000000", None),
    ]
    assert all(h.key == KEY for h in history)
    assert history[0].created_at == first.created_at
    assert history[1].created_at == history[0].updated_at  # started when the first was reset
    current = await store.get_session(KEY)
    assert current is not None and current.agent_session_id == "orch_sess_third0000000"
    assert await store.session_history(SAME_THREAD_OTHER_USER) == []


async def test_reset_of_an_unknown_thread_does_nothing(store: SessionStore) -> None:
    """A reset where the bot never answered has nothing to reset: None, no history."""
    assert await store.reset_session(KEY, "orch_sess_new000000000") is None
    assert await store.get_session(KEY) is None
    assert await store.session_history(KEY) == []


async def test_reset_to_an_id_in_use_changes_nothing(store: SessionStore) -> None:
    """A new id already mapped to another thread is refused; mapping and history stay."""
    await store.reserve_session(KEY, "orch_sess_mine00000000", "t")
    await store.reserve_session(OTHER_THREAD, "orch_sess_taken0000000", "t")
    with pytest.raises(StoreError):
        await store.reset_session(KEY, "orch_sess_taken0000000")
    current = await store.get_session(KEY)
    assert current is not None and current.agent_session_id == "orch_sess_mine00000000"
    assert await store.session_history(KEY) == []


# --- App Home: recent conversations and settings -----------------------------------------------


async def test_recent_sessions_most_recent_first_and_limited(store: SessionStore) -> None:
    """A user's conversations in a workspace, most recently active first, at most `limit`;
    never another user's or another workspace's."""
    keys = [ThreadKey("T1", "C1", f"1700000000.00010{i}", "U1") for i in range(3)]
    for i, key in enumerate(keys):
        await store.reserve_session(key, f"orch_sess_recent{i:06d}", f"question {i}")
    await store.reserve_session(ThreadKey("T1", "C1", "1.1", "U2"), "orch_sess_otheruser0", None)
    await store.reserve_session(ThreadKey("T2", "C1", "1.1", "U1"), "orch_sess_otherteam0", None)
    await store.record_run(keys[0], run_id="orch_run_9", status="done", trace={})
    recent = await store.recent_sessions("T1", "U1")
    assert [s.key for s in recent] == [keys[0], keys[2], keys[1]]
    assert (recent[0].title, recent[0].last_run_id) == ("question 0", "orch_run_9")
    limited = await store.recent_sessions("T1", "U1", limit=2)
    assert [s.key for s in limited] == [keys[0], keys[2]]
    assert await store.recent_sessions("T1", "U404") == []


async def test_workspace_settings_round_trip(store: SessionStore) -> None:
    """Settings an admin saves are what the bot reads back; saving again replaces them; a
    workspace that never saved has none."""
    assert await store.get_workspace_settings("T1") is None
    settings = {
        "dms": False,
        "channels": ["C1", "C2"],
        "usergroups": [],
        "escalation_channels": {"billing-agent": "CBILL"},
        "prompts": ["What is the refund window? ✓"],
    }
    await store.save_workspace_settings("T1", settings, updated_by="UADMIN")
    assert await store.get_workspace_settings("T1") == settings
    await store.save_workspace_settings("T1", {"dms": True}, updated_by="UADMIN2")
    assert await store.get_workspace_settings("T1") == {"dms": True}
    assert await store.get_workspace_settings("T2") is None
