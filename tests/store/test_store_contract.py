"""One behavioural suite, run against every session-store backend so they cannot drift:
SQLite (file), Postgres direct (asyncpg) and Supabase (supabase-py → PostgREST stand-in)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.errors import StoreError
from bot.store.base import SessionStore, ThreadKey
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SqliteStore
from bot.store.supabase import SupabaseStore
from sandbox.postgrest import PostgrestStandin, make_jwt

KEY = ThreadKey(team_id="T1", channel_id="C1", thread_ts="1700000000.000100", user_id="U1")


@dataclass
class Backend:
    """Replicas of one backend sharing one storage, plus probes that read the storage raw."""

    name: str
    new_replica: Callable[[], Awaitable[SessionStore]]
    read_trace: Callable[[ThreadKey], Awaitable[Any]]
    count_rows: Callable[[], Awaitable[int]]
    opened: list[SessionStore] = field(default_factory=list)

    async def replica(self) -> SessionStore:
        store = await self.new_replica()
        await store.open()
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite", "postgres", "supabase"])
def backend_kind(request: pytest.FixtureRequest) -> tuple[str, Any]:
    if request.param == "sqlite":
        return ("sqlite", None)
    return (request.param, request.getfixturevalue("pg_cluster"))


async def _pg_probe(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


@pytest.fixture
async def backend(
    backend_kind: tuple[str, Any],
    tmp_path: Path,
    jwt_secret: str,
    new_database: Callable[..., Awaitable[str]],
) -> AsyncIterator[Backend]:
    kind, cluster = backend_kind
    standin: PostgrestStandin | None = None
    if kind == "sqlite":
        db_file = tmp_path / "store.db"

        async def read_trace_sqlite(key: ThreadKey) -> Any:
            with sqlite3.connect(db_file) as conn:
                row = conn.execute(
                    "select last_trace from chat_sessions where slack_team_id=? and"
                    " slack_channel_id=? and slack_thread_ts=? and slack_user_id=?",
                    (key.team_id, key.channel_id, key.thread_ts, key.user_id),
                ).fetchone()
            return None if row is None or row[0] is None else json.loads(row[0])

        async def count_sqlite() -> int:
            with sqlite3.connect(db_file) as conn:
                return int(conn.execute("select count(*) from chat_sessions").fetchone()[0])

        async def new_sqlite() -> SessionStore:
            return SqliteStore(f"sqlite:///{db_file}")

        result = Backend(kind, new_sqlite, read_trace_sqlite, count_sqlite)
    else:
        dsn = await new_database(cluster)

        async def read_trace_pg(key: ThreadKey) -> Any:
            raw = await _pg_probe(
                dsn,
                "select last_trace::text from chat_sessions where slack_team_id=$1 and"
                " slack_channel_id=$2 and slack_thread_ts=$3 and slack_user_id=$4",
                key.team_id,
                key.channel_id,
                key.thread_ts,
                key.user_id,
            )
            return None if raw is None else json.loads(raw)

        async def count_pg() -> int:
            return int(await _pg_probe(dsn, "select count(*) from chat_sessions"))

        if kind == "postgres":

            async def new_postgres() -> SessionStore:
                return PostgresStore(dsn)

            result = Backend(kind, new_postgres, read_trace_pg, count_pg)
        else:
            standin = PostgrestStandin(
                dsn.replace("//postgres@", "//authenticator@", 1), jwt_secret
            )
            await standin.start()
            service_key = make_jwt(jwt_secret, "service_role")
            url = standin.url

            async def new_supabase() -> SessionStore:
                return SupabaseStore(url, service_key)

            result = Backend(kind, new_supabase, read_trace_pg, count_pg)
    try:
        yield result
    finally:
        for store in result.opened:
            await store.close()
        if standin is not None:
            await standin.stop()


@pytest.fixture
async def store(backend: Backend) -> SessionStore:
    return await backend.replica()


async def test_unknown_thread_has_no_session(store: SessionStore) -> None:
    """A thread the bot never answered has no Powabase session mapped."""
    assert await store.get_session(KEY) is None


async def test_reserve_then_get_returns_the_mapping(store: SessionStore) -> None:
    """The session reserved for a thread is what the next message in that thread finds."""
    reserved = await store.reserve_session(KEY, "orch_sess_aaaaaaaaaaaa", "Refund window? ✓")
    found = await store.get_session(KEY)
    assert found == reserved
    assert found is not None
    assert found.key == KEY
    assert found.agent_session_id == "orch_sess_aaaaaaaaaaaa"
    assert found.title == "Refund window? ✓"
    assert found.created_at.tzinfo is not None
    assert found.updated_at >= found.created_at
    assert (found.last_run_id, found.last_run_status) == (None, None)


async def test_reserve_without_title(store: SessionStore) -> None:
    """A conversation may start without a title."""
    reserved = await store.reserve_session(KEY, "orch_sess_bbbbbbbbbbbb", None)
    assert reserved.title is None
    assert (await store.get_session(KEY)) == reserved


async def test_second_reserve_keeps_the_first_mapping(store: SessionStore) -> None:
    """A later reserve in the same thread gets the existing session, not its own id."""
    first = await store.reserve_session(KEY, "orch_sess_111111111111", "first")
    second = await store.reserve_session(KEY, "orch_sess_222222222222", "second")
    assert second.agent_session_id == "orch_sess_111111111111"
    assert second.title == "first"
    assert second.created_at == first.created_at


async def test_racing_first_messages_share_one_row(backend: Backend) -> None:
    """First messages racing on two replicas end in one conversation row, same id for all."""
    replicas = [await backend.replica(), await backend.replica()]
    results = await asyncio.gather(
        *(replicas[i % 2].reserve_session(KEY, f"orch_sess_{i:012x}", f"q{i}") for i in range(10))
    )
    assert len({r.agent_session_id for r in results}) == 1
    assert await backend.count_rows() == 1


async def test_each_key_part_is_its_own_conversation(store: SessionStore) -> None:
    """Another user, thread, channel or workspace never shares a conversation."""
    variants = [
        KEY,
        ThreadKey("T2", KEY.channel_id, KEY.thread_ts, KEY.user_id),
        ThreadKey(KEY.team_id, "C2", KEY.thread_ts, KEY.user_id),
        ThreadKey(KEY.team_id, KEY.channel_id, "1700000000.000200", KEY.user_id),
        ThreadKey(KEY.team_id, KEY.channel_id, KEY.thread_ts, "U2"),
    ]
    for i, key in enumerate(variants):
        await store.reserve_session(key, f"orch_sess_{i:012x}", None)
    found = [await store.get_session(key) for key in variants]
    assert [f.agent_session_id for f in found if f] == [
        f"orch_sess_{i:012x}" for i in range(len(variants))
    ]


async def test_set_agent_session_id_replaces_the_id(store: SessionStore) -> None:
    """When Powabase reports another session id, the next message uses that one."""
    before = await store.reserve_session(KEY, "orch_sess_reserved0000", "t")
    await store.set_agent_session_id(KEY, "orch_sess_fromstart000")
    after = await store.get_session(KEY)
    assert after is not None
    assert after.agent_session_id == "orch_sess_fromstart000"
    assert after.created_at == before.created_at
    assert after.updated_at >= before.updated_at


async def test_an_id_mapped_to_another_thread_is_refused(
    backend: Backend, store: SessionStore
) -> None:
    """A second thread can never be mapped to a session id another thread already uses."""
    other = ThreadKey(KEY.team_id, KEY.channel_id, "1700000000.000900", "U2")
    await store.reserve_session(KEY, "orch_sess_taken0000000", "first")
    with pytest.raises(StoreError):
        await store.reserve_session(other, "orch_sess_taken0000000", "second")
    assert await store.get_session(other) is None
    assert await backend.count_rows() == 1
    await store.reserve_session(other, "orch_sess_free00000000", "second")
    with pytest.raises(StoreError):
        await store.set_agent_session_id(other, "orch_sess_taken0000000")
    found = await store.get_session(other)
    assert found is not None and found.agent_session_id == "orch_sess_free00000000"
    first = await store.get_session(KEY)
    assert first is not None and first.agent_session_id == "orch_sess_taken0000000"


async def test_record_run_keeps_last_run_and_trace(backend: Backend, store: SessionStore) -> None:
    """The last run's id, status and delegation trace are stored with the conversation."""
    await store.reserve_session(KEY, "orch_sess_cccccccccccc", "t")
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    trace = {"delegations": [{"agent": "billing-agent", "steps": 2}], "at": when}
    await store.record_run(KEY, run_id="orch_run_1", status="failed", trace={"x": 1})
    await store.record_run(KEY, run_id="orch_run_2", status="completed", trace=trace)
    found = await store.get_session(KEY)
    assert found is not None
    assert (found.last_run_id, found.last_run_status) == ("orch_run_2", "completed")
    assert await backend.read_trace(KEY) == {
        "delegations": [{"agent": "billing-agent", "steps": 2}],
        "at": str(when),
    }


