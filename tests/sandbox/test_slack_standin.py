"""The Slack stand-in, driven by the real slack_sdk / slack_bolt clients over real sockets."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from sandbox.slack import RateLimits, SlackStandin

_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


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
    standin: SlackStandin, register: Callable[[AsyncApp], None], connections: int = 1
) -> AsyncIterator[AsyncApp]:
    """A real Bolt AsyncApp connected to the stand-in by Socket Mode."""
    app = AsyncApp(client=_client(standin), signing_secret="unused-in-socket-mode")
    register(app)
    handlers = [AsyncSocketModeHandler(app, standin.app_token) for _ in range(connections)]
    try:
        for handler in handlers:
            handler.client.proxy = None
            await handler.connect_async()
        await standin.wait_for(lambda: standin.hub.num_connections == connections, timeout=5)
        yield app
    finally:
        for handler in handlers:
            await handler.close_async()


# --- Web API ---------------------------------------------------------------------------------


async def test_post_then_update_changes_stored_text(standin: SlackStandin) -> None:
    """chat.update replaces the text a user sees and keeps the edit history."""
    client = _client(standin)
    posted = await client.chat_postMessage(channel="D1", text="thinking…", thread_ts="1.0")
    assert posted["message"]["bot_id"] == "BBOT"
    await client.chat_update(channel="D1", ts=posted["ts"], text="The answer is 42.")
    msg = standin.message("D1", posted["ts"])
    assert msg.text == "The answer is 42."
    assert [text for _, text in msg.edits] == ["The answer is 42."]
    assert msg.thread_ts == "1.0"
    assert [c.status for c in standin.calls_to("chat.update")] == [200]


async def test_ts_values_are_unique_and_increasing(standin: SlackStandin) -> None:
    """Every posted message gets a distinct ts later than the previous one."""
    client = _client(standin)
    ts = [(await client.chat_postMessage(channel="C1", text=str(i)))["ts"] for i in range(5)]
    assert ts == sorted(ts)
    assert len(set(ts)) == 5
    assert all(len(t.split(".")[1]) == 6 for t in ts)


async def test_update_errors_match_slack(standin: SlackStandin) -> None:
    """chat.update refuses unknown, user-authored and over-long messages with Slack's codes."""
    client = _client(standin)
    said = await standin.user_says(user="U1", text="hello", channel="D1")
    posted = await client.chat_postMessage(channel="D1", text="hi")
    cases = [
        ({"ts": "999.000001", "text": "x"}, "message_not_found"),
        ({"ts": said.ts, "text": "x"}, "cant_update_message"),
        ({"ts": posted["ts"], "text": "x" * 4001}, "msg_too_long"),
    ]
    for kwargs, code in cases:
        with pytest.raises(SlackApiError) as err:
            await client.chat_update(channel="D1", **kwargs)
        assert err.value.response["error"] == code
    assert standin.message("D1", posted["ts"]).text == "hi"


async def test_injected_429_surfaces_with_retry_after(standin: SlackStandin) -> None:
    """An injected 429 reaches slack_sdk as SlackApiError with status 429 and Retry-After."""
    standin.inject("chat.postMessage", status=429, headers={"Retry-After": "7"})
    client = _client(standin)
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C1", text="hi")
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] == "7"
    assert err.value.response["error"] == "ratelimited"
    ok = await client.chat_postMessage(channel="C1", text="hi")  # only the next call was hit
    assert ok["ok"] is True
    assert [c.status for c in standin.calls_to("chat.postMessage")] == [429, 200]
    assert standin.ratelimited_count == 1


async def test_injected_200_error_body(standin: SlackStandin) -> None:
    """inject() can answer HTTP 200 with any Slack error, for the chosen number of calls."""
    standin.inject("chat.update", body={"ok": False, "error": "edit_window_closed"}, times=2)
    client = _client(standin)
    posted = await client.chat_postMessage(channel="C1", text="hi")
    for _ in range(2):
        with pytest.raises(SlackApiError) as err:
            await client.chat_update(channel="C1", ts=posted["ts"], text="new")
        assert err.value.response["error"] == "edit_window_closed"
    await client.chat_update(channel="C1", ts=posted["ts"], text="new")
    assert standin.message("C1", posted["ts"]).text == "new"


