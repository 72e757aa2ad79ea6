"""The Slack stand-in enforces Slack's rules for native streaming and the agent surfaces.

Each test drives the stand-in over real HTTP with slack_sdk's AsyncWebClient (or a real Bolt app
over Socket Mode) and shows the refusal real Slack gives, so a bot test catches what Slack would
refuse: the stream content-mode lock, chunk shapes, task_display_mode, the streaming tiers,
expiry, agent sessions, assistant thread status / prompts / title, and the agent events.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from sandbox.slack import RateLimits, SlackStandin

_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
DM = "D0AGENT"
CHANNEL = "C0AGENT"
QUESTION_TS = "1700000000.000100"
TASK = {"type": "task_update", "id": "billing", "title": "Billing specialist"}
RECIPIENT = {"recipient_user_id": "U1", "recipient_team_id": "T0TEAM"}


@pytest.fixture(autouse=True)
def _scrub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SLACK_") or name.lower() in _PROXY_VARS:
            monkeypatch.delenv(name)


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandin]:
    async with SlackStandin(ack_timeout=0.3) as s:
        yield s


@pytest.fixture
def client(standin: SlackStandin) -> AsyncWebClient:
    return AsyncWebClient(token=standin.bot_token, base_url=standin.api_url)


async def _refused(call: Any) -> str:
    """The Slack error code a call was refused with (fails the test if it was accepted)."""
    with pytest.raises(SlackApiError) as err:
        await call
    assert err.value.response.status_code == 200
    return str(err.value.response["error"])


async def _start(client: AsyncWebClient, **content: Any) -> str:
    started = await client.chat_startStream(channel=DM, thread_ts=QUESTION_TS, **content)
    return str(started["ts"])


# --- content mode ------------------------------------------------------------------------------


async def test_a_markdown_stream_refuses_chunks_and_is_then_unusable(
    standin: SlackStandin, client: AsyncWebClient
) -> None:
    """First content markdown_text: a chunks append is streaming_mode_mismatch, the stream is
    dead (append/stop refused) and the message can be edited with chat.update like a stopped one."""
    ts = await _start(client, markdown_text="The refund ")
    await client.chat_appendStream(channel=DM, ts=ts, markdown_text="window is ")
    mixed = client.chat_appendStream(channel=DM, ts=ts, chunks=[{**TASK, "status": "pending"}])
    assert await _refused(mixed) == "streaming_mode_mismatch"
    msg = standin.message(DM, ts)
    assert (msg.stream_state, msg.stream_mode, msg.text) == (
        "broken",
        "markdown",
        "The refund window is ",
    )
    assert msg.tasks == {}
    again = client.chat_appendStream(channel=DM, ts=ts, markdown_text="30 days.")
    assert await _refused(again) == "message_not_in_streaming_state"
    assert await _refused(client.chat_stopStream(channel=DM, ts=ts)) == (
        "message_not_in_streaming_state"
    )
    await client.chat_update(channel=DM, ts=ts, text="The refund window is 30 days.")
    assert msg.text == "The refund window is 30 days."


async def test_a_chunks_stream_refuses_markdown_text_on_append_and_on_stop(
    standin: SlackStandin, client: AsyncWebClient
) -> None:
    """First content chunks: markdown_text on appendStream, or on stopStream, is refused with
    streaming_mode_mismatch and breaks the stream."""
    appended = await _start(client, chunks=[{**TASK, "status": "in_progress"}])
    mixed = client.chat_appendStream(channel=DM, ts=appended, markdown_text="Answer")
    assert await _refused(mixed) == "streaming_mode_mismatch"
    stopped = await _start(client, chunks=[{"type": "markdown_text", "text": "Answer"}])
    mixed = client.chat_stopStream(channel=DM, ts=stopped, markdown_text=" end")
    assert await _refused(mixed) == "streaming_mode_mismatch"
    for ts in (appended, stopped):
        assert standin.message(DM, ts).stream_state == "broken"
    assert standin.message(DM, stopped).text == "Answer"


async def test_calls_without_content_do_not_fix_the_mode(
    standin: SlackStandin, client: AsyncWebClient
) -> None:
    """A bare startStream leaves the mode open (the first append fixes it) and a bare stopStream
    closes any stream; slack_sdk's chat_stream helper (chunks throughout) is accepted."""
    chunks_first = await _start(client)
    await client.chat_appendStream(
        channel=DM, ts=chunks_first, chunks=[{**TASK, "status": "pending"}]
    )
    await client.chat_stopStream(channel=DM, ts=chunks_first)
    markdown_first = await _start(client)
    await client.chat_appendStream(channel=DM, ts=markdown_first, markdown_text="Hi")
    await client.chat_stopStream(channel=DM, ts=markdown_first, chunks=[])
    streamer = await client.chat_stream(channel=DM, thread_ts=QUESTION_TS, buffer_size=1)
    await streamer.append(chunks=[{**TASK, "status": "complete"}])
    await streamer.append(markdown_text="Thirty days.")
    await streamer.stop(markdown_text=" Done.")
    helper = standin.message(DM, str(streamer.ts))
    modes = [standin.message(DM, ts).stream_mode for ts in (chunks_first, markdown_first)]
    assert modes == ["chunks", "markdown"]
    assert (helper.stream_mode, helper.stream_state, helper.text) == (
        "chunks",
        "stopped",
        "Thirty days. Done.",
    )


