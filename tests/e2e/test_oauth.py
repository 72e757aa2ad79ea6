"""Several workspaces: the real bot in HTTP mode with OAuth install, against the stand-ins.

Each workspace installs the app through /slack/install → Slack's authorize page → the
/slack/oauth_redirect callback (the stand-in's oauth.v2.access exchanges the code); events
from a workspace are then answered by that workspace's bot (its token, hence its bot id on
every message), installations are kept in the session store's database, and forged states are
refused. Token mode is covered by the rest of tests/e2e, unchanged.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from bot.errors import ConfigError
from bot.service import Powabot
from bot.settings import load_settings
from bot.slack.calls import SLACK_TOKEN
from bot.slack.oauth import INSTALL_PATH, REDIRECT_PATH
from bot.slack.scopes import bot_scopes
from bot.store import make_store
from bot.store.base import AnswerClaim, AnswerKey
from sandbox.slack.events import event_callback, slack_signature
from tests.conftest import bot_settings
from tests.e2e.answers import ALICE, bot_replies

SIGNING_SECRET = "oauth-signing-secret"
STATE_SECRET = "s" * 40
ACME, BETA = "T1ACME", "T2BETA"
ACME_DM, BETA_DM = "D1ACME", "D2BETA"
AUTHORIZE = "https://slack.com/oauth/v2/authorize"


def oauth_settings(slack: Any, powabase: Any, tmp_path: Path, **extra: Any) -> Any:
    values: dict[str, Any] = {
        "SLACK_BOT_TOKEN": None,
        "SLACK_APP_TOKEN": None,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_CLIENT_ID": slack.client_id,
        "SLACK_CLIENT_SECRET": slack.client_secret,
        "SLACK_STATE_SECRET": STATE_SECRET,
    }
    values.update(extra)
    return bot_settings(slack, powabase, tmp_path, **values)


@pytest.fixture
async def oauth_bot(slack: Any, powabase: Any, tmp_path: Path) -> AsyncIterator[Powabot]:
    instance = Powabot(oauth_settings(slack, powabase, tmp_path))
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()


def base_url(bot: Powabot) -> str:
    return f"http://127.0.0.1:{bot.http_port}"


async def begin_install(bot: Powabot) -> tuple[str, str]:
    """A browser opens the install link: (the state Slack will hand back, the state cookie)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(base_url(bot) + INSTALL_PATH, allow_redirects=False) as resp:
            assert resp.status == 302
            location = resp.headers["Location"]
            cookie = resp.headers["Set-Cookie"].split(";", 1)[0]
    assert location.startswith(AUTHORIZE)
    query = parse_qs(urlsplit(location).query)
    return query["state"][0], cookie


async def callback(bot: Powabot, *, code: str, state: str, cookie: str) -> tuple[int, str]:
    """Slack sends the browser back to the bot with the code and the state."""
    url = base_url(bot) + REDIRECT_PATH
    async with aiohttp.ClientSession() as session:
        async with session.get(
            url, params={"code": code, "state": state}, headers={"Cookie": cookie}
        ) as resp:
            return resp.status, await resp.text()


async def install(slack: Any, bot: Powabot, team: str, **grant: Any) -> None:
    """One workspace installs the app through the whole OAuth flow."""
    code = f"code-{team}"
    slack.register_oauth_code(code, team, **grant)
    state, cookie = await begin_install(bot)
    status, _page = await callback(bot, code=code, state=state, cookie=cookie)
    assert status == 200


async def post_event(slack: Any, bot: Powabot, team: str, event: dict[str, Any]) -> int:
    """Slack POSTs a signed event from workspace `team` to the bot's events URL."""
    payload = event_callback(event, ws=slack.workspaces[team], event_id=f"Ev{event['ts']}")
    body = json.dumps(payload).encode()
    ts = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": slack_signature(SIGNING_SECRET, ts, body),
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(base_url(bot) + "/slack/events", data=body, headers=headers) as r:
            return r.status