async def test_proxy_pages_reach_slack_sdk_as_non_json_errors(standin: SlackStandin) -> None:
    """plain_5xx / html_5xx answer a proxy's text or HTML page, not Slack's JSON."""
    client = _client(standin)
    standin.inject("chat.postMessage", fault="plain_5xx")
    standin.inject("chat.update", fault="html_5xx", status=504)
    with pytest.raises(SlackApiError) as plain:
        await client.chat_postMessage(channel="C1", text="hi")
    assert plain.value.response.status_code == 503
    assert str(plain.value.response.data).startswith("upstream connect error")
    with pytest.raises(SlackApiError) as html:
        await client.chat_update(channel="C1", ts="1.0", text="hi")
    assert (html.value.response.status_code, html.value.response.data) == (504, {})
    assert [c.error for c in standin.calls] == ["non_json_503", "non_json_504"]


async def test_retry_after_date_fault_sends_an_http_date_at_least_that_far_ahead(
    standin: SlackStandin,
) -> None:
    """retry_after_date answers 429 with `Retry-After` as an HTTP date, rounded up."""
    standin.inject("chat.update", fault="retry_after_date", retry_after=5)
    before = time.time()
    with pytest.raises(SlackApiError) as err:
        await _client(standin).chat_update(channel="C1", ts="1.0", text="hi")
    assert err.value.response.status_code == 429
    when = parsedate_to_datetime(err.value.response.headers["Retry-After"]).timestamp()
    assert before + 5 <= when <= before + 7


async def test_reset_fault_closes_the_connection_without_an_answer(standin: SlackStandin) -> None:
    """reset closes the connection; slack_sdk retries once itself, then raises."""
    standin.inject("chat.postMessage", fault="reset", times=2)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await _client(standin).chat_postMessage(channel="C1", text="hi")
    assert [c.error for c in standin.calls] == ["connection_reset"] * 2
    assert standin.bot_messages("C1") == []


async def test_plain_200_answers_text_that_slack_sdk_cannot_validate(
    standin: SlackStandin,
) -> None:
    """plain_200 is HTTP 200 with a text/plain body: slack_sdk's own check trips over it."""
    standin.inject("chat.update", fault="plain_200")
    with pytest.raises(AttributeError):
        await _client(standin).chat_update(channel="C1", ts="1.0", text="hi")
    assert [(c.status, c.error) for c in standin.calls] == [(200, "non_json_200")]


async def test_reset_after_apply_takes_effect_then_closes_the_connection(
    standin: SlackStandin,
) -> None:
    """reset_after_apply posts the message, then drops the answer (twice: slack_sdk retries
    a reset once itself, and the retry takes effect too)."""
    standin.inject("chat.postMessage", fault="reset_after_apply", times=2)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await _client(standin).chat_postMessage(channel="C1", text="hi")
    assert [c.error for c in standin.calls] == ["connection_reset"] * 2
    assert [m.text for m in standin.bot_messages("C1")] == ["hi", "hi"]


async def test_external_upload_flow_shares_the_file_in_the_thread(standin: SlackStandin) -> None:
    """files.getUploadURLExternal → POST the bytes → files.completeUploadExternal: the file
    is stored and shows in the thread as a bot message carrying it (slack_sdk's own v2 flow)."""
    client = _client(standin)
    parent = await client.chat_postMessage(channel="C1", text="question")
    content = "# Full answer\n\nÄrger über Rückerstattungen…\n"
    done = await client.files_upload_v2(
        channel="C1",
        thread_ts=parent["ts"],
        content=content,
        filename="answer.md",
        title="Full answer",
    )
    file_id = done["file"]["id"]
    stored = standin.files[file_id]
    assert (stored.text, stored.title) == (content, "Full answer")
    assert stored.length == len(content.encode())
    (shared,) = [m for m in standin.thread("C1", parent["ts"]) if m.files]
    assert shared.is_bot and shared.thread_ts == parent["ts"]
    assert [f["id"] for f in shared.files or []] == [file_id]


