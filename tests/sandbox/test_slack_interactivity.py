"""The Slack stand-in's interactivity (clicks), App Home, permalinks, user groups, admin flags
and OAuth installs, driven by the real slack_sdk / slack_bolt clients over real sockets."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.errors import SlackApiError
from slack_sdk.oauth.installation_store import FileInstallationStore
from slack_sdk.oauth.state_store import FileOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient

from sandbox.slack import RateLimits, SlackStandin

_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
ALICE, BOB = "U0ALICE", "U0BOB"
FEEDBACK = {
    "type": "context_actions",
    "elements": [
        {
            "type": "feedback_buttons",
            "action_id": "feedback",
            "positive_button": {"text": {"type": "plain_text", "text": "👍"}, "value": "good"},
            "negative_button": {"text": {"type": "plain_text", "text": "👎"}, "value": "bad"},
        }
    ],
}


def _button(action_id: str, value: str, block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "action_id": action_id,
                "text": {"type": "plain_text", "text": action_id},
                "value": value,
            }
        ],
    }
    if block_id is not None:
        block["block_id"] = block_id
    return block


@pytest.fixture(autouse=True)
def _scrub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SLACK_") or name.lower() in _PROXY_VARS:
            monkeypatch.delenv(name)


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandin]:
    async with SlackStandin(ack_timeout=0.3) as s:
        yield s


def _client(standin: SlackStandin, token: str | None = None) -> AsyncWebClient:
    return AsyncWebClient(token=token or standin.bot_token, base_url=standin.api_url)


@asynccontextmanager
async def _socket_app(
    standin: SlackStandin, register: Callable[[AsyncApp], None], app: AsyncApp | None = None
) -> AsyncIterator[AsyncApp]:
    """A real Bolt AsyncApp connected to the stand-in by Socket Mode."""
    app = app or AsyncApp(client=_client(standin), signing_secret="unused-in-socket-mode")
    register(app)
    handler = AsyncSocketModeHandler(app, standin.app_token)
    handler.client.proxy = None
    try:
        await handler.connect_async()
        await standin.wait_for(lambda: standin.hub.num_connections == 1, timeout=5)
        yield app
    finally:
        await handler.close_async()


@asynccontextmanager
async def _http_app(app: AsyncApp) -> AsyncIterator[str]:
    """Bolt's aiohttp app on a free port; yields its request URL."""
    runner = web.AppRunner(app.web_app(path="/slack/events"))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    finally:
        await runner.cleanup()


async def _answer_with_feedback(standin: SlackStandin) -> tuple[str, str]:
    """A user's DM question and the bot's answer under it, with feedback buttons."""
    asked = await standin.user_says(user=ALICE, text="refund?", channel="D1")
    posted = await _client(standin).chat_postMessage(
        channel="D1", thread_ts=asked.ts, text="Refunds take 5 days.", blocks=[FEEDBACK]
    )
    return asked.ts, str(posted["ts"])


# --- clicks over Socket Mode -----------------------------------------------------------------


async def test_feedback_click_reaches_bolt_action_listener_as_slack_sends_it(
    standin: SlackStandin,
) -> None:
    """A thumbs-down click arrives at app.action() as block_actions with the chosen value and
    the answer's message, channel, thread and user, and Bolt's ack reaches Slack."""
    bodies: list[dict[str, Any]] = []

    def register(app: AsyncApp) -> None:
        @app.action("feedback")
        async def on_feedback(ack: Any, body: dict[str, Any]) -> None:
            await ack()
            bodies.append(body)

    thread_ts, answer_ts = await _answer_with_feedback(standin)
    async with _socket_app(standin, register):
        sent = await standin.click(
            user=ALICE, channel="D1", message_ts=answer_ts, action_id="feedback", value="negative"
        )
        await standin.wait_for(lambda: bool(bodies) and sent.envelope_id in standin.acked)
    (body,) = bodies
    assert body["type"] == "block_actions"
    assert body["user"]["id"] == ALICE and body["user"]["team_id"] == "T0TEAM"
    assert body["team"]["id"] == "T0TEAM" and body["api_app_id"] == "A0APP"
    assert body["container"] == {
        "type": "message",
        "message_ts": answer_ts,
        "channel_id": "D1",
        "is_ephemeral": False,
        "thread_ts": thread_ts,
    }
    assert body["channel"]["id"] == "D1"
    assert body["message"]["ts"] == answer_ts and body["message"]["thread_ts"] == thread_ts
    assert body["message"]["blocks"][0]["type"] == "context_actions"
    (act,) = body["actions"]
    assert act["type"] == "feedback_buttons" and act["action_id"] == "feedback"
    assert act["value"] == "bad"
    assert act["block_id"] == body["message"]["blocks"][0]["block_id"]  # Slack fills it in
    assert body["trigger_id"] and body["response_url"].startswith("http://127.0.0.1:")