async def ask_in(slack: Any, bot: Powabot, team: str, channel: str, ts: str) -> list[Any]:
    """Alice asks the bot in her DM in workspace `team`; returns the bot's replies."""
    before = bot.answerer.finished
    event = {
        "type": "message",
        "channel": channel,
        "channel_type": "im",
        "user": ALICE,
        "text": "How much is the Pro plan?",
        "ts": ts,
    }
    assert await post_event(slack, bot, team, event) == 200
    await slack.wait_for(lambda: bot.answerer.finished > before, timeout=20)
    return bot_replies(slack, channel, ts)


async def test_install_link_sends_the_browser_to_slack_with_the_bots_scopes(
    slack: Any, oauth_bot: Powabot
) -> None:
    """/slack/install redirects to Slack's authorize page with our client id, exactly the bot
    scopes powabot needs, and a signed one-time state (also set as the browser's cookie)."""
    async with aiohttp.ClientSession() as session:
        url = base_url(oauth_bot) + INSTALL_PATH
        async with session.get(url, allow_redirects=False) as resp:
            assert resp.status == 302
            query = parse_qs(urlsplit(resp.headers["Location"]).query)
            cookie = resp.headers["Set-Cookie"]
    assert query["client_id"] == [slack.client_id]
    assert set(query["scope"][0].split(",")) == bot_scopes()
    state = query["state"][0]
    assert "." in state and f"={state};" in cookie


async def test_each_installed_workspace_is_answered_with_its_own_token(
    slack: Any, oauth_bot: Powabot, tmp_path: Path
) -> None:
    """Two workspaces install the app; each one's question is answered by its own bot (every
    call with its token: the stand-in refuses an edit by another workspace's bot), and the
    installs are kept in the session store's SQLite file."""
    await install(slack, oauth_bot, ACME)
    await install(slack, oauth_bot, BETA, team_name="Beta Inc")
    acme = await ask_in(slack, oauth_bot, ACME, ACME_DM, "1700000001.000100")
    beta = await ask_in(slack, oauth_bot, BETA, BETA_DM, "1700000002.000100")
    assert acme and beta
    assert {m.bot_id for m in acme} == {slack.workspaces[ACME].bot_id}
    assert {m.bot_id for m in beta} == {slack.workspaces[BETA].bot_id}
    assert ":warning:" not in acme[0].text and ":warning:" not in beta[0].text
    assert oauth_bot.installations is not None
    assert await oauth_bot.installations.token_for(ACME) == slack.token_for(ACME)
    assert await oauth_bot.installations.token_for(BETA) == slack.token_for(BETA)
    assert await oauth_bot.installations.token_for("T9NOBODY") is None


async def test_a_workspace_not_installed_gets_no_answer(slack: Any, oauth_bot: Powabot) -> None:
    """An event from a workspace that never installed the app is not answered by any bot."""
    await install(slack, oauth_bot, ACME)
    slack.install_workspace(BETA)  # known to Slack, but the bot never got its token
    event = {
        "type": "message",
        "channel": BETA_DM,
        "channel_type": "im",
        "user": ALICE,
        "text": "Anyone?",
        "ts": "1700000003.000100",
    }
    await post_event(slack, oauth_bot, BETA, event)
    # ACME still answers: once its answer is done, BETA's event has long been handled
    await ask_in(slack, oauth_bot, ACME, ACME_DM, "1700000004.000100")
    assert not bot_replies(slack, BETA_DM, "1700000003.000100")


async def test_forged_altered_or_replayed_states_are_refused(
    slack: Any, oauth_bot: Powabot
) -> None:
    """A callback whose state the bot did not issue (forged, re-signed, altered) or already
    used is refused, and its code is never exchanged."""
    slack.register_oauth_code("code-evil", BETA)
    state, cookie = await begin_install(oauth_bot)
    value, _, signature = state.rpartition(".")
    forged = [
        "0b0e0f00-0000-4000-8000-000000000000." + signature,  # someone else's value
        f"{value}.{'0' * len(signature)}",  # our value, a made-up signature
        value,  # no signature at all
    ]
    for bad in forged:
        status, _ = await callback(
            oauth_bot, code="code-evil", state=bad, cookie=f"slack-app-oauth-state={bad}"
        )
        assert status >= 400, bad
    assert not slack.calls_to("oauth.v2.access")
    slack.register_oauth_code("code-ok", ACME)
    assert (await callback(oauth_bot, code="code-ok", state=state, cookie=cookie))[0] == 200
    slack.register_oauth_code("code-again", BETA)
    replayed = await callback(oauth_bot, code="code-again", state=state, cookie=cookie)
    assert replayed[0] >= 400
    assert len(slack.calls_to("oauth.v2.access")) == 1
    assert oauth_bot.installations is not None
    assert await oauth_bot.installations.token_for(BETA) is None