async def test_markdown_text_and_chunks_in_one_call_are_invalid_arguments(
    standin: SlackStandin, client: AsyncWebClient
) -> None:
    """One call carrying both markdown_text and chunks is refused; nothing is posted or added."""
    both: dict[str, Any] = {
        "markdown_text": "a",
        "chunks": [{"type": "markdown_text", "text": "b"}],
    }
    assert await _refused(_start(client, **both)) == "invalid_arguments"
    assert standin.bot_messages(DM) == []
    ts = await _start(client, markdown_text="a")
    assert (
        await _refused(client.chat_appendStream(channel=DM, ts=ts, **both)) == "invalid_arguments"
    )
    assert await _refused(client.chat_stopStream(channel=DM, ts=ts, **both)) == "invalid_arguments"
    msg = standin.message(DM, ts)
    assert (msg.text, msg.stream_state) == ("a", "streaming")


# --- chunks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chunk",
    [
        "just text",
        {"type": "thinking", "text": "hmm"},
        {"type": "markdown_text"},
        {"type": "markdown_text", "text": 5},
        {"type": "task_update", "title": "Billing specialist", "status": "pending"},
        {**TASK, "id": ""},
        {**TASK, "status": "done"},
        {**TASK, "status": "pending", "title": ""},
        {**TASK, "status": "pending", "title": "x" * 257},
        {**TASK, "status": "pending", "details": 3},
        {**TASK, "status": "pending", "output": ["x"]},
        {**TASK, "status": "pending", "sources": {"type": "url"}},
        {**TASK, "status": "pending", "sources": [{"type": "file", "url": "u", "text": "t"}]},
        {**TASK, "status": "pending", "sources": [{"type": "url", "url": "https://x"}]},
        {"type": "plan_update"},
        {"type": "blocks", "blocks": {"type": "divider"}},
    ],
)
async def test_malformed_chunks_are_invalid_chunks(
    standin: SlackStandin, client: AsyncWebClient, chunk: Any
) -> None:
    """A chunk of an unknown type or a wrong shape is refused with invalid_chunks, at start and
    on append, and the stream stays usable."""
    assert await _refused(_start(client, chunks=[chunk])) == "invalid_chunks"
    ts = await _start(client, chunks=[{"type": "markdown_text", "text": "ok "}])
    refused = client.chat_appendStream(channel=DM, ts=ts, chunks=[chunk])
    assert await _refused(refused) == "invalid_chunks"
    await client.chat_appendStream(
        channel=DM, ts=ts, chunks=[{"type": "markdown_text", "text": "go"}]
    )
    assert standin.message(DM, ts).text == "ok go"