async def test_click_on_an_ephemeral_carries_no_message_and_only_its_recipient_sees_it(
    standin: SlackStandin,
) -> None:
    """A button in an ephemeral is clicked by its recipient (no `message` in the payload, as in
    Slack); another user cannot click what they never saw."""
    client = _client(standin)
    sent = await client.chat_postEphemeral(
        channel="C1",
        user=ALICE,
        thread_ts="1.000100",
        text="Thanks! Talk to a person?",
        blocks=[_button("escalate", "run-42", block_id="esc")],
    )
    (shown,) = standin.ephemerals
    assert shown.recipient == ALICE and shown.thread_ts == "1.000100" and shown.blocks
    click = await standin.click(
        user=ALICE, channel="C1", message_ts=sent["message_ts"], action_id="escalate"
    )
    assert click.event["container"]["is_ephemeral"] is True
    assert "message" not in click.event
    assert click.event["actions"][0] | {"action_ts": "x"} == {
        "action_id": "escalate",
        "block_id": "esc",
        "type": "button",
        "value": "run-42",
        "text": {"type": "plain_text", "text": "escalate"},
        "action_ts": "x",
    }
    with pytest.raises(ValueError, match="ephemeral"):
        await standin.click(
            user=BOB, channel="C1", message_ts=sent["message_ts"], action_id="escalate"
        )


async def test_click_on_what_does_not_exist_is_a_test_bug(standin: SlackStandin) -> None:
    """Clicking a message, button or Home tab that does not exist raises instead of sending a
    payload Slack could never send; `crafted=True` sends one on purpose."""
    _, answer_ts = await _answer_with_feedback(standin)
    with pytest.raises(ValueError, match="no such message"):
        await standin.click(user=ALICE, channel="D1", message_ts="9.000009", action_id="feedback")
    with pytest.raises(ValueError, match="no element"):
        await standin.click(user=ALICE, channel="D1", message_ts=answer_ts, action_id="other")
    with pytest.raises(ValueError, match="no button"):
        await standin.click(
            user=ALICE, channel="D1", message_ts=answer_ts, action_id="feedback", value="meh"
        )
    with pytest.raises(ValueError, match="Home tab"):
        await standin.click(user=ALICE, action_id="save_settings")
    crafted = await standin.click(
        user=ALICE, channel="D1", message_ts=answer_ts, action_id="admin_save", crafted=True
    )
    assert crafted.event["actions"][0]["action_id"] == "admin_save"
    assert standin.clicks == [crafted.event]


async def test_home_tab_click_carries_the_view_and_its_state(standin: SlackStandin) -> None:
    """A Save click in the App Home arrives with container type view, the published view and
    the form's state values, and no channel or response_url."""
    bodies: list[dict[str, Any]] = []
    state = {"dm": {"dm_toggle": {"type": "static_select", "selected_option": {"value": "off"}}}}

    def register(app: AsyncApp) -> None:
        @app.action("save_settings")
        async def on_save(ack: Any, body: dict[str, Any]) -> None:
            await ack()
            bodies.append(body)

    published = await _client(standin).views_publish(
        user_id=ALICE,
        view={"type": "home", "blocks": [_button("save_settings", "save", block_id="save")]},
    )
    async with _socket_app(standin, register):
        await standin.click(user=ALICE, action_id="save_settings", view_state=state)
        await standin.wait_for(lambda: bool(bodies))
    (body,) = bodies
    assert body["container"] == {"type": "view", "view_id": published["view"]["id"]}
    assert body["view"]["type"] == "home" and body["view"]["state"] == {"values": state}
    assert "channel" not in body and "response_url" not in body
    assert body["actions"][0]["value"] == "save"


async def test_respond_through_response_url_replaces_the_clicked_message(
    standin: SlackStandin,
) -> None:
    """Bolt's respond(replace_original=True) changes the message the user clicked."""

    def register(app: AsyncApp) -> None:
        @app.action("feedback")
        async def on_feedback(ack: Any, respond: AsyncRespond) -> None:
            await ack()
            await respond(replace_original=True, text="Thanks for the feedback.")

    _, answer_ts = await _answer_with_feedback(standin)
    async with _socket_app(standin, register):
        await standin.click(
            user=ALICE, channel="D1", message_ts=answer_ts, action_id="feedback", value="good"
        )
        await standin.wait_for(lambda: bool(standin.action_responses))
    assert standin.action_responses[0].replaced
    assert standin.message("D1", answer_ts).text == "Thanks for the feedback."