async def test_record_run_without_run_id(store: SessionStore) -> None:
    """A run that failed before `start` is recorded with its status and no run id."""
    await store.reserve_session(KEY, "orch_sess_dddddddddddd", "t")
    await store.record_run(KEY, run_id="orch_run_1", status="completed", trace={})
    await store.record_run(KEY, run_id=None, status="failed", trace={"error": "unreachable"})
    found = await store.get_session(KEY)
    assert found is not None
    assert (found.last_run_id, found.last_run_status) == (None, "failed")


async def test_record_run_for_unknown_thread_creates_nothing(
    backend: Backend, store: SessionStore
) -> None:
    """Recording a run never invents a conversation the bot did not reserve."""
    await store.record_run(KEY, run_id="orch_run_1", status="completed", trace={})
    assert await store.get_session(KEY) is None
    assert await backend.count_rows() == 0


async def test_claim_event_is_true_once(store: SessionStore) -> None:
    """A Slack event id is handled once; a redelivery of it is not; other ids are."""
    assert await store.claim_event("Ev01") is True
    assert await store.claim_event("Ev01") is False
    assert await store.claim_event("Ev02") is True


async def test_concurrent_claims_have_one_winner(backend: Backend) -> None:
    """The same event delivered to two replicas at once is handled by exactly one."""
    replicas = [await backend.replica(), await backend.replica()]
    results = await asyncio.gather(*(replicas[i % 2].claim_event("EvRace") for i in range(10)))
    assert sorted(results) == [False] * 9 + [True]


async def test_health_of_a_ready_store(store: SessionStore) -> None:
    """An open store on a migrated schema reports itself reachable and migrated."""
    health = await store.health()
    assert (health.backend, health.reachable, health.migrated) == (store.backend, True, True)


async def test_closed_store_raises_store_error(backend: Backend) -> None:
    """Using a store that is not open fails with StoreError, and health says unreachable."""
    store = await backend.new_replica()
    with pytest.raises(StoreError):
        await store.get_session(KEY)
    health = await store.health()
    assert (health.reachable, health.migrated) == (False, False)
