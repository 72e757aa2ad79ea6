"""Supabase-store specifics: the exact PostgREST requests it sends, error translation, health on
an unmigrated project, and that the service-role key never leaks."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
import structlog
from postgrest import APIError
from supabase import AsyncClientOptions, acreate_client

from bot.errors import StoreError
from bot.store import supabase as supabase_module
from bot.store.base import ThreadKey
from bot.store.supabase import SupabaseStore
from sandbox.postgrest import PostgrestStandin, make_jwt

KEY = ThreadKey("T1", "C1", "1700000000.000100", "U1")


@pytest.fixture
def service_key(jwt_secret: str) -> str:
    return make_jwt(jwt_secret, "service_role")


@pytest.fixture
async def store(postgrest: PostgrestStandin, service_key: str) -> AsyncIterator[SupabaseStore]:
    store = SupabaseStore(postgrest.url, service_key)
    await store.open()
    yield store
    await store.close()


async def test_requests_are_the_documented_postgrest_forms(
    store: SupabaseStore, postgrest: PostgrestStandin
) -> None:
    """Reserve, read, record and claim use upsert/select/patch forms PostgREST understands."""
    await store.reserve_session(KEY, "orch_sess_aaaaaaaaaaaa", "t")
    await store.get_session(KEY)
    await store.record_run(KEY, run_id="orch_run_1", status="completed", trace={"a": 1})
    await store.claim_event("Ev1")
    key_filters = {
        ("slack_team_id", "eq.T1"),
        ("slack_channel_id", "eq.C1"),
        ("slack_thread_ts", "eq.1700000000.000100"),
        ("slack_user_id", "eq.U1"),
    }
    reserve, read, record, claim = postgrest.requests
    assert {(r.role, r.accept_profile, r.content_profile) for r in postgrest.requests} == {
        ("service_role", "public", "public")
    }
    assert (reserve.method, reserve.table, reserve.status) == ("POST", "chat_sessions", 201)
    assert dict(reserve.query)["on_conflict"] == (
        "slack_team_id,slack_channel_id,slack_thread_ts,slack_user_id"
    )
    assert set((reserve.prefer or "").split(",")) == {
        "return=representation",
        "resolution=ignore-duplicates",
    }
    assert (read.method, read.status) == ("GET", 200)
    assert key_filters <= set(read.query) and ("limit", "1") in read.query
    assert (record.method, record.prefer, record.status) == ("PATCH", "return=minimal", 204)
    assert key_filters == {q for q in record.query if q[0].startswith("slack_")}
    assert record.body == {"last_run_id": "orch_run_1", "last_run_status": "completed",
                           "last_trace": {"a": 1}}  # fmt: skip
    assert (claim.method, claim.table, dict(claim.query)["on_conflict"]) == (
        "POST",
        "slack_events",
        "event_id",
    )


async def test_a_loser_of_the_reserve_race_reads_the_winner(
    store: SupabaseStore, postgrest: PostgrestStandin
) -> None:
    """When the upsert inserts nothing, the store reads the existing row with a GET."""
    await store.reserve_session(KEY, "orch_sess_first0000000", "first")
    again = await store.reserve_session(KEY, "orch_sess_second000000", "second")
    assert again.agent_session_id == "orch_sess_first0000000"
    assert [(r.method, r.status) for r in postgrest.requests] == [
        ("POST", 201),
        ("POST", 201),
        ("GET", 200),
    ]


async def test_server_errors_become_store_errors_without_the_key(
    postgrest: PostgrestStandin, service_key: str
) -> None:
    """A PostgREST error surfaces as StoreError (cause kept); no error or log holds the key."""
    postgrest.inject_fault("PATCH", "chat_sessions", 500)
    store = SupabaseStore(postgrest.url, service_key)
    with structlog.testing.capture_logs() as logs:
        await store.open()
        try:
            await store.reserve_session(KEY, "orch_sess_aaaaaaaaaaaa", "t")
            with pytest.raises(StoreError) as caught:
                await store.set_agent_session_id(KEY, "orch_sess_bbbbbbbbbbbb")
        finally:
            await store.close()
    assert isinstance(caught.value.__cause__, APIError)
    assert "injected fault" in str(caught.value)
    assert service_key not in str(caught.value)
    assert service_key not in repr(store)
    assert [entry["event"] for entry in logs] == ["store_opened"]
    assert all(service_key not in repr(entry) for entry in logs)


async def test_unreachable_project_is_a_store_error(service_key: str) -> None:
    """A project URL nothing listens on fails each call with StoreError; health says unreachable."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = SupabaseStore(f"http://127.0.0.1:{port}", service_key, retry_reads=False)
    await store.open()
    try:
        with pytest.raises(StoreError) as caught:
            await store.claim_event("Ev1")
        assert isinstance(caught.value.__cause__, httpx.ConnectError)
        health = await store.health()
        assert (health.reachable, health.migrated) == (False, False)
    finally:
        await store.close()


