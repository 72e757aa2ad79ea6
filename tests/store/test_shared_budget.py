"""sql/008: the shared Slack budget in Postgres (GCRA on the database clock), directly and
through PostgREST, as the stores call it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from bot.errors import StoreError
from bot.store.postgres import PostgresStore
from bot.store.supabase import SupabaseStore
from sandbox.postgrest import PostgrestStandin, make_jwt

RESERVE = "select public.reserve_slack_budget($1, $2, $3, $4, $5)"
TAT = "select extract(epoch from tat - clock_timestamp()) from public.slack_budget where key = $1"


@pytest.fixture
async def conn(migrated_db: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(migrated_db)
    yield connection
    await connection.close()


async def reserve(
    conn: asyncpg.Connection,
    key: str,
    *,
    interval: float,
    burst: float,
    max_wait: float = 0.0,
    keep: float = 0.0,
) -> float | None:
    wait = await conn.fetchval(RESERVE, key, interval, burst, max_wait, keep)
    return None if wait is None else float(wait)


async def test_a_burst_goes_at_once_then_calls_are_paced_one_interval_apart(
    conn: asyncpg.Connection,
) -> None:
    """Three calls of a burst of 3 need no wait; the next ones wait one more interval each."""
    waits = [await reserve(conn, "update:T1", interval=10, burst=3, max_wait=60) for _ in range(6)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    for n, wait in enumerate(waits[3:], start=1):
        assert wait is not None and 10 * n - 0.5 < wait <= 10 * n


async def test_a_wait_beyond_max_wait_reserves_nothing(conn: asyncpg.Connection) -> None:
    """A refused reservation answers NULL and leaves the budget exactly as it was."""
    for _ in range(2):
        assert await reserve(conn, "post:C1", interval=10, burst=2) == 0.0
    before = await conn.fetchval("select tat from public.slack_budget where key = 'post:C1'")
    assert await reserve(conn, "post:C1", interval=10, burst=2, max_wait=5) is None
    assert await conn.fetchval("select tat from public.slack_budget where key = 'post:C1'") == (
        before
    )
    wait = await reserve(conn, "post:C1", interval=10, burst=2, max_wait=15)
    assert wait is not None and 9 < wait <= 10


async def test_a_reserve_keeps_tokens_free_for_calls_that_pass_none(
    conn: asyncpg.Connection,
) -> None:
    """Progress edits (reserve 1 of a burst of 3) stop one token early; a final edit still
    goes at once."""
    progress = [await reserve(conn, "update:T2", interval=10, burst=3, keep=1) for _ in range(3)]
    assert progress == [0.0, 0.0, None]
    assert await reserve(conn, "update:T2", interval=10, burst=3, keep=0) == 0.0
    assert await reserve(conn, "update:T2", interval=10, burst=3, keep=0) is None


async def test_a_push_holds_every_caller_back_and_never_shortens_a_pause(
    conn: asyncpg.Connection,
) -> None:
    """After a 429 pushed the key by 30 s, nobody gets a slot before then; a later, shorter
    push does not shorten it."""
    await conn.execute("select public.push_slack_budget('append:T1', 30)")
    await conn.execute("select public.push_slack_budget('append:T1', 1)")
    assert await reserve(conn, "append:T1", interval=0.5, burst=1, max_wait=10) is None
    wait = await reserve(conn, "append:T1", interval=0.5, burst=1, max_wait=60)
    assert wait is not None and 29 < wait <= 30


async def test_concurrent_clients_on_one_key_lose_no_reservation(migrated_db: str) -> None:
    """16 connections x 25 reservations at once on one key move its tat by exactly 400
    intervals: every caller got a slot of its own."""
    admin = await asyncpg.connect(migrated_db)
    try:
        start = await admin.fetchval(
            "insert into public.slack_budget (key, tat) values ('update:HOT', "
            "date_trunc('second', clock_timestamp()) + interval '1 hour') returning tat"
        )
        pool = await asyncpg.create_pool(migrated_db, min_size=16, max_size=16)
        try:

            async def client() -> list[float]:
                async with pool.acquire() as conn:
                    got = []
                    for _ in range(25):
                        wait = await reserve(
                            conn, "update:HOT", interval=0.001, burst=1, max_wait=1e5
                        )
                        assert wait is not None
                        got.append(wait)
                    return got

            waits = sorted(
                w for ws in await asyncio.gather(*(client() for _ in range(16))) for w in ws
            )
        finally:
            await pool.close()
        end = await admin.fetchval("select tat from public.slack_budget where key = 'update:HOT'")
    finally:
        await admin.close()
    assert len(waits) == 400
    assert (end - start).total_seconds() == pytest.approx(0.4, abs=1e-6)


async def test_waits_follow_the_database_clock_as_it_runs(conn: asyncpg.Connection) -> None:
    """Inside one long transaction (where now() stands still) the budget still refills with
    the database's running clock."""
    async with conn.transaction():
        assert await reserve(conn, "stop:T1", interval=0.2, burst=1) == 0.0
        assert await reserve(conn, "stop:T1", interval=0.2, burst=1) is None
        await conn.execute("select pg_sleep(0.25)")
        assert await reserve(conn, "stop:T1", interval=0.2, burst=1) == 0.0


