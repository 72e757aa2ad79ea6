"""Postgres-direct store specifics: connection failures, unmigrated databases, pruning."""

from __future__ import annotations

import socket

import asyncpg
import pytest

from bot.errors import StoreError
from bot.store import postgres as postgres_module
from bot.store.postgres import PostgresStore, redacted_target


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_target_never_shows_credentials() -> None:
    """What the store prints about its database has host, port and name, not user or password."""
    url = "postgresql://bot:s3cret-pw@db.internal:6543/powabot?sslmode=require"
    assert redacted_target(url) == "db.internal:6543/powabot"
    assert "s3cret-pw" not in repr(PostgresStore(url))


async def test_unreachable_database_is_a_store_error_without_password() -> None:
    """A database nobody listens on fails open() with StoreError that hides the password."""
    store = PostgresStore(
        f"postgresql://bot:s3cret-pw@127.0.0.1:{_closed_port()}/powabot", timeout=5
    )
    with pytest.raises(StoreError) as caught:
        await store.open()
    assert isinstance(caught.value.__cause__, OSError)
    assert "s3cret-pw" not in str(caught.value)
    assert f"127.0.0.1:{store.target.split(':')[1]}" in str(caught.value)


async def test_wrong_scheme_is_refused() -> None:
    """Only postgres:// and postgresql:// URLs are accepted, with a message naming the setting."""
    with pytest.raises(StoreError, match="POWABOT_STORE"):
        PostgresStore("mysql://db/powabot")


async def test_health_lists_missing_schema(bootstrapped_db: str) -> None:
    """On a database without the migrations, health names each missing table."""
    store = PostgresStore(bootstrapped_db)
    await store.open()
    try:
        health = await store.health()
    finally:
        await store.close()
    assert (health.reachable, health.migrated) == (True, False)
    for table in ("chat_sessions", "slack_events", "slack_identities"):
        assert table in health.detail


async def test_health_names_a_missing_column(migrated_db: str) -> None:
    """A half-migrated table (a column dropped) is reported as not migrated, naming the column."""
    conn = await asyncpg.connect(migrated_db)
    try:
        await conn.execute("alter table chat_sessions drop column last_trace")
    finally:
        await conn.close()
    store = PostgresStore(migrated_db)
    await store.open()
    try:
        health = await store.health()
    finally:
        await store.close()
    assert health.migrated is False
    assert "chat_sessions.last_trace" in health.detail


async def test_database_errors_become_store_errors(migrated_db: str) -> None:
    """A failing statement surfaces as StoreError with the asyncpg error as its cause."""
    conn = await asyncpg.connect(migrated_db)
    try:
        await conn.execute("drop table slack_events")
    finally:
        await conn.close()
    store = PostgresStore(migrated_db)
    await store.open()
    try:
        with pytest.raises(StoreError, match="claim_event") as caught:
            await store.claim_event("Ev1")
    finally:
        await store.close()
    assert isinstance(caught.value.__cause__, asyncpg.UndefinedTableError)


async def test_old_event_ids_are_pruned(migrated_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every PRUNE_EVERY claims, event ids older than the retention window are deleted."""
    monkeypatch.setattr(postgres_module, "PRUNE_EVERY", 2)
    conn = await asyncpg.connect(migrated_db)
    store = PostgresStore(migrated_db)
    await store.open()
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
        await store.close()
        await conn.close()
    assert left == "Ev1,Ev2,recent"