async def test_installs_survive_a_restart(slack: Any, powabase: Any, tmp_path: Path) -> None:
    """A workspace installed before a restart is answered after it (installs live in the
    session store's database, not in memory)."""
    settings = oauth_settings(slack, powabase, tmp_path)
    first = Powabot(settings)
    await first.start()
    try:
        await install(slack, first, ACME)
    finally:
        await first.stop()
    second = Powabot(settings)
    await second.start()
    try:
        replies = await ask_in(slack, second, ACME, ACME_DM, "1700000005.000100")
        assert replies and {m.bot_id for m in replies} == {slack.workspaces[ACME].bot_id}
    finally:
        await second.stop()


async def test_an_enterprise_grid_org_install_serves_its_workspaces(
    slack: Any, oauth_bot: Powabot
) -> None:
    """An org-wide install on Enterprise Grid (no team of its own) answers in the org's
    workspace with the org's bot token, and takeovers find that token by team id."""
    org = "E1GRID"
    await install(
        slack,
        oauth_bot,
        ACME,
        enterprise_id=org,
        enterprise_name="Grid Co",
        is_enterprise_install=True,
    )
    replies = await ask_in(slack, oauth_bot, ACME, ACME_DM, "1700000006.000100")
    assert replies and ":warning:" not in replies[0].text
    assert {m.bot_id for m in replies} == {slack.workspaces[ACME].bot_id}
    assert oauth_bot.installations is not None
    assert await oauth_bot.installations.token_for(ACME) == slack.token_for(ACME)