async def test_keys_idle_for_an_hour_are_pruned(conn: asyncpg.Connection) -> None:
    """prune_slack_budget() drops keys whose budget has been full for an hour, no others."""
    await conn.execute(
        "insert into public.slack_budget (key, tat) values"
        " ('post:OLD', clock_timestamp() - interval '2 hours'),"
        " ('post:NEW', clock_timestamp() - interval '10 minutes')"
    )
    assert await conn.fetchval("select public.prune_slack_budget()") == 1
    keys = await conn.fetch("select key from public.slack_budget order by key")
    assert [k["key"] for k in keys] == ["post:NEW"]


async def test_the_migration_can_be_applied_again(conn: asyncpg.Connection) -> None:
    """008 is idempotent: applying it to a migrated database keeps the budgets it holds."""
    from tests.store.conftest import SQL_DIR

    await reserve(conn, "update:T9", interval=10, burst=1)
    await conn.execute((SQL_DIR / "008_slack_budget.sql").read_text())
    assert await reserve(conn, "update:T9", interval=10, burst=1) is None


async def test_the_postgres_store_reserves_and_pushes(migrated_db: str) -> None:
    """PostgresStore.reserve_budget / push_budget are the SQL functions, one statement each."""
    store = PostgresStore(migrated_db)
    await store.open()
    try:
        assert await store.reserve_budget("update:T1", interval=5, burst=1, max_wait=0) == 0.0
        assert await store.reserve_budget("update:T1", interval=5, burst=1, max_wait=0) is None
        await store.push_budget("update:T1", 60)
        wait = await store.reserve_budget("update:T1", interval=5, burst=1, max_wait=120)
        assert wait is not None and 59 < wait <= 60
    finally:
        await store.close()


async def test_the_supabase_store_reserves_and_pushes_through_postgrest(
    postgrest: PostgrestStandin, jwt_secret: str
) -> None:
    """Through PostgREST's /rpc (as service_role) the budget works the same; anon and
    signed-in users may not touch it."""
    store = SupabaseStore(postgrest.url, make_jwt(jwt_secret, "service_role"))
    await store.open()
    try:
        assert await store.reserve_budget("post:C7", interval=5, burst=2, max_wait=0) == 0.0
        assert await store.reserve_budget("post:C7", interval=5, burst=2, max_wait=0) == 0.0
        assert await store.reserve_budget("post:C7", interval=5, burst=2, max_wait=0) is None
        await store.push_budget("post:C7", 60)
        wait = await store.reserve_budget("post:C7", interval=5, burst=2, max_wait=120, reserve=0)
        assert wait is not None and 50 < wait <= 60
    finally:
        await store.close()
    calls = [r for r in postgrest.requests if r.table.startswith("rpc/")]
    assert {(r.method, r.table, r.role) for r in calls} == {
        ("POST", "rpc/reserve_slack_budget", "service_role"),
        ("POST", "rpc/push_slack_budget", "service_role"),
    }
    assert all(r.status == 200 for r in calls)
    for role in ("anon", "authenticated"):
        outsider = SupabaseStore(postgrest.url, make_jwt(jwt_secret, role, sub=None))
        await outsider.open()
        try:
            with pytest.raises(StoreError, match="42501"):
                await outsider.reserve_budget("post:C7", interval=5, burst=2, max_wait=0)
        finally:
            await outsider.close()
