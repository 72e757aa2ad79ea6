"""The sql/ migrations on a real PostgreSQL with the Supabase shim: idempotence, the web app's
contract, row-level security per role, the Slack uniqueness races and account linking."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.store.base import StoreHealth
from bot.store.postgres import PostgresStore

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
MIGRATIONS = sorted(SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))

SLACK_ROW = (
    "insert into public.chat_sessions (slack_team_id, slack_channel_id, slack_thread_ts,"
    " slack_user_id, agent_session_id, title) values ($1, $2, $3, $4, $5, $6)"
    " on conflict (slack_team_id, slack_channel_id, slack_thread_ts, slack_user_id) do nothing"
    " returning id"
)

# Everything the migrations define, as text, to compare a once-applied and twice-applied schema.
FINGERPRINT = """
select string_agg(line, E'\\n' order by line) from (
  select format('col %s.%s %s %s %s', table_name, column_name, data_type, is_nullable,
                column_default) as line
    from information_schema.columns where table_schema = 'public'
  union all
  select format('con %s %s', conname, pg_get_constraintdef(oid)) from pg_constraint
   where connamespace = 'public'::regnamespace
  union all
  select format('pol %s %s %s %s %s', tablename, policyname, cmd, qual, with_check)
    from pg_policies where schemaname = 'public'
  union all
  select format('trg %s %s', tgrelid::regclass, tgname) from pg_trigger
   where not tgisinternal and tgrelid::regclass::text like 'chat%%'
  union all
  select format('idx %s', indexdef) from pg_indexes where schemaname = 'public'
  union all
  select format('acl %s %s', relname, relacl) from pg_class
   where relnamespace = 'public'::regnamespace and relkind = 'r'
  union all
  select format('fn %s %s %s', proname, prosecdef, proacl) from pg_proc
   where pronamespace = 'public'::regnamespace
) lines
"""


@pytest.fixture
async def admin(migrated_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(migrated_db)
    yield conn
    await conn.close()


async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn)


async def _set_role(conn: asyncpg.Connection, role: str, sub: uuid.UUID | None = None) -> None:
    """What PostgREST does at the start of each request's transaction."""
    claims: dict[str, Any] = {"role": role}
    if sub is not None:
        claims["sub"] = str(sub)
    await conn.execute(
        "select set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
        role,
        json.dumps(claims),
    )


async def _new_user(admin: asyncpg.Connection, email: str, confirmed: bool = True) -> uuid.UUID:
    return await admin.fetchval(
        "insert into auth.users (email, email_confirmed_at)"
        " values ($1, case when $2 then now() end) returning id",
        email,
        confirmed,
    )


async def _visible(dsn: str, role: str, sub: uuid.UUID | None, sql: str, *args: Any) -> Any:
    """Run one query the way PostgREST would for a request with this role / JWT subject."""
    conn = await _connect(dsn)
    try:
        async with conn.transaction():
            await _set_role(conn, role, sub)
            return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def _psql(pg_cluster: Any) -> str | None:
    local = pg_cluster.bin_dir / "psql"
    return str(local) if local.exists() else shutil.which("psql")


