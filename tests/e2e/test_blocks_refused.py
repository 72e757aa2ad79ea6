"""A final answer whose blocks (sections, feedback buttons) Slack refuses still arrives as text."""

from __future__ import annotations

from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.render import render_answer
from bot.slack.budget import Budgets
from bot.slack.publisher import Publisher
from bot.state import AnswerState, Phase

DM = "D0BLOCKS"
ANSWER = "Refunds are possible within 30 days of the purchase date."


def _publisher(slack: Any) -> Publisher:
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    return Publisher(client, Budgets(), min_interval=0.01)


def _done() -> AnswerState:
    return AnswerState(text=ANSWER, phase=Phase.DONE, run_id="orch_run_1")


async def test_refused_blocks_on_the_final_post_fall_back_to_text(slack: Any) -> None:
    """`invalid_blocks` on the final post: posted again without blocks, the text exact."""
    stream = _publisher(slack).open("T0TEAM", DM, "1.0", channel_type="im")
    state = AnswerState()
    assert await stream.start(state) is None  # only the status shows
    state.text, state.phase, state.run_id = ANSWER, Phase.DONE, "orch_run_1"
    assert render_answer(state)[-1].blocks  # the final carries blocks
    slack.inject("chat.postMessage", error="invalid_blocks", times=1)
    await stream.finish()
    (reply,) = [m for m in slack.bot_messages(DM)]
    assert reply.text == render_answer(_done())[-1].text
    assert not reply.blocks
    refused = [c for c in slack.calls_to("chat.postMessage") if c.error == "invalid_blocks"]
    assert len(refused) == 1 and refused[0].args.get("blocks")


async def test_refused_blocks_on_the_final_edit_fall_back_to_text(slack: Any) -> None:
    """`msg_blocks_too_long` on the final edit: edited again without blocks, the text exact."""
    stream = _publisher(slack).open("T0TEAM", DM, "1.0", channel_type="im")
    state = AnswerState(text="Refunds are possible ", phase=Phase.STREAMING, run_id="orch_run_1")
    await stream.start(state)
    stream.update()
    await slack.wait_for(lambda: bool(slack.bot_messages(DM)))
    slack.inject("chat.update", error="msg_blocks_too_long", times=1)
    state.text = ANSWER
    state.phase = Phase.DONE
    await stream.finish()
    (reply,) = slack.bot_messages(DM)
    assert reply.text == render_answer(_done())[-1].text
    refused = [c for c in slack.calls_to("chat.update") if c.error == "msg_blocks_too_long"]
    assert len(refused) == 1 and refused[0].args.get("blocks")