async def test_external_upload_enforces_its_arguments_and_order(standin: SlackStandin) -> None:
    """No filename or length: invalid_arguments; completing before the bytes arrived, or an
    unknown id: file_not_found; an unknown upload URL: 404."""
    client = _client(standin)
    with pytest.raises(SlackApiError) as missing:
        await client.api_call("files.getUploadURLExternal", json={"filename": "a.md"})
    assert missing.value.response["error"] == "invalid_arguments"
    got = await client.api_call(
        "files.getUploadURLExternal", json={"filename": "a.md", "length": 3}
    )
    with pytest.raises(SlackApiError) as early:
        await client.api_call(
            "files.completeUploadExternal",
            json={"files": [{"id": got["file_id"]}], "channel_id": "C1"},
        )
    assert early.value.response["error"] == "file_not_found"
    async with aiohttp.ClientSession() as session:
        async with session.post(got["upload_url"] + "x", data=b"abc") as unknown:
            assert unknown.status == 404
        async with session.post(got["upload_url"], data=b"abc") as uploaded:
            assert (uploaded.status, await uploaded.text()) == (200, "OK - 3")
    assert standin.files[got["file_id"]].content == b"abc"


async def test_message_metadata_is_checked_and_shown_only_when_asked_for(
    standin: SlackStandin,
) -> None:
    """chat.postMessage keeps `metadata` ({event_type, event_payload}, else
    invalid_metadata_format); conversations.replies shows it with include_all_metadata only."""
    client = _client(standin)
    parent = await client.chat_postMessage(channel="C1", text="question")
    metadata = {"event_type": "powabot_answer", "event_payload": {"answer_id": "a1"}}
    await client.chat_postMessage(
        channel="C1", thread_ts=parent["ts"], text="answer", metadata=metadata
    )
    with pytest.raises(SlackApiError) as bad:
        await client.chat_postMessage(channel="C1", text="x", metadata={"event_type": "t"})
    assert bad.value.response["error"] == "invalid_metadata_format"
    plain = await client.conversations_replies(channel="C1", ts=parent["ts"])
    assert all("metadata" not in m for m in plain["messages"])
    full = await client.conversations_replies(
        channel="C1", ts=parent["ts"], include_all_metadata=True
    )
    assert [m.get("metadata") for m in full["messages"]] == [None, metadata]


async def test_slow_fault_answers_normally_after_the_delay(standin: SlackStandin) -> None:
    """slow delays the answer; the call itself goes through."""
    standin.inject("chat.postMessage", fault="slow", delay=0.2)
    started = time.monotonic()
    await _client(standin).chat_postMessage(channel="C1", text="hi")
    assert time.monotonic() - started >= 0.2
    assert [m.text for m in standin.bot_messages("C1")] == ["hi"]


async def test_error_injection_names_slacks_code(standin: SlackStandin) -> None:
    """inject(error=...) answers HTTP 200 with that Slack error code."""
    standin.inject("chat.postMessage", error="not_in_channel")
    with pytest.raises(SlackApiError) as err:
        await _client(standin).chat_postMessage(channel="C1", text="hi")
    assert (err.value.response.status_code, err.value.response["error"]) == (200, "not_in_channel")


async def test_chaos_fails_about_rate_of_write_calls_repeatably(standin: SlackStandin) -> None:
    """chaos(rate, seed) fails that share of write calls, the same ones for the same seed."""

    async def run(seed: int) -> list[str | None]:
        standin.calls.clear()
        chaos = standin.chaos(0.3, seed=seed, kinds=("ratelimited_200", "plain_5xx"))
        assert chaos is not None
        client = AsyncWebClient(
            token=standin.bot_token, base_url=standin.api_url, retry_handlers=[]
        )
        for _ in range(100):
            with contextlib.suppress(SlackApiError):
                await client.chat_postMessage(channel="C1", text="hi")
        await client.auth_test()  # reads are left alone
        return [c.error for c in standin.calls]

    first = await run(7)
    assert first == await run(7)
    failed = [e for e in first if e is not None]
    assert 15 <= len(failed) <= 45
    assert set(failed) == {"ratelimited", "non_json_503"}
    assert first[-1] is None
    standin.chaos(None)
    await _client(standin).chat_postMessage(channel="C1", text="calm")