# --- clicks over HTTP --------------------------------------------------------------------------


async def test_click_http_reaches_bolt_and_forged_or_replayed_clicks_get_401(
    standin: SlackStandin,
) -> None:
    """A signed payload= form reaches Bolt's HTTP app; one signed with another secret, or
    replayed with an old timestamp, is refused with 401 and never reaches the listener."""
    seen: list[str] = []
    app = AsyncApp(client=_client(standin), signing_secret="s3cret")

    @app.action("feedback")
    async def on_feedback(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        seen.append(body["actions"][0]["value"])

    _, answer_ts = await _answer_with_feedback(standin)
    click: dict[str, Any] = {
        "user": ALICE,
        "channel": "D1",
        "message_ts": answer_ts,
        "action_id": "feedback",
    }
    async with _http_app(app) as url:
        assert await standin.click_http(url, "s3cret", value="good", **click) == 200
        assert await standin.click_http(url, "forged", value="bad", **click) == 401
        old = int(time.time()) - 600
        replay = standin.clicks[0]
        assert await standin.post_interactive_http(url, "s3cret", replay, timestamp=old) == 401
    assert seen == ["good"]


# --- App Home, permalinks, user groups, users ----------------------------------------------------


async def test_views_publish_validates_and_keeps_history(standin: SlackStandin) -> None:
    """views.publish refuses what Slack refuses (not a home view, over 100 blocks, a block
    without type, a stale hash) and keeps every published version per user."""
    client = _client(standin)
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "Your conversations"}}
    bad_views = [
        {"type": "modal", "blocks": [section]},
        {"type": "home", "blocks": [section] * 101},
        {"type": "home", "blocks": [{"text": "no type"}]},
    ]
    for view in bad_views:
        with pytest.raises(SlackApiError) as refused:
            await client.views_publish(user_id=ALICE, view=view)
        assert refused.value.response["error"] == "invalid_arguments"
        assert refused.value.response["response_metadata"]["messages"][0].startswith("[ERROR]")
    first = await client.views_publish(user_id=ALICE, view={"type": "home", "blocks": [section]})
    again = await client.views_publish(
        user_id=ALICE,
        view={"type": "home", "blocks": [section, {"type": "divider"}]},
        hash=first["view"]["hash"],
    )
    assert again["view"]["id"] == first["view"]["id"]
    with pytest.raises(SlackApiError) as stale:
        await client.views_publish(
            user_id=ALICE, view={"type": "home", "blocks": []}, hash=first["view"]["hash"]
        )
    assert stale.value.response["error"] == "hash_conflict"
    home = standin.home_views[ALICE]
    assert [len(v["blocks"]) for v in home.history] == [1, 2]
    assert home.text == "Your conversations" and BOB not in standin.home_views


async def test_get_permalink_links_messages_and_thread_replies(standin: SlackStandin) -> None:
    """chat.getPermalink gives the archive link (with thread_ts for a reply) and refuses an
    unknown channel or message."""
    client = _client(standin)
    asked = await standin.user_says(user=ALICE, text="hi", channel="C1", mention=True)
    reply = await client.chat_postMessage(channel="C1", thread_ts=asked.ts, text="hello")
    top = await client.chat_getPermalink(channel="C1", message_ts=asked.ts)
    assert top["permalink"] == f"https://standin.slack.com/archives/C1/p{asked.ts.replace('.', '')}"
    threaded = await client.chat_getPermalink(channel="C1", message_ts=reply["ts"])
    assert threaded["permalink"].endswith(f"?thread_ts={asked.ts}&cid=C1")
    assert standin.permalink("C1", reply["ts"]) == threaded["permalink"]
    for channel, ts, error in (("C404", asked.ts, "channel_not_found"), ("C1", "1.0", None)):
        with pytest.raises(SlackApiError) as refused:
            await client.chat_getPermalink(channel=channel, message_ts=ts)
        assert refused.value.response["error"] == (error or "message_not_found")


async def test_usergroups_list_their_members(standin: SlackStandin) -> None:
    """usergroups.users.list names a group's members; an unknown group is no_such_subteam."""
    standin.add_usergroup("S0SUPPORT", "support", [ALICE, BOB])
    client = _client(standin)
    assert (await client.usergroups_users_list(usergroup="S0SUPPORT"))["users"] == [ALICE, BOB]
    listed = await client.usergroups_list(include_users=True)
    assert [(g["handle"], g["users"]) for g in listed["usergroups"]] == [("support", [ALICE, BOB])]
    with pytest.raises(SlackApiError) as refused:
        await client.usergroups_users_list(usergroup="S0NOPE")
    assert refused.value.response["error"] == "no_such_subteam"


