"""Where and for whom the bot answers, end to end: a question the workspace's settings do not
allow gets exactly one ephemeral explanation for its asker, no public reply and no Powabase run;
an allowed one is answered as usual."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.workspace_settings import WorkspaceSettings
from tests.conftest import running_bot
from tests.e2e.answers import ALICE, ask, bot_replies

BOB = "U0BOB"
ADMIN = "U0ADMIN"
TEAM = "T0TEAM"
DM = "D0ALICE"
BOB_DM = "D0BOB"
HELP = "C0HELP"
RANDOM = "C0RANDOM"


async def configure(bot: Any, **settings: Any) -> None:
    """An admin saved these settings (what the App Home's Save does)."""
    await bot.workspace_settings.save(TEAM, WorkspaceSettings(**settings), updated_by=ADMIN)


async def refused(
    slack: Any,
    user: str,
    channel: str,
    text: str,
    *,
    mention: bool = False,
    thread_ts: str | None = None,
    channel_type: str = "im",
) -> Any:
    """`user` says `text`; returns the one ephemeral the bot showed them for it."""
    before = len(slack.ephemerals)
    await slack.user_says(
        user=user,
        text=text,
        channel=channel,
        mention=mention,
        thread_ts=thread_ts,
        channel_type=channel_type,
    )
    await slack.wait_for(lambda: len(slack.ephemerals) > before, timeout=10)
    (shown,) = slack.ephemerals[before:]
    assert shown.recipient == user and shown.channel == channel
    return shown


async def test_a_mention_outside_the_allowed_channels_gets_one_ephemeral_explanation(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """With an allowlist, a mention elsewhere gets one explanation only its asker sees, naming
    the allowed channel; nothing public, no run. The allowed channel is still answered."""
    async with running_bot(slack, powabase, tmp_path) as bot:
        await configure(bot, mention_channels=[HELP])
        msg = await refused(
            slack, ALICE, RANDOM, "How long do refunds take?", mention=True, channel_type="channel"
        )
        assert msg.text == f"I don't answer in this channel. Try <#{HELP}>."
        await ask(slack, bot, HELP, "How long do refunds take?", mention=True)
    assert not slack.bot_messages(RANDOM)
    assert len(powabase.runs) == 1  # the question in #help only
    assert bot_replies(slack, HELP, slack.bot_messages(HELP)[0].thread_ts)


async def test_a_follow_up_in_a_channel_taken_off_the_allowlist_is_refused(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """A thread the bot already answers follows the same rules once its channel is no longer
    allowed: the follow-up gets the explanation, not an answer."""
    async with running_bot(slack, powabase, tmp_path) as bot:
        first = await ask(slack, bot, RANDOM, "How long do refunds take?", mention=True)
        answered = len(bot_replies(slack, RANDOM, first.ts))
        await configure(bot, mention_channels=[HELP])
        shown = await refused(
            slack,
            ALICE,
            RANDOM,
            "And for annual plans?",
            thread_ts=first.ts,
            channel_type="channel",
        )
    assert "I don't answer in this channel" in shown.text
    assert len(powabase.runs) == 1
    assert len(bot_replies(slack, RANDOM, first.ts)) == answered  # the first answer only


async def test_dms_off_gets_an_ephemeral_pointing_to_the_channels(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """With DMs off, a DM question gets one explanation that says where to ask instead."""
    async with running_bot(slack, powabase, tmp_path) as bot:
        await configure(bot, dms_enabled=False, mention_channels=[HELP])
        shown = await refused(slack, ALICE, DM, "How long do refunds take?")
    assert shown.text.startswith("I'm not taking questions in direct messages")
    assert f"<#{HELP}>" in shown.text and "support team" in shown.text
    assert not slack.bot_messages(DM) and not powabase.runs


async def test_only_members_of_the_allowed_user_groups_may_ask(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """With allowed user groups, a member is answered and anyone else is told which group may
    ask, in a message only they see."""
    slack.add_usergroup("S0SUPPORT", "support", [ALICE])
    async with running_bot(slack, powabase, tmp_path) as bot:
        await configure(bot, allowed_usergroups=["S0SUPPORT"])
        shown = await refused(slack, BOB, BOB_DM, "How long do refunds take?")
        await ask(slack, bot, DM, "How long do refunds take?")
    assert shown.text == "Only members of <!subteam^S0SUPPORT> can ask me here."
    assert not slack.bot_messages(BOB_DM)
    assert len(powabase.runs) == 1 and bot_replies(slack, DM, slack.bot_messages(DM)[0].thread_ts)


async def test_a_user_group_that_cannot_be_read_refuses_with_try_again(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """When Slack cannot list a group's members, the question is not answered blind: the
    asker is told to try again."""
    slack.add_usergroup("S0SUPPORT", "support", [ALICE])
    async with running_bot(slack, powabase, tmp_path) as bot:
        await configure(bot, allowed_usergroups=["S0SUPPORT"])
        slack.inject("usergroups.users.list", error="internal_error", times=10)
        shown = await refused(slack, ALICE, DM, "How long do refunds take?")
    assert "try again" in shown.text
    assert not powabase.runs