async def test_markdown_over_12000_characters_per_call_is_msg_too_long(
    standin: SlackStandin, client: AsyncWebClient
) -> None:
    """12,000 characters of markdown per call pass, in one chunk or spread over several; one
    more is msg_too_long and nothing of that call is added."""
    ts = await _start(client, chunks=[{"type": "markdown_text", "text": "a" * 12_000}])
    halves = [
        {"type": "markdown_text", "text": "b" * 6_000},
        {"type": "markdown_text", "text": "c" * 6_001},
    ]
    assert (
        await _refused(client.chat_appendStream(channel=DM, ts=ts, chunks=halves)) == "msg_too_long"
    )
    assert await _refused(_start(client, markdown_text="d" * 12_001)) == "msg_too_long"
    assert standin.message(DM, ts).text == "a" * 12_000


async def test_task_updates_merge_by_id_into_cards_with_a_plan(
    standin: SlackStandin, client: AsyncWebClient
) -> None:
    """task_update chunks merge by id into the card a user sees; plan_update sets the plan title;
    the display mode chosen at startStream is kept, and every chunk is kept in order."""
    kb = {"type": "url", "url": "https://kb.example/refunds", "text": "Refund policy"}
    ts = await _start(
        client,
        task_display_mode="plan",
        chunks=[
            {"type": "plan_update", "title": "Asking 2 specialists"},
            {**TASK, "status": "pending"},
            {"type": "task_update", "id": "tech", "title": "Tech specialist", "status": "pending"},
        ],
    )
    await client.chat_appendStream(
        channel=DM,
        ts=ts,
        chunks=[{**TASK, "status": "in_progress", "details": "searching the billing KB"}],
    )
    await client.chat_stopStream(
        channel=DM,
        ts=ts,
        chunks=[
            {**TASK, "status": "complete", "output": "done in 2.1 s", "sources": [kb]},
            {"type": "task_update", "id": "tech", "title": "Tech specialist", "status": "error"},
            {"type": "markdown_text", "text": "Refunds within 30 days."},
            {"type": "blocks", "blocks": [{"type": "divider"}]},
        ],
    )
    msg = standin.message(DM, ts)
    assert msg.task_display_mode == "plan" and msg.plan_title == "Asking 2 specialists"
    assert msg.tasks == {
        "billing": {
            "id": "billing",
            "title": "Billing specialist",
            "status": "complete",
            "details": "searching the billing KB",
            "output": "done in 2.1 s",
            "sources": [kb],
        },
        "tech": {"id": "tech", "title": "Tech specialist", "status": "error"},
    }
    assert [c["type"] for c in msg.chunks] == ["plan_update"] + ["task_update"] * 5 + ["blocks"]
    assert msg.text == "Refunds within 30 days." and msg.blocks == [{"type": "divider"}]
    assert msg.created <= msg.edits[0][0] and len(msg.edits) == 2


async def test_task_display_mode_is_chosen_at_start_only(
    standin: SlackStandin, client: AsyncWebClient
) -> None:
    """task_display_mode must be timeline or plan, and only chat.startStream takes it."""
    assert await _refused(_start(client, task_display_mode="cards")) == "invalid_arguments"
    ts = await _start(client, task_display_mode="timeline")
    on_append = client.chat_appendStream(
        channel=DM, ts=ts, task_display_mode="plan", chunks=[{**TASK, "status": "pending"}]
    )
    assert await _refused(on_append) == "invalid_arguments"
    on_stop = client.chat_stopStream(channel=DM, ts=ts, task_display_mode="plan")
    assert await _refused(on_stop) == "invalid_arguments"
    msg = standin.message(DM, ts)
    assert (msg.task_display_mode, msg.stream_state, msg.tasks) == ("timeline", "streaming", {})


# --- recipient, tiers, expiry ----------------------------------------------------------------