async def test_users_info_says_who_is_an_admin(standin: SlackStandin) -> None:
    """users.info reports is_admin / is_owner as added; an owner is an admin; others are not."""
    standin.add_user(ALICE, name="alice", is_admin=True)
    standin.add_user(BOB, name="bob", is_owner=True)
    client = _client(standin)
    alice = (await client.users_info(user=ALICE))["user"]
    bob = (await client.users_info(user=BOB))["user"]
    carol = (await client.users_info(user="U0CAROL"))["user"]
    assert (alice["is_admin"], alice["is_owner"]) == (True, False)
    assert (bob["is_admin"], bob["is_owner"], bob["is_primary_owner"]) == (True, True, False)
    assert (carol["is_admin"], carol["is_owner"]) == (False, False)


async def test_ephemeral_and_post_refusals(standin: SlackStandin) -> None:
    """chat.postEphemeral needs a user who is in the channel; chat.postMessage where the bot is
    not a member answers not_in_channel."""
    client = _client(standin)
    standin.set_members("C1", [ALICE])
    with pytest.raises(SlackApiError) as outsider:
        await client.chat_postEphemeral(channel="C1", user=BOB, text="psst")
    assert outsider.value.response["error"] == "user_not_in_channel"
    with pytest.raises(SlackApiError) as no_user:
        await client.api_call("chat.postEphemeral", json={"channel": "C1", "text": "psst"})
    assert no_user.value.response["error"] == "invalid_arguments"
    standin.bot_not_in("C2")
    with pytest.raises(SlackApiError) as kicked:
        await client.chat_postMessage(channel="C2", text="hello")
    assert kicked.value.response["error"] == "not_in_channel"
    assert not standin.ephemerals


# --- several workspaces ---------------------------------------------------------------------


async def test_oauth_v2_access_installs_a_second_workspace(standin: SlackStandin) -> None:
    """oauth.v2.access trades a code (once) for a bot token of the other workspace, which then
    works: auth.test names that workspace and its messages carry its bot."""
    standin.register_oauth_code("code-1", "T0OTHER", team_name="Other", user=BOB)
    client = AsyncWebClient(base_url=standin.api_url)
    with pytest.raises(SlackApiError) as wrong:
        await client.oauth_v2_access(client_id=standin.client_id, client_secret="x", code="code-1")
    assert wrong.value.response["error"] == "bad_client_secret"
    installed = await client.oauth_v2_access(
        client_id=standin.client_id, client_secret=standin.client_secret, code="code-1"
    )
    assert installed["token_type"] == "bot" and installed["access_token"].startswith("xoxb-")
    assert installed["team"] == {"id": "T0OTHER", "name": "Other"}
    assert installed["enterprise"] is None and installed["is_enterprise_install"] is False
    assert installed["authed_user"] == {"id": BOB} and installed["app_id"] == "A0APP"
    with pytest.raises(SlackApiError) as reused:
        await client.oauth_v2_access(
            client_id=standin.client_id, client_secret=standin.client_secret, code="code-1"
        )
    assert reused.value.response["error"] == "invalid_code"
    other = _client(standin, installed["access_token"])
    who = await other.auth_test()
    assert (who["team_id"], who["user_id"]) == ("T0OTHER", installed["bot_user_id"])
    assert (await _client(standin).auth_test())["team_id"] == "T0TEAM"
    posted = await other.chat_postMessage(channel="C9", text="hi from the other workspace")
    assert posted["message"]["team"] == "T0OTHER" and posted["message"]["bot_id"] != "BBOT"
    assert [c.args.get("client_secret") for c in standin.calls_to("oauth.v2.access")] == [
        "(redacted)"
    ] * 3