async def test_an_answer_taken_over_writes_with_its_workspaces_token(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """An answer left open by a replica that died is finished, after a restart, by the bot of
    the workspace it was asked in (a takeover has no request: its token comes from the
    installs)."""
    settings = oauth_settings(slack, powabase, tmp_path, POWABOT_LEASE_SECONDS=0.5)
    first = Powabot(settings)
    await first.start()
    try:
        await install(slack, first, BETA)
    finally:
        await first.stop()
    # A replica claimed this question and died before answering (its lease is left to expire).
    store = make_store(settings)
    await store.open()
    key = AnswerKey(BETA, BETA_DM, "1700000007.000100")
    claim = AnswerClaim(key, "Ev1700000007", ALICE, "How much is the Pro plan?", channel_type="im")
    try:
        assert await store.claim_answer(claim, owner="dead-replica", lease=0.5)
    finally:
        await store.close()
    second = Powabot(settings)
    await second.start()
    try:
        await slack.wait_for(lambda: second.answerer.finished >= 1, timeout=20)
        replies = bot_replies(slack, BETA_DM, key.message_ts)
        assert replies and {m.bot_id for m in replies} == {slack.workspaces[BETA].bot_id}
    finally:
        await second.stop()


async def test_the_token_in_effect_is_the_one_each_call_sends(slack: Any, powabase: Any) -> None:
    """With a workspace token set for a task, SlackCaller calls carry it; without, the
    client's own token (token mode, unchanged)."""
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.alerts import OperatorAlerts
    from bot.slack.budget import Budgets
    from bot.slack.calls import SlackCaller

    beta_token = slack.install_workspace(BETA)
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    caller = SlackCaller(client, alerts=OperatorAlerts())
    bucket = Budgets().bucket("test", 100.0, 100)

    async def who() -> str:
        return str((await caller.call("auth.test", bucket))["team_id"])

    async def as_beta() -> str:
        SLACK_TOKEN.set(beta_token)
        return await who()

    assert await asyncio.create_task(as_beta()) == BETA
    assert await who() == slack.workspace.team_id  # the task's token did not leak here


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"SLACK_CLIENT_ID": "123.456"}, "missing: SLACK_CLIENT_SECRET, SLACK_STATE_SECRET"),
        (
            {"SLACK_CLIENT_ID": "123.456", "SLACK_CLIENT_SECRET": "c" * 32},
            "missing: SLACK_STATE_SECRET",
        ),
        ({"SLACK_STATE_SECRET": "s" * 40}, "missing: SLACK_CLIENT_ID, SLACK_CLIENT_SECRET"),
    ],
)
def test_partial_oauth_settings_name_what_is_missing(extra: dict[str, str], expected: str) -> None:
    """Setting only some of the three OAuth variables stops the start with one line naming
    the missing ones."""
    base = {
        "SLACK_SIGNING_SECRET": "x" * 32,
        "POWABASE_URL": "http://127.0.0.1:1",
        "POWABASE_API_KEY": "k" * 32,
        "POWABASE_ORCHESTRATION_ID": "o",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings("run", _env_file=None, **base, **extra)
    assert any("must be set together" in p and expected in p for p in caught.value.problems)


OAUTH = {
    "SLACK_CLIENT_ID": "123.456",
    "SLACK_CLIENT_SECRET": "c" * 32,
    "SLACK_STATE_SECRET": "s" * 40,
}
POWABASE = {
    "POWABASE_URL": "http://127.0.0.1:1",
    "POWABASE_API_KEY": "k" * 32,
    "POWABASE_ORCHESTRATION_ID": "o",
}


def test_oauth_settings_need_no_bot_token() -> None:
    """With the three OAuth variables and a signing secret, `run` needs no SLACK_BOT_TOKEN."""
    settings = load_settings(
        "run", _env_file=None, SLACK_SIGNING_SECRET="x" * 32, **OAUTH, **POWABASE
    )
    assert settings.oauth and settings.SLACK_BOT_TOKEN is None


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"SLACK_APP_TOKEN": "xapp-1"}, "needs HTTP mode"),
        ({"SLACK_SIGNING_SECRET": "x" * 32, "SLACK_BOT_TOKEN": "xoxb-1"}, "exclude each other"),
        (
            {"SLACK_SIGNING_SECRET": "x" * 32, "SLACK_STATE_SECRET": "short"},
            "at least 32 characters",
        ),
        (
            {
                "SLACK_SIGNING_SECRET": "x" * 32,
                "SUPABASE_URL": "http://127.0.0.1:2",
                "SUPABASE_SERVICE_ROLE_KEY": "r" * 32,
            },
            "set POWABOT_STORE to the database's postgresql://",
        ),
    ],
)
def test_oauth_settings_that_cannot_work_are_refused(extra: dict[str, str], expected: str) -> None:
    """OAuth in Socket Mode, beside a bot token, with a short state secret or the REST-only
    Supabase store is refused at load with a message saying what to change."""
    with pytest.raises(ConfigError) as caught:
        load_settings("run", _env_file=None, **{**OAUTH, **POWABASE, **extra})
    assert any(expected in p for p in caught.value.problems), caught.value.problems


async def test_installs_live_in_postgres_out_of_the_web_apps_reach(
    slack: Any, powabase: Any, tmp_path: Path, migrated_db: str
) -> None:
    """With the Postgres store, installs are kept in its database (tables created at start,
    row level security on so the web app's roles cannot read bot tokens) and each workspace
    is answered with its own token."""
    import asyncpg

    bot = Powabot(oauth_settings(slack, powabase, tmp_path, POWABOT_STORE=migrated_db))
    await bot.start()
    try:
        await install(slack, bot, ACME)
        await install(slack, bot, BETA)
        beta = await ask_in(slack, bot, BETA, BETA_DM, "1700000008.000100")
        assert beta and {m.bot_id for m in beta} == {slack.workspaces[BETA].bot_id}
    finally:
        await bot.stop()
    conn = await asyncpg.connect(migrated_db)
    try:
        rows = await conn.fetch(
            "select relname, relrowsecurity from pg_class where relname = any($1::text[])",
            ["slack_installations", "slack_bots", "slack_oauth_states"],
        )
        assert {r["relname"]: r["relrowsecurity"] for r in rows} == {
            "slack_installations": True,
            "slack_bots": True,
            "slack_oauth_states": True,
        }
        teams = {r["team_id"] for r in await conn.fetch("select team_id from slack_bots")}
        assert teams == {ACME, BETA}
        await conn.execute("set role authenticated")
        assert await conn.fetch("select bot_token from slack_bots") == []
    finally:
        await conn.close()
