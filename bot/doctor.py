"""`powabot doctor`: checks a deployment can work, as human-readable lines and an exit code.

This module checks the session store; Slack and Powabase checks are added beside it.
"""

from __future__ import annotations

from bot.errors import StoreError
from bot.settings import Settings
from bot.store import make_store
from bot.store.postgres import PostgresStore

OK = 0
FAILED = 1


def _store_location(settings: Settings) -> str:
    """Where the store lives, without credentials."""
    store_url = settings.POWABOT_STORE
    if settings.SUPABASE_URL and settings.SUPABASE_SERVICE_ROLE_KEY:
        return str(settings.SUPABASE_URL).rstrip("/")
    if store_url.startswith(("postgres://", "postgresql://")):
        return PostgresStore(store_url).target
    return store_url


async def check_store(settings: Settings) -> tuple[bool, list[str]]:
    """Open the configured store and report whether it is reachable and migrated."""
    try:
        store = make_store(settings)
    except StoreError as exc:
        return False, [f"✗ store: {exc}"]
    lines = [f"• store: {store.backend} at {_store_location(settings)}"]
    try:
        await store.open()
    except StoreError as exc:
        return False, [*lines, f"✗ store unreachable: {exc}"]
    try:
        health = await store.health()
    finally:
        await store.close()
    if not health.reachable:
        return False, [*lines, f"✗ store unreachable: {health.detail}"]
    lines.append("✓ store reachable")
    if not health.migrated:
        hint = "" if store.backend == "sqlite" else " (apply sql/0*.sql with psql, in order)"
        return False, [*lines, f"✗ store not migrated: {health.detail}{hint}"]
    lines.append("✓ store migrated")
    return True, lines


async def run_doctor(settings: Settings) -> tuple[int, list[str]]:
    """Run every check; exit code 0 when all pass, 1 otherwise."""
    store_ok, lines = await check_store(settings)
    return (OK if store_ok else FAILED), lines
