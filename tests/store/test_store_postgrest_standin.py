"""The PostgREST stand-in answers the request forms the Supabase store sends the way PostgREST
does: statuses, bodies, Prefer handling, errors, and RLS applied per JWT role."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from sandbox.postgrest import PostgrestStandin, make_jwt


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def _headers(token: str | None, **extra: str) -> dict[str, str]:
    headers = {"apikey": token or "anon-key", **extra}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def test_requests_without_api_key_are_refused(
    postgrest: PostgrestStandin, http: httpx.AsyncClient
) -> None:
    """Like Supabase's gateway, a request with no apikey gets 401 and a `message`."""
    response = await http.get(f"{postgrest.url}/rest/v1/chat_sessions")
    assert response.status_code == 401
    assert response.json() == {"message": "No API key found in request"}


async def test_a_forged_jwt_is_refused(
    postgrest: PostgrestStandin, http: httpx.AsyncClient
) -> None:
    """A JWT signed with another secret is rejected with PGRST301, not served as anon."""
    forged = make_jwt("some-other-secret-that-is-long-enough!!", "service_role")
    response = await http.get(f"{postgrest.url}/rest/v1/slack_events", headers=_headers(forged))
    assert response.status_code == 401
    assert response.json()["code"] == "PGRST301"


async def test_insert_ignore_duplicates_returns_only_new_rows(
    postgrest: PostgrestStandin, http: httpx.AsyncClient, jwt_secret: str
) -> None:
    """An upsert with ignore-duplicates returns the row once, then an empty array (both 201)."""
    service = make_jwt(jwt_secret, "service_role")
    headers = _headers(
        service,
        Prefer="return=representation,resolution=ignore-duplicates",
        **{"Content-Profile": "public"},
    )
    url = f"{postgrest.url}/rest/v1/slack_events?on_conflict=event_id&select=event_id"
    first = await http.post(url, headers=headers, json={"event_id": "Ev1"})
    second = await http.post(url, headers=headers, json={"event_id": "Ev1"})
    assert (first.status_code, first.json()) == (201, [{"event_id": "Ev1"}])
    assert (second.status_code, second.json()) == (201, [])
    assert second.headers["Preference-Applied"] == "resolution=ignore-duplicates"


async def test_patch_filters_and_minimal_return(
    postgrest: PostgrestStandin, http: httpx.AsyncClient, jwt_secret: str
) -> None:
    """PATCH with eq filters updates only matching rows and answers 204 for return=minimal."""
    service = make_jwt(jwt_secret, "service_role")
    base = f"{postgrest.url}/rest/v1/chat_sessions"
    for thread in ("1.1", "2.2"):
        created = await http.post(
            base,
            headers=_headers(service, Prefer="return=minimal"),
            json={
                "slack_team_id": "T1",
                "slack_channel_id": "C1",
                "slack_thread_ts": thread,
                "slack_user_id": "U1",
                "agent_session_id": f"orch_sess_{thread}",
            },
        )
        assert (created.status_code, created.text) == (201, "")
    patched = await http.patch(
        f"{base}?slack_thread_ts=eq.2.2&slack_user_id=eq.U1",
        headers=_headers(service, Prefer="return=minimal"),
        json={"last_run_status": "completed", "last_trace": {"steps": [1, 2]}},
    )
    assert patched.status_code == 204
    rows = await http.get(
        f"{base}?select=slack_thread_ts,last_run_status,last_trace&slack_user_id=eq.U1",
        headers=_headers(service),
    )
    assert sorted(rows.json(), key=lambda r: r["slack_thread_ts"]) == [
        {"slack_thread_ts": "1.1", "last_run_status": None, "last_trace": None},
        {"slack_thread_ts": "2.2", "last_run_status": "completed", "last_trace": {"steps": [1, 2]}},
    ]


async def test_schema_errors_look_like_postgrest(
    postgrest: PostgrestStandin, http: httpx.AsyncClient, jwt_secret: str
) -> None:
    """Unknown columns answer 400 / 42703 and unknown tables 404 / PGRST205."""
    service = _headers(make_jwt(jwt_secret, "service_role"))
    column = await http.get(f"{postgrest.url}/rest/v1/chat_sessions?select=nope", headers=service)
    table = await http.get(f"{postgrest.url}/rest/v1/nothing_here", headers=service)
    assert (column.status_code, column.json()["code"]) == (400, "42703")
    assert (table.status_code, table.json()["code"]) == (404, "PGRST205")