async def test_a_channel_stream_needs_its_recipient(
    standin: SlackStandin, client: AsyncWebClient
) -> None:
    """Outside a DM, startStream without recipient_user_id / recipient_team_id is refused."""
    thread = {"channel": CHANNEL, "thread_ts": QUESTION_TS}
    no_user = client.chat_startStream(**thread, recipient_team_id="T0TEAM")
    assert await _refused(no_user) == "missing_recipient_user_id"
    no_team = client.chat_startStream(**thread, recipient_user_id="U1")
    assert await _refused(no_team) == "missing_recipient_team_id"
    started = await client.chat_startStream(**thread, **RECIPIENT)
    assert standin.message(CHANNEL, started["ts"]).stream_state == "streaming"


async def test_start_and_stop_are_tier_2_and_append_tier_4() -> None:
    """By default startStream and stopStream allow 20/min (burst 4) and appendStream 100/min
    (burst 20) per workspace; past that Slack answers 429 with Retry-After and changes nothing."""
    limits = RateLimits()
    tiers = (limits.start_per_minute_per_workspace, limits.stop_per_minute_per_workspace)
    assert tiers == (20, 20) and limits.append_per_minute_per_workspace == 100
    async with SlackStandin(rate_limits=limits) as standin:
        client = AsyncWebClient(token=standin.bot_token, base_url=standin.api_url)
        started = [await _start(client, markdown_text=f"{i} ") for i in range(limits.start_burst)]
        with pytest.raises(SlackApiError) as err:
            await _start(client, markdown_text="one too many")
        assert (err.value.response.status_code, err.value.response["error"]) == (429, "ratelimited")
        assert err.value.response.headers["Retry-After"] == "3"  # 60 s / 20
        for _ in range(limits.append_burst):
            await client.chat_appendStream(channel=DM, ts=started[0], markdown_text="x")
        with pytest.raises(SlackApiError) as err:
            await client.chat_appendStream(channel=DM, ts=started[0], markdown_text="y")
        assert err.value.response.status_code == 429
        assert err.value.response.headers["Retry-After"] == "1"  # 60 s / 100, rounded up
        assert standin.message(DM, started[0]).text == "0 " + "x" * limits.append_burst
        assert standin.ratelimited_count == 2
    async with SlackStandin(rate_limits=RateLimits(start_per_minute_per_workspace=None)) as standin:
        client = AsyncWebClient(token=standin.bot_token, base_url=standin.api_url)
        streams = [await _start(client, markdown_text="a") for _ in range(limits.stop_burst + 1)]
        for ts in streams[:-1]:
            await client.chat_stopStream(channel=DM, ts=ts)
        with pytest.raises(SlackApiError) as err:
            await client.chat_stopStream(channel=DM, ts=streams[-1])
        assert err.value.response.status_code == 429
        assert err.value.response.headers["Retry-After"] == "3"
        assert standin.message(DM, streams[-1]).stream_state == "streaming"


async def test_a_stream_older_than_its_ttl_is_no_longer_streaming(
    standin: SlackStandin, client: AsyncWebClient
) -> None:
    """A stream left open past stream_ttl (about 5 minutes on Slack) refuses append and stop
    with message_not_in_streaming_state, and chat.update of it is then allowed."""
    assert standin.stream_ttl == 300.0
    ts = await _start(client, markdown_text="The refund window ")
    await client.chat_appendStream(channel=DM, ts=ts, markdown_text="is ")
    standin.stream_ttl = 0.0  # the stream is now older than the ttl
    late = client.chat_appendStream(channel=DM, ts=ts, markdown_text="30 days.")
    assert await _refused(late) == "message_not_in_streaming_state"
    assert await _refused(client.chat_stopStream(channel=DM, ts=ts)) == (
        "message_not_in_streaming_state"
    )
    await client.chat_update(channel=DM, ts=ts, text="The refund window is 30 days.")
    msg = standin.message(DM, ts)
    assert (msg.stream_state, msg.text) == ("expired", "The refund window is 30 days.")


# --- agent sessions ----------------------------------------------------------------------------