async def test_health_names_what_an_unmigrated_project_lacks(
    bootstrapped_db: str, jwt_secret: str, service_key: str
) -> None:
    """On a project without the migrations, health is reachable but not migrated, naming tables."""
    dsn = bootstrapped_db.replace("//postgres@", "//authenticator@", 1)
    async with PostgrestStandin(dsn, jwt_secret) as rest:
        store = SupabaseStore(rest.url, service_key)
        await store.open()
        try:
            health = await store.health()
        finally:
            await store.close()
    assert (health.reachable, health.migrated) == (True, False)
    assert "chat_sessions" in health.detail and "slack_events" in health.detail


async def test_old_event_ids_are_pruned(
    store: SupabaseStore, migrated_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every PRUNE_EVERY claims, event ids older than the retention window are deleted."""
    monkeypatch.setattr(supabase_module, "PRUNE_EVERY", 2)
    conn = await asyncpg.connect(migrated_db)
    try:
        await conn.execute(
            "insert into slack_events (event_id, claimed_at) values"
            " ('old', now() - interval '30 hours'), ('recent', now() - interval '2 hours')"
        )
        assert await store.claim_event("Ev1") is True
        assert await store.claim_event("Ev2") is True
        left = await conn.fetchval(
            "select string_agg(event_id, ',' order by event_id) from slack_events"
        )
    finally:
        await conn.close()
    assert left == "Ev1,Ev2,recent"


async def test_linked_slack_conversation_shows_in_the_web_app_client(
    store: SupabaseStore, postgrest: PostgrestStandin, migrated_db: str, jwt_secret: str
) -> None:
    """A web user's supabase-js-style client sees the bot's Slack row only once it is linked."""
    await store.reserve_session(KEY, "orch_sess_slack0000000", "From Slack")
    conn = await asyncpg.connect(migrated_db)
    try:
        user = await conn.fetchval(
            "insert into auth.users (email, email_confirmed_at) values ('u1@example.com', now())"
            " returning id"
        )
    finally:
        await conn.close()
    anon_key = make_jwt(jwt_secret, "anon")
    user_jwt = make_jwt(jwt_secret, "authenticated", sub=str(user))
    async with httpx.AsyncClient() as http:
        web = await acreate_client(
            postgrest.url,
            anon_key,
            options=AsyncClientOptions(
                httpx_client=http, headers={"Authorization": f"Bearer {user_jwt}"}
            ),
        )
        before = await web.table("chat_sessions").select("title").execute()
        conn = await asyncpg.connect(migrated_db)
        try:
            await conn.execute("select public.link_slack_identity('T1', 'U1', $1)", user)
        finally:
            await conn.close()
        after = await web.table("chat_sessions").select("title").execute()
    assert before.data == []
    assert after.data == [{"title": "From Slack"}]