async def test_rate_limits_answer_429_after_the_burst() -> None:
    """Past the burst, postMessage (per channel) and update (per workspace) answer 429."""
    limits = RateLimits(
        post_per_second_per_channel=0.01,
        post_burst=3,
        update_burst=2,
        update_per_minute_per_workspace=1,
    )
    async with SlackStandin(rate_limits=limits) as standin:
        client = _client(standin)
        posted = [await client.chat_postMessage(channel="C1", text="a") for _ in range(3)]
        with pytest.raises(SlackApiError) as err:
            await client.chat_postMessage(channel="C1", text="a")
        assert err.value.response.status_code == 429
        assert int(err.value.response.headers["Retry-After"]) >= 1
        await client.chat_postMessage(channel="C2", text="other channel has its own bucket")
        for p in posted[:2]:
            await client.chat_update(channel="C1", ts=p["ts"], text="b")
        with pytest.raises(SlackApiError) as err:
            await client.chat_update(channel="C1", ts=posted[2]["ts"], text="b")
        assert err.value.response.status_code == 429
        assert int(err.value.response.headers["Retry-After"]) >= 1
        assert standin.ratelimited_count == 2
        assert standin.message("C1", posted[2]["ts"]).text == "a"


async def test_tokens_are_checked(standin: SlackStandin) -> None:
    """A wrong token is invalid_auth; the bot token cannot open a Socket Mode connection."""
    with pytest.raises(SlackApiError) as err:
        await _client(standin, token="xoxb-wrong").auth_test()
    assert err.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as err:
        await _client(standin).apps_connections_open(app_token=standin.bot_token)
    assert err.value.response["error"] == "not_allowed_token_type"
    auth = await _client(standin).auth_test(team_id="T0TEAM")  # unknown args are accepted
    assert (auth["user_id"], auth["bot_id"], auth["team_id"]) == ("UBOT", "BBOT", "T0TEAM")


async def test_replies_reactions_and_users(standin: SlackStandin) -> None:
    """conversations.replies lists parent first; reactions and users.info answer like Slack."""
    client = _client(standin)
    parent = await standin.user_says(user="U1", text="question", channel="C1", mention=True)
    reply = await client.chat_postMessage(channel="C1", text="answer", thread_ts=parent.ts)
    replies = await client.conversations_replies(channel="C1", ts=parent.ts)
    assert [m["text"] for m in replies["messages"]] == ["<@UBOT> question", "answer"]
    assert replies["messages"][0]["reply_count"] == 1
    assert [m.ts for m in standin.thread("C1", parent.ts)] == [parent.ts, reply["ts"]]
    await client.reactions_add(channel="C1", timestamp=parent.ts, name="eyes")
    with pytest.raises(SlackApiError) as err:
        await client.reactions_add(channel="C1", timestamp=parent.ts, name="eyes")
    assert err.value.response["error"] == "already_reacted"
    await client.reactions_remove(channel="C1", timestamp=parent.ts, name="eyes")
    assert standin.message("C1", parent.ts).reactions == {}
    user = await client.users_info(user="U1")
    assert user["user"]["id"] == "U1" and "display_name" in user["user"]["profile"]
    with pytest.raises(SlackApiError) as err:
        await client.users_info(user="nobody")
    assert err.value.response["error"] == "user_not_found"


async def test_streaming_accumulates_text(standin: SlackStandin) -> None:
    """The SDK's chat_stream helper builds one message whose text is every appended piece."""
    client = _client(standin)
    said = await standin.user_says(user="U1", text="q", channel="D1")
    await client.assistant_threads_setStatus(channel_id="D1", thread_ts=said.ts, status="thinking")
    streamer = await client.chat_stream(channel="D1", thread_ts=said.ts, buffer_size=1)
    await streamer.append(markdown_text="Hello ")
    await streamer.append(markdown_text="wor")
    await streamer.append(
        chunks=[{"type": "task_update", "id": "t1", "title": "KB", "status": "complete"}]
    )
    await streamer.stop(markdown_text="ld!", blocks=[{"type": "divider"}])
    ts = standin.calls_to("chat.startStream")[0].response["ts"]
    msg = standin.message("D1", ts)
    assert msg.text == "Hello world!"
    assert msg.stream_state == "stopped" and msg.blocks == [{"type": "divider"}]
    assert [c["type"] for c in msg.chunks] == ["task_update"]
    assert standin.assistant_threads[("D1", said.ts)].status == ""  # cleared by the reply
    with pytest.raises(SlackApiError) as err:
        await client.chat_appendStream(channel="D1", ts=ts, markdown_text="more")
    assert err.value.response["error"] == "message_not_in_streaming_state"