async def test_agent_session_status_is_checked_and_recorded(
    standin: SlackStandin, client: AsyncWebClient
) -> None:
    """agents.sessions.setStatus takes active/processing/suspended/closed only; the session is
    created with its title and initiator, and its status history is kept."""
    where = {"channel_id": DM, "thread_ts": QUESTION_TS}
    wrong = client.agents_sessions_setStatus(**where, status="thinking")
    assert await _refused(wrong) == "invalid_arguments"
    await client.agents_sessions_setStatus(
        **where, status="processing", title="Refund window?", initiator_user_id="U1"
    )
    await client.agents_sessions_setStatus(**where, status="active", title="ignored later")
    session = standin.agent_sessions[(DM, QUESTION_TS)]
    assert (session.status, session.title, session.initiator_user_id) == (
        "active",
        "Refund window?",
        "U1",
    )
    assert session.history == ["processing", "active"]


async def test_stop_stream_takes_a_session_status(
    standin: SlackStandin, client: AsyncWebClient
) -> None:
    """chat.stopStream's session_status is recorded on the message and moves the session; an
    unknown one is invalid_arguments and leaves the stream open."""
    await client.agents_sessions_setStatus(
        channel_id=DM, thread_ts=QUESTION_TS, status="processing"
    )
    ts = await _start(client, chunks=[{"type": "markdown_text", "text": "Done."}])
    wrong = client.chat_stopStream(channel=DM, ts=ts, session_status="finished")
    assert await _refused(wrong) == "invalid_arguments"
    assert standin.message(DM, ts).stream_state == "streaming"
    await client.chat_stopStream(
        channel=DM, ts=ts, session_status="active", blocks=[{"type": "divider"}]
    )
    msg = standin.message(DM, ts)
    assert (msg.stream_state, msg.session_status, msg.blocks) == (
        "stopped",
        "active",
        [{"type": "divider"}],
    )
    assert standin.agent_sessions[(DM, QUESTION_TS)].history == ["processing", "active"]


# --- assistant threads -------------------------------------------------------------------------


async def test_thread_status_clears_when_the_bot_replies(
    standin: SlackStandin, client: AsyncWebClient
) -> None:
    """setStatus shows a status with loading messages until the bot posts or starts a stream in
    that thread; a reply elsewhere leaves it; the history keeps every status set."""
    status = {"channel_id": DM, "status": "is thinking…", "loading_messages": ["Reading the KB…"]}
    await client.assistant_threads_setStatus(thread_ts=QUESTION_TS, **status)
    await client.assistant_threads_setStatus(thread_ts="1700000000.000200", **status)
    await client.chat_postMessage(channel=DM, thread_ts="1700000000.000999", text="elsewhere")
    first = standin.assistant_threads[(DM, QUESTION_TS)]
    assert (first.status, first.loading_messages) == ("is thinking…", ["Reading the KB…"])
    await client.chat_postMessage(channel=DM, thread_ts=QUESTION_TS, text="Thirty days.")
    await client.chat_startStream(channel=DM, thread_ts="1700000000.000200")
    for thread in (QUESTION_TS, "1700000000.000200"):
        state = standin.assistant_threads[(DM, thread)]
        assert (state.status, state.loading_messages) == ("", None)
        assert state.status_history == ["is thinking…"]


async def test_thread_status_arguments_are_checked(
    standin: SlackStandin, client: AsyncWebClient
) -> None:
    """More than 10 loading messages, or one that is not a string, is invalid_arguments."""
    where = {"channel_id": DM, "thread_ts": QUESTION_TS, "status": "is thinking…"}
    eleven = client.assistant_threads_setStatus(**where, loading_messages=["…"] * 11)
    assert await _refused(eleven) == "invalid_arguments"
    not_text = client.assistant_threads_setStatus(**where, loading_messages=[{"text": "…"}])
    assert await _refused(not_text) == "invalid_arguments"
    await client.assistant_threads_setStatus(**where, loading_messages=["…"] * 10)
    assert standin.assistant_threads[(DM, QUESTION_TS)].status_history == ["is thinking…"]