async def test_migrations_apply_twice_with_psql(
    pg_cluster: Any, bootstrapped_db: str, tmp_path: Path
) -> None:
    """Every migration applies with plain psql, and applying all of them again changes nothing."""
    psql = _psql(pg_cluster)
    if psql is None:
        pytest.skip("psql not found (apt package postgresql-client)")
    argv = [psql, bootstrapped_db, "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    for path in MIGRATIONS:
        argv += ["-f", str(path)]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    first = await asyncio.to_thread(run)
    assert first.returncode == 0, first.stderr
    conn = await _connect(bootstrapped_db)
    try:
        once = await conn.fetchval(FINGERPRINT)
        second = await asyncio.to_thread(run)
        assert second.returncode == 0, second.stderr
        assert "ERROR" not in second.stderr
        assert await conn.fetchval(FINGERPRINT) == once
    finally:
        await conn.close()


async def test_migrations_keep_an_existing_recipe_table_and_its_rows(bootstrapped_db: str) -> None:
    """A database that already has the recipe's table and rows migrates with rows intact."""
    conn = await _connect(bootstrapped_db)
    try:
        await conn.execute((SQL_DIR / "001_chat_sessions.sql").read_text())
        user = await _new_user(conn, "early@example.com")
        await conn.execute(
            "insert into public.chat_sessions (user_id, agent_session_id, title)"
            " values ($1, 'orch_sess_000000000001', 'from the web')",
            user,
        )
        for path in MIGRATIONS:
            await conn.execute(path.read_text())
        row = await conn.fetchrow("select user_id, title, slack_team_id from public.chat_sessions")
        assert (row["user_id"], row["title"], row["slack_team_id"]) == (user, "from the web", None)
    finally:
        await conn.close()


async def test_web_app_insert_and_read_work_unchanged(
    admin: asyncpg.Connection, authenticator_dsn: str
) -> None:
    """The recipe's web app still inserts its row and finds its newest session under RLS."""
    alice = await _new_user(admin, "alice@example.com")
    await _visible(
        authenticator_dsn,
        "authenticated",
        alice,
        "insert into public.chat_sessions (user_id, agent_session_id, title) values ($1, $2, $3)",
        alice,
        "orch_sess_aaaaaaaaaaaa",
        "How do refunds work?",
    )
    rows = await _visible(
        authenticator_dsn,
        "authenticated",
        alice,
        "select agent_session_id from public.chat_sessions order by created_at desc limit 1",
    )
    assert [r["agent_session_id"] for r in rows] == ["orch_sess_aaaaaaaaaaaa"]


async def test_users_see_only_their_own_rows(
    admin: asyncpg.Connection, authenticator_dsn: str
) -> None:
    """User A sees none of user B's conversations and cannot change or claim them."""
    alice = await _new_user(admin, "alice@example.com")
    bob = await _new_user(admin, "bob@example.com")
    for owner, n in ((alice, 1), (bob, 2), (bob, 3)):
        await admin.execute(
            "insert into public.chat_sessions (user_id, agent_session_id) values ($1, $2)",
            owner,
            f"orch_sess_{n:012x}",
        )
    await admin.execute("select public.link_slack_identity('T1', 'UBOB', $1)", bob)
    await admin.fetchval(SLACK_ROW, "T1", "C1", "1.1", "UBOB", "orch_sess_slackbob0000", "q")

    seen = await _visible(
        authenticator_dsn, "authenticated", alice, "select user_id from public.chat_sessions"
    )
    assert [r["user_id"] for r in seen] == [alice]
    bob_seen = await _visible(
        authenticator_dsn, "authenticated", bob, "select user_id from public.chat_sessions"
    )
    assert len(bob_seen) == 3
    changed = await _visible(
        authenticator_dsn,
        "authenticated",
        alice,
        "update public.chat_sessions set title = 'mine now' where user_id = $1 returning id",
        bob,
    )
    assert changed == []
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # RLS with-check violation
        await _visible(
            authenticator_dsn,
            "authenticated",
            alice,
            "insert into public.chat_sessions (user_id, agent_session_id) values ($1, 'x')",
            bob,
        )


async def test_anon_reads_nothing(admin: asyncpg.Connection, authenticator_dsn: str) -> None:
    """The anon key reads no conversation, identity, event or feedback."""
    alice = await _new_user(admin, "alice@example.com")
    session_id = await admin.fetchval(
        "insert into public.chat_sessions (user_id, agent_session_id) values ($1, 'a')"
        " returning id",
        alice,
    )
    await admin.fetchval(SLACK_ROW, "T1", "C1", "1.1", "U1", "orch_sess_slack0000000", "q")
    await admin.execute("insert into public.slack_events (event_id) values ('Ev1')")
    await admin.execute(
        "insert into public.chat_feedback (chat_session_id, rating) values ($1, 1)", session_id
    )
    assert (
        await _visible(authenticator_dsn, "anon", None, "select * from public.chat_sessions") == []
    )
    for table in ("slack_events", "slack_identities", "chat_feedback"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await _visible(authenticator_dsn, "anon", None, f"select * from public.{table}")


async def test_signed_in_user_cannot_write_slack_or_trace_columns(
    admin: asyncpg.Connection, authenticator_dsn: str
) -> None:
    """A web user cannot plant a row under someone's Slack thread key to capture that thread."""
    mallory = await _new_user(admin, "mallory@example.com")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _visible(
            authenticator_dsn,
            "authenticated",
            mallory,
            "insert into public.chat_sessions (user_id, agent_session_id, slack_team_id,"
            " slack_channel_id, slack_thread_ts, slack_user_id)"
            " values ($1, 'x', 'T1', 'C1', '1.1', 'UVICTIM')",
            mallory,
        )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _visible(
            authenticator_dsn,
            "authenticated",
            mallory,
            "update public.chat_sessions set last_trace = '{}' where user_id = $1",
            mallory,
        )


async def test_only_slack_rows_may_lack_an_owner(admin: asyncpg.Connection) -> None:
    """A row with neither an account nor a complete Slack key is refused."""
    with pytest.raises(asyncpg.CheckViolationError):
        await admin.execute(
            "insert into public.chat_sessions (agent_session_id) values ('orch_sess_x')"
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await admin.execute(
            "insert into public.chat_sessions (agent_session_id, slack_team_id, slack_user_id)"
            " values ('orch_sess_x', 'T1', 'U1')"
        )


async def _wait_until_blocked(admin: asyncpg.Connection, pid: int) -> None:
    """Poll (with a deadline) until backend `pid` waits on a lock held by another session."""
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        waiting = await admin.fetchval(
            "select wait_event_type = 'Lock' from pg_stat_activity where pid = $1", pid
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} never blocked on the first transaction's lock")


async def _race(admin: asyncpg.Connection, dsn: str, sql: str, *args: Any) -> tuple[Any, Any]:
    """Two service_role transactions run `sql`; the second starts while the first is open."""
    first, second = await _connect(dsn), await _connect(dsn)
    try:
        tx1 = first.transaction()
        await tx1.start()
        await _set_role(first, "service_role")
        won = await first.fetchval(sql, *args)

        async def contender() -> Any:
            async with second.transaction():
                await _set_role(second, "service_role")
                return await second.fetchval(sql, *args)

        task = asyncio.create_task(contender())
        await _wait_until_blocked(admin, second.get_server_pid())
        assert not task.done()
        await tx1.commit()
        return won, await task
    finally:
        await first.close()
        await second.close()


async def test_concurrent_event_claims_have_one_winner(
    admin: asyncpg.Connection, authenticator_dsn: str
) -> None:
    """Two replicas claiming one Slack event id at once: exactly one inserts the row."""
    won, lost = await _race(
        admin,
        authenticator_dsn,
        "insert into public.slack_events (event_id) values ($1) on conflict do nothing"
        " returning event_id",
        "Ev0RACE",
    )
    assert (won, lost) == ("Ev0RACE", None)
    assert await admin.fetchval("select count(*) from public.slack_events") == 1


async def test_concurrent_first_messages_make_one_row(
    admin: asyncpg.Connection, authenticator_dsn: str
) -> None:
    """Two first messages in one thread at once: one row, the loser inserts nothing."""
    won, lost = await _race(
        admin, authenticator_dsn, SLACK_ROW, "T1", "C1", "1.1", "U1", "orch_sess_race00000000", "q"
    )
    assert won is not None and lost is None
    assert await admin.fetchval("select count(*) from public.chat_sessions") == 1
    assert await admin.fetchval("select count(*) from public.slack_identities") == 1


async def test_linking_by_email_shows_slack_conversations_in_the_web_app(
    admin: asyncpg.Connection, authenticator_dsn: str
) -> None:
    """After linking by verified email, the user sees past and future Slack conversations."""
    await admin.fetchval(SLACK_ROW, "T1", "C1", "1.1", "U1", "orch_sess_before00000", "q1")
    await admin.execute(
        "update public.slack_identities set email = 'carol@example.com'"
        " where team_id = 'T1' and slack_user_id = 'U1'"
    )
    carol = await _new_user(admin, "Carol@Example.com")
    query = "select agent_session_id from public.chat_sessions order by agent_session_id"
    assert await _visible(authenticator_dsn, "authenticated", carol, query) == []

    linked = await _visible(
        authenticator_dsn,
        "service_role",
        None,
        "select public.link_slack_identities_by_email($1) as n",
        carol,
    )
    assert linked[0]["n"] == 1
    await admin.fetchval(SLACK_ROW, "T1", "C9", "2.2", "U1", "orch_sess_after000000", "q2")
    seen = await _visible(authenticator_dsn, "authenticated", carol, query)
    assert [r["agent_session_id"] for r in seen] == [
        "orch_sess_after000000",
        "orch_sess_before00000",
    ]
    mine = await _visible(
        authenticator_dsn, "authenticated", carol, "select slack_user_id from slack_identities"
    )
    assert [r["slack_user_id"] for r in mine] == ["U1"]


async def test_linking_ignores_unconfirmed_email(
    admin: asyncpg.Connection, authenticator_dsn: str
) -> None:
    """An account whose email is not confirmed gets no Slack conversations by email."""
    await admin.fetchval(SLACK_ROW, "T1", "C1", "1.1", "U1", "orch_sess_x0000000000", "q")
    await admin.execute("update public.slack_identities set email = 'dave@example.com'")
    dave = await _new_user(admin, "dave@example.com", confirmed=False)
    assert await admin.fetchval("select public.link_slack_identities_by_email($1)", dave) == 0
    query = "select * from public.chat_sessions"
    assert await _visible(authenticator_dsn, "authenticated", dave, query) == []


async def test_self_service_link_is_off_until_granted(
    admin: asyncpg.Connection, authenticator_dsn: str
) -> None:
    """Web users cannot call link_my_slack_identities() until the operator grants it."""
    await admin.fetchval(SLACK_ROW, "T1", "C1", "1.1", "U1", "orch_sess_x0000000000", "q")
    await admin.execute("update public.slack_identities set email = 'erin@example.com'")
    erin = await _new_user(admin, "erin@example.com")
    call = "select public.link_my_slack_identities() as n"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _visible(authenticator_dsn, "authenticated", erin, call)
    await admin.execute(
        "grant execute on function public.link_my_slack_identities() to authenticated"
    )
    assert (await _visible(authenticator_dsn, "authenticated", erin, call))[0]["n"] == 1
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _visible(authenticator_dsn, "anon", None, call)


async def test_relinking_moves_the_identity_rows(
    admin: asyncpg.Connection, authenticator_dsn: str
) -> None:
    """Linking a Slack identity to another account moves its Slack rows, not the web rows."""
    frank = await _new_user(admin, "frank@example.com")
    grace = await _new_user(admin, "grace@example.com")
    assert await admin.fetchval("select public.link_slack_identity('T1', 'U1', $1)", frank) == 0
    await admin.fetchval(SLACK_ROW, "T1", "C1", "1.1", "U1", "orch_sess_slack000000", "q")
    await admin.execute(
        "insert into public.chat_sessions (user_id, agent_session_id) values ($1, 'web')", frank
    )
    assert await admin.fetchval("select public.link_slack_identity('T1', 'U1', $1)", grace) == 1
    query = "select agent_session_id from public.chat_sessions"
    frank_rows = await _visible(authenticator_dsn, "authenticated", frank, query)
    grace_rows = await _visible(authenticator_dsn, "authenticated", grace, query)
    assert [r["agent_session_id"] for r in frank_rows] == ["web"]
    assert [r["agent_session_id"] for r in grace_rows] == ["orch_sess_slack000000"]


async def test_link_functions_are_not_callable_by_web_users(
    admin: asyncpg.Connection, authenticator_dsn: str
) -> None:
    """A signed-in user cannot link an arbitrary Slack identity to their account."""
    mallory = await _new_user(admin, "mallory@example.com")
    for call in (
        "select public.link_slack_identity('T1', 'UVICTIM', auth.uid())",
        "select public.link_slack_identities_by_email(auth.uid())",
        "select public.prune_slack_events()",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await _visible(authenticator_dsn, "authenticated", mallory, call)


async def test_prune_keeps_recent_event_ids(admin: asyncpg.Connection) -> None:
    """Retention drops event ids older than a day and keeps the recent ones."""
    await admin.execute(
        "insert into public.slack_events (event_id, claimed_at) values"
        " ('old', now() - interval '25 hours'), ('new', now() - interval '1 hour')"
    )
    assert await admin.fetchval("select public.prune_slack_events()") == 1
    assert (
        await admin.fetchval("select string_agg(event_id, ',') from public.slack_events") == "new"
    )


async def test_web_user_cannot_repoint_a_row_at_another_session(
    admin: asyncpg.Connection, authenticator_dsn: str
) -> None:
    """A signed-in user cannot change their row's agent_session_id, but can still rename it."""
    alice = await _new_user(admin, "alice@example.com")
    await admin.execute(
        "insert into public.chat_sessions (user_id, agent_session_id, title)"
        " values ($1, 'orch_sess_alice0000000', 'old title')",
        alice,
    )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _visible(
            authenticator_dsn,
            "authenticated",
            alice,
            "update public.chat_sessions set agent_session_id = 'orch_sess_victim000000'"
            " where user_id = $1",
            alice,
        )
    renamed = await _visible(
        authenticator_dsn,
        "authenticated",
        alice,
        "update public.chat_sessions set title = 'new title' where user_id = $1"
        " returning agent_session_id, title",
        alice,
    )
    assert [tuple(r) for r in renamed] == [("orch_sess_alice0000000", "new title")]


async def test_a_session_id_belongs_to_one_row(
    admin: asyncpg.Connection, authenticator_dsn: str
) -> None:
    """A second row with an existing session id is refused, a web user's copy included."""
    bob = await _new_user(admin, "bob@example.com")
    mallory = await _new_user(admin, "mallory@example.com")
    await admin.fetchval(SLACK_ROW, "T1", "C1", "1.1", "UBOB", "orch_sess_bobslack0000", "q")
    await admin.execute(
        "insert into public.chat_sessions (user_id, agent_session_id) values ($1, $2)",
        bob,
        "orch_sess_bobweb00000",
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await admin.fetchval(SLACK_ROW, "T1", "C1", "1.2", "U2", "orch_sess_bobslack0000", "q")
    for copied in ("orch_sess_bobslack0000", "orch_sess_bobweb00000"):
        with pytest.raises(asyncpg.UniqueViolationError):
            await _visible(
                authenticator_dsn,
                "authenticated",
                mallory,
                "insert into public.chat_sessions (user_id, agent_session_id) values ($1, $2)",
                mallory,
                copied,
            )
    assert await admin.fetchval("select count(*) from public.chat_sessions") == 2


async def test_unique_ids_migration_keeps_rows_that_already_share_an_id(
    bootstrapped_db: str,
) -> None:
    """Rows sharing an id before 007 survive it: the oldest keeps the id, the rest get new ones."""
    before_007 = [p for p in MIGRATIONS if p.name < "007"]
    conn = await _connect(bootstrapped_db)
    try:
        for path in before_007:
            await conn.execute(path.read_text())
        user = await _new_user(conn, "early@example.com")
        rows = [
            ("orch_sess_000000000001", "web oldest", None),
            ("orch_sess_000000000001", "web newer", None),
            ("orch_sess_000000000001", "slack newest", "1.3"),
            ("orch_sess_000000000002", "web alone", None),
        ]
        for n, (session, title, thread) in enumerate(rows):
            slack = ("T1", "C1", thread, "U1") if thread else (None,) * 4
            await conn.execute(
                "insert into public.chat_sessions (user_id, agent_session_id, title,"
                " slack_team_id, slack_channel_id, slack_thread_ts, slack_user_id, created_at)"
                " values ($1, $2, $3, $4, $5, $6, $7, now() - make_interval(mins => $8))",
                None if thread else user,
                session,
                title,
                *slack,
                100 - n,
            )
        for path in MIGRATIONS:  # everything, as the release loop does
            await conn.execute(path.read_text())
        await conn.execute((SQL_DIR / "007_agent_session_ids.sql").read_text())  # and again
        found = {
            r["title"]: r["agent_session_id"]
            for r in await conn.fetch("select title, agent_session_id from public.chat_sessions")
        }
        assert len(found) == 4 and len(set(found.values())) == 4
        assert found["web oldest"] == "orch_sess_000000000001"
        assert found["web alone"] == "orch_sess_000000000002"
        for title in ("web newer", "slack newest"):
            assert found[title].startswith("orch_sess_") and len(found[title]) == 10 + 64
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "insert into public.chat_sessions (user_id, agent_session_id) values ($1, $2)",
                user,
                found["web newer"],
            )
    finally:
        await conn.close()


async def _health(dsn: str) -> StoreHealth:
    store = PostgresStore(dsn)
    await store.open()
    try:
        return await store.health()
    finally:
        await store.close()


async def test_health_sees_whether_007_locks_the_session_ids(bootstrapped_db: str) -> None:
    """A database with every column but without 007 is not "migrated"; applying 007 makes it so."""
    conn = await _connect(bootstrapped_db)
    try:
        for path in MIGRATIONS:
            if not path.name.startswith("007"):
                await conn.execute(path.read_text())
        before = await _health(bootstrapped_db)
        await conn.execute((SQL_DIR / "007_agent_session_ids.sql").read_text())
        after = await _health(bootstrapped_db)
    finally:
        await conn.close()
    assert (before.reachable, before.migrated) == (True, False)
    assert "007" in before.detail and "chat_sessions_agent_session_id_key" in before.detail
    assert (after.reachable, after.migrated) == (True, True)


async def test_health_sees_web_users_allowed_to_change_session_ids(
    admin: asyncpg.Connection, migrated_db: str
) -> None:
    """A migrated database where `authenticated` regained UPDATE on agent_session_id fails."""
    await admin.execute("grant update on public.chat_sessions to authenticated")
    health = await _health(migrated_db)
    assert health.migrated is False
    assert "007" in health.detail and "authenticated" in health.detail