async def test_streaming_refusals(standin: SlackStandin) -> None:
    """Channel streams need a recipient; a workspace without streaming refuses startStream."""
    client = _client(standin)
    with pytest.raises(SlackApiError) as err:
        await client.chat_startStream(channel="C1", thread_ts="1.000001", markdown_text="x")
    assert err.value.response["error"] == "missing_recipient_user_id"
    started = await client.chat_startStream(
        channel="C1", thread_ts="1.000001", recipient_user_id="U1", recipient_team_id="T0TEAM"
    )
    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel="C1", ts=started["ts"], text="edit while streaming")
    assert err.value.response["error"] == "streaming_state_conflict"
    standin.streaming_enabled = False
    with pytest.raises(SlackApiError) as err:
        await client.chat_startStream(channel="D1", thread_ts="1.000001", markdown_text="x")
    assert err.value.response["error"] == "channel_type_not_supported"


# --- Socket Mode -----------------------------------------------------------------------------


async def test_bolt_receives_dm_and_mention_and_acks(standin: SlackStandin) -> None:
    """A Bolt app gets a DM message and an app_mention, acks both, and ignores its own echo."""
    seen: list[dict[str, Any]] = []

    def register(app: AsyncApp) -> None:
        @app.event("message")
        async def on_message(event: dict[str, Any], say: Any) -> None:
            seen.append(event)
            await say(text="got it", thread_ts=event["ts"])

        @app.event("app_mention")
        async def on_mention(event: dict[str, Any]) -> None:
            seen.append(event)

    async with _socket_app(standin, register):
        dm = await standin.user_says(user="U1", text="help me", channel="D1")
        mention = await standin.user_says(user="U2", text="hi", channel="C1", mention=True)
        await standin.wait_for(lambda: {dm.envelope_id, mention.envelope_id} <= standin.acked)
        await standin.wait_for(lambda: len(standin.bot_messages("D1")) == 1)
        echo_ids = {d.envelope_id for d in standin.deliveries} - {
            dm.envelope_id,
            mention.envelope_id,
        }
        await standin.wait_for(lambda: bool(echo_ids) and echo_ids <= standin.acked)
    assert {(e["type"], e["text"]) for e in seen} == {
        ("message", "help me"),
        ("app_mention", "<@UBOT> hi"),
    }
    dm_event = next(e for e in seen if e["type"] == "message")
    assert dm_event["channel_type"] == "im"
    assert standin.bot_messages("D1")[0].thread_ts == dm.ts


async def test_unacked_envelope_is_redelivered(standin: SlackStandin) -> None:
    """An event no listener matches is not acked, so it comes again with retry_attempt + 1."""
    async with _socket_app(standin, lambda app: None):
        envelope_id = await standin.deliver(
            {"type": "reaction_added", "user": "U1", "reaction": "eyes", "event_ts": "1.000001"}
        )
        await standin.wait_for(
            lambda: any(
                d.envelope_id == envelope_id and d.retry_attempt == 1 for d in standin.deliveries
            )
        )
    retries = [d for d in standin.deliveries if d.envelope_id == envelope_id]
    assert retries[1].retry_reason == "timeout"
    assert retries[0].event_id == retries[1].event_id
    assert envelope_id not in standin.acked


async def test_redeliver_reaches_listener_with_retry_header(standin: SlackStandin) -> None:
    """redeliver() resends the same event_id, and Bolt exposes it as x-slack-retry-num."""
    retry_nums: list[tuple[str, str]] = []

    def register(app: AsyncApp) -> None:
        @app.event("message")
        async def on_message(body: dict[str, Any], request: AsyncBoltRequest) -> None:
            retry_nums.append(
                (body["event_id"], request.headers.get("x-slack-retry-num", ["?"])[0])
            )

    async with _socket_app(standin, register):
        said = await standin.user_says(user="U1", text="hello", channel="D1")
        await standin.wait_for(lambda: len(retry_nums) == 1)
        await standin.redeliver(said.envelope_id)
        await standin.wait_for(lambda: len(retry_nums) == 2)
    assert retry_nums == [(said.event_id, "0"), (said.event_id, "1")]


async def test_events_queue_until_connected_and_survive_disconnect(standin: SlackStandin) -> None:
    """Events sent before the app connects, or across a disconnect, still reach it."""
    texts: list[str] = []

    def register(app: AsyncApp) -> None:
        @app.event("message")
        async def on_message(event: dict[str, Any]) -> None:
            texts.append(event["text"])

    early = await standin.user_says(user="U1", text="before connect", channel="D1")
    async with _socket_app(standin, register):
        await standin.wait_for(lambda: early.envelope_id in standin.acked)
        await standin.disconnect_all()
        await standin.wait_connected()
        late = await standin.user_says(user="U1", text="after reconnect", channel="D1")
        await standin.wait_for(lambda: late.envelope_id in standin.acked)
    assert texts == ["before connect", "after reconnect"]
    assert len(standin.calls_to("apps.connections.open")) == 2