@pytest.mark.parametrize("gone", ["not_in_channel", "is_archived", "channel_not_found"])
async def test_a_gone_channel_refuses_status_and_messages_alike(
    standin: SlackStandin, client: AsyncWebClient, gone: str
) -> None:
    """A channel the bot was removed from (or that was archived or deleted) refuses the thread
    status as chat.postMessage refuses a message there, so the bot can tell before it answers."""
    standin.channel_gone(CHANNEL, gone)
    calls = [
        client.assistant_threads_setStatus(channel_id=CHANNEL, thread_ts=QUESTION_TS, status="…"),
        client.chat_postMessage(channel=CHANNEL, thread_ts=QUESTION_TS, text="hi"),
        client.chat_startStream(channel=CHANNEL, thread_ts=QUESTION_TS, **RECIPIENT),
        client.agents_sessions_setStatus(
            channel_id=CHANNEL, thread_ts=QUESTION_TS, status="processing"
        ),
        client.assistant_threads_setSuggestedPrompts(
            channel_id=CHANNEL, prompts=[{"title": "a", "message": "b"}]
        ),
    ]
    assert [await _refused(call) for call in calls] == [gone] * len(calls)
    assert standin.bot_messages(CHANNEL) == [] and standin.assistant_threads == {}
    standin.channel_back(CHANNEL)
    await client.assistant_threads_setStatus(channel_id=CHANNEL, thread_ts=QUESTION_TS, status="…")


async def test_a_stream_in_a_channel_that_goes_away_is_refused(
    standin: SlackStandin, client: AsyncWebClient
) -> None:
    """Writes to a stream or message in a channel the bot has lost answer that channel error."""
    started = await client.chat_startStream(channel=CHANNEL, thread_ts=QUESTION_TS, **RECIPIENT)
    posted = await client.chat_postMessage(channel=CHANNEL, text="hi")
    standin.channel_gone(CHANNEL, "is_archived")
    append = client.chat_appendStream(channel=CHANNEL, ts=started["ts"], markdown_text="x")
    assert await _refused(append) == "is_archived"
    edit = client.chat_update(channel=CHANNEL, ts=posted["ts"], text="edit")
    assert await _refused(edit) == "is_archived"


async def test_suggested_prompts_and_title_are_checked(
    standin: SlackStandin, client: AsyncWebClient
) -> None:
    """1 to 4 prompts, each with a non-empty title and message; without a thread (agent view)
    they are kept for the DM itself; setTitle needs a title."""
    prompt = {"title": "Refunds", "message": "How long is the refund window?"}
    bad = [[], [prompt] * 5, [{"title": "Refunds"}], [{**prompt, "message": ""}], ["Refunds"]]
    for prompts in bad:
        refused = client.assistant_threads_setSuggestedPrompts(channel_id=DM, prompts=prompts)
        assert await _refused(refused) == "invalid_arguments", prompts
    await client.assistant_threads_setSuggestedPrompts(
        channel_id=DM, prompts=[prompt] * 4, title="Try asking"
    )
    await client.assistant_threads_setSuggestedPrompts(
        channel_id=DM, thread_ts=QUESTION_TS, prompts=[prompt]
    )
    agent_view = standin.assistant_threads[(DM, "")]
    assert (agent_view.prompts, agent_view.prompts_title) == ([prompt] * 4, "Try asking")
    assert standin.assistant_threads[(DM, QUESTION_TS)].prompts == [prompt]
    no_title = client.assistant_threads_setTitle(channel_id=DM, thread_ts=QUESTION_TS, title="")
    assert await _refused(no_title) == "invalid_arguments"
    await client.assistant_threads_setTitle(channel_id=DM, thread_ts=QUESTION_TS, title="Refunds")
    assert standin.assistant_threads[(DM, QUESTION_TS)].title == "Refunds"


# --- agent events over Socket Mode -------------------------------------------------------------