async def test_bolt_oauth_flow_installs_and_answers_in_the_new_workspace(
    standin: SlackStandin, tmp_path: Path
) -> None:
    """Bolt's own OAuth redirect handler installs the app from a stand-in code; a mention in
    that workspace then reaches the app, which answers there with that workspace's token."""
    settings = AsyncOAuthSettings(
        client_id=standin.client_id,
        client_secret=standin.client_secret,
        scopes=["chat:write", "app_mentions:read"],
        installation_store=FileInstallationStore(base_dir=str(tmp_path / "installs")),
        state_store=FileOAuthStateStore(expiration_seconds=60, base_dir=str(tmp_path / "state")),
    )
    app = AsyncApp(
        client=AsyncWebClient(base_url=standin.api_url),
        signing_secret="s3cret",
        oauth_settings=settings,
    )
    standin.register_oauth_code("code-2", "T0OTHER", team_name="Other")
    state = await settings.state_store.async_issue()
    async with _http_app(app) as url:
        redirect = url.replace("/slack/events", "/slack/oauth_redirect")
        cookie = {"slack-app-oauth-state": state}
        async with aiohttp.ClientSession(cookies=cookie) as session:
            async with session.get(redirect, params={"code": "code-2", "state": state}) as resp:
                assert resp.status == 200, await resp.text()

    def register(app: AsyncApp) -> None:
        @app.event("app_mention")
        async def on_mention(say: Any) -> None:
            await say("Hello, other workspace.")

    async with _socket_app(standin, register, app):
        await standin.user_says(user=BOB, text="hi", channel="C9", mention=True, team="T0OTHER")
        await standin.wait_for(lambda: bool(standin.bot_messages("C9")))
    (answer,) = standin.bot_messages("C9")
    assert answer.text == "Hello, other workspace." and answer.team == "T0OTHER"
    assert answer.user == standin.workspaces["T0OTHER"].bot_user_id


async def test_enterprise_install_names_the_org_in_tokens_and_payloads(
    standin: SlackStandin,
) -> None:
    """An org-wide Enterprise Grid install answers with the enterprise and no team, and events
    and clicks from that org carry its enterprise id."""
    standin.register_oauth_code(
        "code-3", "T0GRID", enterprise_id="E0ORG", enterprise_name="Org", is_enterprise_install=True
    )
    client = AsyncWebClient(base_url=standin.api_url)
    installed = await client.oauth_v2_access(
        client_id=standin.client_id, client_secret=standin.client_secret, code="code-3"
    )
    assert installed["team"] is None and installed["is_enterprise_install"] is True
    assert installed["enterprise"] == {"id": "E0ORG", "name": "Org"}
    who = await _client(standin, installed["access_token"]).auth_test()
    assert who["enterprise_id"] == "E0ORG" and who["is_enterprise_install"] is True
    said = await standin.user_says(user=BOB, text="hi", channel="D9", team="T0GRID")
    payload = standin.sent_payload(said.envelope_id)
    assert payload["enterprise_id"] == "E0ORG" and payload["team_id"] == "T0GRID"
    assert payload["authorizations"][0]["is_enterprise_install"] is True
    posted = await _client(standin, installed["access_token"]).chat_postMessage(
        channel="D9", text="hello", blocks=[_button("ok", "1")]
    )
    click = await standin.click(
        user=BOB, channel="D9", message_ts=posted["ts"], action_id="ok", team="T0GRID"
    )
    assert click.event["enterprise"] == {"id": "E0ORG", "name": "Org"}
    assert click.event["team"]["id"] == "T0GRID" and click.event["is_enterprise_install"]


async def test_an_unacked_click_is_not_redelivered(standin: SlackStandin) -> None:
    """Slack retries events that are not acked, but not clicks (the user sees an error)."""
    async with _socket_app(standin, lambda app: None):  # no listener: Bolt acks nothing
        _, answer_ts = await _answer_with_feedback(standin)
        click = await standin.click(
            user=ALICE, channel="D1", message_ts=answer_ts, action_id="feedback", value="good"
        )
        event = await standin.user_says(user=ALICE, text="later", channel="D1")
        # the click's ack deadline passed before the (later) event's did
        await standin.wait_for(
            lambda: any(
                d.event_id == event.event_id and d.retry_attempt for d in standin.deliveries
            )
        )
    assert [d.retry_attempt for d in standin.deliveries if d.envelope_id == click.envelope_id] == [
        0
    ]
    assert click.envelope_id not in standin.acked


async def test_each_workspace_has_its_own_edit_budget() -> None:
    """chat.update limits count per workspace: one workspace spending its budget does not
    rate-limit another workspace's edits."""
    limits = RateLimits(update_per_minute_per_workspace=1, update_burst=1)
    async with SlackStandin(rate_limits=limits) as standin:
        own, other = _client(standin), _client(standin, standin.install_workspace("T0OTHER"))
        mine = await own.chat_postMessage(channel="C1", text="a")
        theirs = await other.chat_postMessage(channel="C2", text="b")
        await own.chat_update(channel="C1", ts=mine["ts"], text="a2")
        with pytest.raises(SlackApiError) as limited:
            await own.chat_update(channel="C1", ts=mine["ts"], text="a3")
        assert limited.value.response["error"] == "ratelimited"
        await other.chat_update(channel="C2", ts=theirs["ts"], text="b2")
        assert standin.message("C2", theirs["ts"]).text == "b2"