async def test_envelopes_go_to_any_one_live_connection_at_random() -> None:
    """Like Slack with several replicas: each envelope goes down one connection, picked at
    random, so every connection gets some and none gets them in a fixed turn."""
    async with SlackStandin(ack_timeout=30, socket_seed=7) as standin:
        async with _socket_app(standin, lambda app: None, connections=3):
            for i in range(30):
                await standin.deliver({"type": "reaction_added", "event_ts": f"{i}.000001"})
            await standin.wait_for(lambda: len(standin.deliveries) >= 30)
        first = standin.deliveries[:30]
    assert len({d.envelope_id for d in first}) == 30  # one connection each
    assert {d.connection for d in first} == {1, 2, 3}
    turns = [d.connection for d in first]
    assert turns != [1, 2, 3] * 10  # not round-robin


async def test_more_than_ten_connections_are_refused_too_many_websockets() -> None:
    """The 11th live connection of an app is told `too_many_websockets` and closed; the ten
    before it stay connected."""
    async with SlackStandin() as standin, aiohttp.ClientSession() as session:
        sockets = []
        try:
            for _ in range(11):
                opened = await _client(standin).apps_connections_open(app_token=standin.app_token)
                ws = await session.ws_connect(str(opened["url"]))
                sockets.append(ws)
                first = await ws.receive_json(timeout=5)
                if first["type"] != "hello":
                    break
            assert [first["type"], first["reason"]] == ["disconnect", "too_many_websockets"]
            assert len(sockets) == 11
            closing = await sockets[-1].receive(timeout=5)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert standin.hub.num_connections == 10
            assert standin.hub.refused_connections == 1
        finally:
            for ws in sockets:
                await ws.close()


async def test_redeliver_once_sends_each_event_again_down_another_connection() -> None:
    """The bench's duplicate delivery: each event comes twice, in two envelopes, down two
    different connections, the second with retry_attempt 1 (Bolt's x-slack-retry-num)."""
    seen: list[tuple[str, str]] = []

    def register(app: AsyncApp) -> None:
        @app.event("message")
        async def on_message(body: dict[str, Any], request: AsyncBoltRequest) -> None:
            seen.append((body["event_id"], request.headers.get("x-slack-retry-num", ["?"])[0]))

    async with SlackStandin(ack_timeout=5, socket_seed=3, redeliver_once=True) as standin:
        async with _socket_app(standin, register, connections=2):
            said = await standin.user_says(user="U1", text="hello", channel="D1")
            await standin.wait_for(lambda: len(seen) == 2)
            await standin.wait_for(lambda: len(standin.acked) >= 2)
        copies = [d for d in standin.deliveries if d.event_id == said.event_id]
    assert sorted(seen) == [(said.event_id, "0"), (said.event_id, "1")]
    assert len(copies) == 2
    assert copies[0].connection != copies[1].connection
    assert copies[0].envelope_id != copies[1].envelope_id
    assert [c.retry_attempt for c in copies] == [0, 1]
    assert copies[1].retry_reason == "timeout"


# --- HTTP mode -------------------------------------------------------------------------------


async def test_deliver_http_reaches_bolt_web_app(standin: SlackStandin) -> None:
    """A signed event POSTed to Bolt's aiohttp app reaches the listener; a bad signature is 401."""
    seen: list[str] = []
    app = AsyncApp(client=_client(standin), signing_secret="s3cret")

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any]) -> None:
        seen.append(event["text"])

    runner = web.AppRunner(app.web_app(path="/slack/events"))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    try:
        event = {
            "type": "app_mention",
            "user": "U1",
            "text": "<@UBOT> hi",
            "ts": "1.000001",
            "channel": "C1",
            "event_ts": "1.000001",
        }
        assert await standin.deliver_http(url, "wrong", event) == 401
        assert await standin.deliver_http(url, "s3cret", event, retry_num=1) == 200
        await standin.wait_for(lambda: seen == ["<@UBOT> hi"])
    finally:
        await runner.cleanup()