@asynccontextmanager
async def _listening(
    standin: SlackStandin, events: list[str], seen: list[dict[str, Any]]
) -> AsyncIterator[AsyncApp]:
    """A real Bolt app, connected by Socket Mode, recording every event of the given types."""
    app = AsyncApp(
        client=AsyncWebClient(token=standin.bot_token, base_url=standin.api_url),
        signing_secret="unused-in-socket-mode",
    )

    def record(kind: str) -> Callable[..., Any]:
        async def listener(event: dict[str, Any]) -> None:
            seen.append(event)

        listener.__name__ = f"record_{kind}"
        return listener

    for kind in events:
        app.event(kind)(record(kind))
    handler = AsyncSocketModeHandler(app, standin.app_token)
    handler.client.proxy = None
    await handler.connect_async()
    try:
        await standin.wait_connected()
        yield app
    finally:
        await handler.close_async()


async def test_agent_session_stopped_stops_the_open_streams_and_reaches_the_app(
    standin: SlackStandin, client: AsyncWebClient
) -> None:
    """The user's Stop: Slack stops the app's open streams in that thread itself, names them in
    agent_session_stopped, and the app can then only finish the message with chat.update."""
    said = await standin.user_says(user="U1", text="Refund window?", channel=DM)
    ts = str(
        (await client.chat_startStream(channel=DM, thread_ts=said.ts, markdown_text="The "))["ts"]
    )
    done = str((await client.chat_startStream(channel=DM, thread_ts=said.ts))["ts"])
    await client.chat_stopStream(channel=DM, ts=done)
    seen: list[dict[str, Any]] = []
    async with _listening(standin, ["agent_session_stopped"], seen):
        sent = await standin.agent_session_stopped(channel=DM, thread_ts=said.ts, user="U1")
        await standin.wait_for(lambda: len(seen) == 1)
    assert seen[0] == sent.event
    assert {k: v for k, v in seen[0].items() if k != "event_ts"} == {
        "type": "agent_session_stopped",
        "channel": DM,
        "thread_ts": said.ts,
        "user": "U1",
        "streaming_message_ts": [ts],
    }
    assert sent.envelope_id in standin.acked
    late = client.chat_appendStream(channel=DM, ts=ts, markdown_text="window")
    assert await _refused(late) == "message_not_in_streaming_state"
    await client.chat_update(channel=DM, ts=ts, text="The … Stopped.")
    assert standin.message(DM, ts).stream_state == "stopped"


async def test_agent_view_and_assistant_events_have_slacks_shapes(standin: SlackStandin) -> None:
    """app_home_opened (tab messages / home), assistant_thread_started and
    assistant_thread_context_changed reach a Bolt app with the payloads Slack documents."""
    kinds = ["app_home_opened", "assistant_thread_started", "assistant_thread_context_changed"]
    seen: list[dict[str, Any]] = []
    context = {"channel_id": CHANNEL, "team_id": "T0TEAM", "enterprise_id": None}
    async with _listening(standin, kinds, seen):
        await standin.app_home_opened(user="U1", channel=DM)
        await standin.app_home_opened(user="U1", channel=DM, tab="home")
        await standin.assistant_thread_started(
            user="U1", channel=DM, thread_ts=QUESTION_TS, context=context
        )
        await standin.assistant_thread_context_changed(
            user="U1", channel=DM, thread_ts=QUESTION_TS, context={**context, "channel_id": "C2"}
        )
        await standin.wait_for(lambda: len(seen) == 4)
    shown = sorted(({k: v for k, v in e.items() if k != "event_ts"} for e in seen), key=str)
    thread = {"user_id": "U1", "channel_id": DM, "thread_ts": QUESTION_TS}
    assert shown == sorted(
        [
            {"type": "app_home_opened", "user": "U1", "channel": DM, "tab": "messages"},
            {"type": "app_home_opened", "user": "U1", "channel": DM, "tab": "home"},
            {
                "type": "assistant_thread_started",
                "assistant_thread": {**thread, "context": context},
            },
            {
                "type": "assistant_thread_context_changed",
                "assistant_thread": {**thread, "context": {**context, "channel_id": "C2"}},
            },
        ],
        key=str,
    )
    assert all(isinstance(e["event_ts"], str) for e in seen)