async def test_roles_from_the_jwt_apply_rls(
    postgrest: PostgrestStandin, http: httpx.AsyncClient, jwt_secret: str, migrated_db: str
) -> None:
    """Anon reads no rows (401 where it has no grant); a user reads only their own rows."""
    conn = await asyncpg.connect(migrated_db)
    try:
        new_user = "insert into auth.users (email) values ($1) returning id"
        alice = await conn.fetchval(new_user, "a@example.com")
        bob = await conn.fetchval(new_user, "b@example.com")
        for owner in (alice, bob):
            await conn.execute(
                "insert into chat_sessions (user_id, agent_session_id) values ($1, $2)",
                owner,
                f"orch_sess_{owner}",
            )
        await conn.execute("insert into slack_events (event_id) values ('Ev1')")
    finally:
        await conn.close()
    base = f"{postgrest.url}/rest/v1"
    anon = _headers(make_jwt(jwt_secret, "anon"))
    as_alice = _headers(make_jwt(jwt_secret, "authenticated", sub=str(alice)))
    assert (await http.get(f"{base}/chat_sessions", headers=anon)).json() == []
    events = await http.get(f"{base}/slack_events", headers=anon)
    assert (events.status_code, events.json()["code"]) == (401, "42501")
    mine = (await http.get(f"{base}/chat_sessions?select=user_id", headers=as_alice)).json()
    assert [uuid.UUID(r["user_id"]) for r in mine] == [alice]


async def test_injected_fault_is_served_once(
    postgrest: PostgrestStandin, http: httpx.AsyncClient, jwt_secret: str
) -> None:
    """An injected fault answers the next matching request only, as PostgREST error JSON."""
    postgrest.inject_fault("GET", "slack_events", 503)
    service = _headers(make_jwt(jwt_secret, "service_role"))
    failed = await http.get(f"{postgrest.url}/rest/v1/slack_events", headers=service)
    healed = await http.get(f"{postgrest.url}/rest/v1/slack_events", headers=service)
    assert (failed.status_code, failed.json()["message"]) == (503, "injected fault")
    assert (healed.status_code, healed.json()) == (200, [])


async def test_rpc_calls_functions_with_named_arguments_as_postgrest_does(
    postgrest: PostgrestStandin, http: httpx.AsyncClient, jwt_secret: str
) -> None:
    """POST /rpc/<fn> with a JSON object of arguments: a scalar comes back as its JSON value,
    a set as an array of rows; an unknown function is 404 PGRST202; the grants still apply
    (sql/009's functions are the service role's only)."""
    service = _headers(make_jwt(jwt_secret, "service_role"))
    claim = {
        "p_team_id": "T1",
        "p_channel_id": "D1",
        "p_message_ts": "1.000001",
        "p_event_id": "Ev1",
        "p_user_id": "U1",
        "p_question": "why?",
        "p_thread_ts": None,
        "p_channel_type": "im",
        "p_owner": "r1",
        "p_lease_seconds": 0,
    }
    rpc = f"{postgrest.url}/rest/v1/rpc"
    first = await http.post(f"{rpc}/slack_answer_claim", headers=service, json=claim)
    again = await http.post(f"{rpc}/slack_answer_claim", headers=service, json=claim)
    assert (first.status_code, first.json(), again.json()) == (200, True, False)
    taken = await http.post(
        f"{rpc}/slack_answer_take_over",
        headers=service,
        json={"p_owner": "r2", "p_lease_seconds": 60, "p_limit": 5},
    )
    (row,) = taken.json()
    assert (row["owner"], row["attempts"], row["question"]) == ("r2", 2, "why?")
    missing = await http.post(f"{rpc}/no_such_function", headers=service, json={})
    assert (missing.status_code, missing.json()["code"]) == (404, "PGRST202")
    user = _headers(make_jwt(jwt_secret, "authenticated", sub=str(uuid.uuid4())))
    refused = await http.post(f"{rpc}/slack_answer_claim", headers=user, json=claim)
    assert (refused.status_code, refused.json()["code"]) == (403, "42501")


async def test_reads_are_ordered_and_limited_as_postgrest_does(
    postgrest: PostgrestStandin, http: httpx.AsyncClient, jwt_secret: str
) -> None:
    """`order=col.desc,col2.asc.nullsfirst` sorts before `limit=` cuts; a malformed order is
    PostgREST's parse error (400 PGRST100), an unknown column 400 42703."""
    service = _headers(make_jwt(jwt_secret, "service_role"))
    table = f"{postgrest.url}/rest/v1/slack_events"
    for event_id in ("Ev2", "Ev1", "Ev3"):
        created = await http.post(table, headers=service, json={"event_id": event_id})
        assert created.status_code == 201
    newest = await http.get(f"{table}?select=event_id&order=event_id.desc&limit=2", headers=service)
    assert newest.json() == [{"event_id": "Ev3"}, {"event_id": "Ev2"}]
    both = await http.get(
        f"{table}?select=event_id&order=claimed_at.asc.nullsfirst,event_id", headers=service
    )
    assert sorted(r["event_id"] for r in both.json()) == ["Ev1", "Ev2", "Ev3"]
    by_id = await http.get(f"{table}?select=event_id&order=event_id", headers=service)
    assert [r["event_id"] for r in by_id.json()] == ["Ev1", "Ev2", "Ev3"]
    bad = await http.get(f"{table}?order=event_id.sideways", headers=service)
    assert (bad.status_code, bad.json()["code"]) == (400, "PGRST100")
    unknown = await http.get(f"{table}?order=nope.desc", headers=service)
    assert (unknown.status_code, unknown.json()["code"]) == (400, "42703")
