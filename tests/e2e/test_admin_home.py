"""The bot's App Home tab, end to end against the Slack stand-in: everyone sees their recent
conversations with links; workspace admins (and POWABOT_ADMINS) also get the settings form,
whose Save stores the settings; a non-admin's crafted Save and bad input save nothing."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import structlog

from bot.render.home import (
    ACTION_SAVE,
    BLOCK_CHANNELS,
    BLOCK_DMS,
    BLOCK_GROUPS,
    BLOCK_PROMPTS,
    ESCALATION_BLOCK,
)
from tests.conftest import running_bot
from tests.e2e.answers import ALICE, ask

ADMIN = "U0ADMIN"
OWNER = "U0OWNER"
BOB = "U0BOB"
CAROL = "U0CAROL"
DM = "D0ALICE"
HELP = "C0HELP"
BILLING_ESC = "C0BILLESC"
TEAM = "T0TEAM"


def has_form(view: Any) -> bool:
    return ACTION_SAVE in str(view.blocks)


async def open_home(slack: Any, bot: Any, user: str) -> Any:
    """`user` opens the Home tab; returns the view the bot published for them."""
    before = bot.home.handled
    await slack.app_home_opened(user=user, channel=f"D{user[1:]}", tab="home")
    await slack.wait_for(lambda: bot.home.handled > before, timeout=10)
    return copy.deepcopy(slack.home_views[user])  # as it is now (a later publish changes it)


async def save(slack: Any, bot: Any, user: str, state: dict[str, Any], **kw: Any) -> Any:
    """`user` clicks Save in their Home tab with the form holding `state`."""
    before = bot.home.handled
    await slack.click(user=user, action_id=ACTION_SAVE, view_state=state, **kw)
    await slack.wait_for(lambda: bot.home.handled > before, timeout=10)
    return copy.deepcopy(slack.home_views.get(user))


def form_state(
    *,
    dms: bool = True,
    channels: list[str] | None = None,
    groups: str | None = None,
    escalation: dict[str, str] | None = None,
    prompts: str | None = None,
) -> dict[str, Any]:
    """`view.state.values` as Slack sends it for the settings form."""
    on = [{"text": {"type": "plain_text", "text": "Answer"}, "value": "on"}]
    state: dict[str, Any] = {
        BLOCK_DMS: {"dms_enabled": {"type": "checkboxes", "selected_options": on if dms else []}},
        BLOCK_CHANNELS: {
            "mention_channels": {
                "type": "multi_conversations_select",
                "selected_conversations": channels or [],
            }
        },
        BLOCK_GROUPS: {"usergroups": {"type": "plain_text_input", "value": groups}},
        BLOCK_PROMPTS: {"prompts": {"type": "plain_text_input", "value": prompts}},
    }
    for specialist in ("billing-agent", "technical-agent", "product-agent"):
        chosen = (escalation or {}).get(specialist)
        state[ESCALATION_BLOCK + specialist] = {
            "escalation_channel": {
                "type": "multi_conversations_select",
                "selected_conversations": [chosen] if chosen else [],
            }
        }
    return state


def element(view: Any, block_id: str) -> dict[str, Any]:
    (block,) = [b for b in view.blocks if b.get("block_id") == block_id]
    return dict(block["element"])


async def test_an_admin_sees_the_settings_form(slack: Any, powabase: Any, tmp_path: Path) -> None:
    """A workspace admin (or owner) opening the Home tab gets the settings form with every
    field and a Save button."""
    slack.add_user(ADMIN, name="admin", is_admin=True)
    slack.add_user(OWNER, name="owner", is_primary_owner=True)
    async with running_bot(slack, powabase, tmp_path) as bot:
        view = await open_home(slack, bot, ADMIN)
        owners = await open_home(slack, bot, OWNER)
    assert has_form(view) and has_form(owners)
    assert "Workspace settings" in view.text
    assert "initial_options" in element(view, BLOCK_DMS)  # DMs are on by default
    for specialist in ("billing-agent", "technical-agent", "product-agent"):
        assert element(view, ESCALATION_BLOCK + specialist)["type"] == "multi_conversations_select"


async def test_a_user_sees_their_conversations_with_links_and_no_form(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """A regular user's Home lists their own conversations, newest first, each linked to its
    thread; they get no settings form."""
    async with running_bot(slack, powabase, tmp_path) as bot:
        first = await ask(slack, bot, DM, "How long do refunds take?")
        second = await ask(slack, bot, HELP, "How do I rotate an API key?", mention=True)
        view = await open_home(slack, bot, ALICE)
        bobs = await open_home(slack, bot, BOB)
    assert not has_form(view)
    text = view.text
    refund = f"<{slack.permalink(DM, first.ts)}|How long do refunds take?>"
    api_key = f"<{slack.permalink(HELP, second.ts)}|How do I rotate an API key?>"
    assert refund in text and api_key in text
    assert text.index(api_key) < text.index(refund)  # newest first
    assert "refunds" not in bobs.text and "No conversations yet" in bobs.text
    assert not has_form(bobs)


async def test_users_listed_in_powabot_admins_get_the_form(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """POWABOT_ADMINS makes a user who is not a workspace admin a settings admin."""
    async with running_bot(slack, powabase, tmp_path, POWABOT_ADMINS=f"{CAROL}, U0OTHER") as bot:
        assert has_form(await open_home(slack, bot, CAROL))
        assert not has_form(await open_home(slack, bot, BOB))


async def test_an_admin_saves_the_settings(slack: Any, powabase: Any, tmp_path: Path) -> None:
    """Save stores every setting for the workspace (groups typed by @handle), the view says
    who saved it, and the form shows the saved values the next time."""
    slack.add_user(ADMIN, name="admin", is_admin=True)
    slack.add_usergroup("S0SUPPORT", "support", [ALICE])
    async with running_bot(slack, powabase, tmp_path) as bot:
        await open_home(slack, bot, ADMIN)
        state = form_state(
            dms=False,
            channels=[HELP],
            groups="@support",
            escalation={"billing-agent": BILLING_ESC},
            prompts="Refunds | How do refunds work?\nSSO | How do I set up SSO?",
        )
        saved_view = await save(slack, bot, ADMIN, state)
        stored = await bot.store.get_workspace_settings(TEAM)
        reopened = await open_home(slack, bot, ADMIN)
    assert stored is not None
    assert stored["dms_enabled"] is False
    assert stored["mention_channels"] == [HELP]
    assert stored["allowed_usergroups"] == ["S0SUPPORT"]
    assert stored["escalation_channels"] == {"billing-agent": BILLING_ESC}
    assert [p["title"] for p in stored["suggested_prompts"]] == ["Refunds", "SSO"]
    assert f"Saved by <@{ADMIN}>" in saved_view.text
    assert "initial_options" not in element(reopened, BLOCK_DMS)
    assert element(reopened, BLOCK_CHANNELS)["initial_conversations"] == [HELP]
    assert element(reopened, ESCALATION_BLOCK + "billing-agent")["initial_conversations"] == [
        BILLING_ESC
    ]
    assert element(reopened, BLOCK_GROUPS)["initial_value"] == "S0SUPPORT"
    assert "<!subteam^S0SUPPORT>" in reopened.text  # shown by name under the field


async def test_a_non_admin_cannot_save_even_with_a_crafted_click(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """A Save click by a user who is not an admin, crafted into their own Home tab, stores
    nothing and is logged; their Home never shows the form."""
    async with running_bot(slack, powabase, tmp_path) as bot:
        await open_home(slack, bot, BOB)
        with structlog.testing.capture_logs() as logs:
            view = await save(slack, bot, BOB, form_state(dms=False), crafted=True)
        stored = await bot.store.get_workspace_settings(TEAM)
    assert stored is None
    assert not has_form(view)
    refused = [e for e in logs if e["event"] == "settings_save_refused"]
    assert refused and refused[0]["user"] == BOB


async def test_bad_input_shows_a_clear_error_and_saves_nothing(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """A malformed prompt line and an unknown user group come back as messages under their
    fields, with what was typed kept; nothing is stored."""
    slack.add_user(ADMIN, name="admin", is_admin=True)
    async with running_bot(slack, powabase, tmp_path) as bot:
        await open_home(slack, bot, ADMIN)
        state = form_state(groups="@nosuchgroup", prompts="Refunds without a separator")
        view = await save(slack, bot, ADMIN, state)
        stored = await bot.store.get_workspace_settings(TEAM)
    assert stored is None
    assert "Not saved" in view.text
    assert "There is no user group @nosuchgroup in this workspace." in view.text
    assert 'Line 1: write "title | message"' in view.text
    assert element(view, BLOCK_PROMPTS)["initial_value"] == "Refunds without a separator"
    assert "Saved by" not in view.text


async def test_saved_prompts_are_what_the_dm_suggests(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """The workspace's suggested prompts from the settings replace the deployment's in the DM."""
    slack.add_user(ADMIN, name="admin", is_admin=True)
    async with running_bot(slack, powabase, tmp_path) as bot:
        await open_home(slack, bot, ADMIN)
        await save(slack, bot, ADMIN, form_state(prompts="Invoices | Where are my invoices?"))
        await slack.app_home_opened(user=ALICE, channel=DM)
        await slack.wait_for(lambda: bot.assistant.handled >= 1, timeout=10)
    (call,) = [
        c for c in slack.calls_to("assistant.threads.setSuggestedPrompts") if c.error is None
    ]
    assert call.args["prompts"] == [{"title": "Invoices", "message": "Where are my invoices?"}]


async def test_an_escalation_channel_the_bot_is_not_in_shows_in_the_admins_home(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """When a hand-over fails because the bot is not in the escalation channel an admin chose,
    the admin's Home tab says so, naming the channel; a regular user's does not."""
    slack.add_user(ADMIN, name="admin", is_admin=True)
    slack.bot_not_in(BILLING_ESC)
    async with running_bot(slack, powabase, tmp_path) as bot:
        await open_home(slack, bot, ADMIN)
        await save(slack, bot, ADMIN, form_state(escalation={"billing-agent": BILLING_ESC}))
        first = await ask(slack, bot, DM, "How long do refunds take?")
        before = len(slack.bot_messages(DM))
        await slack.user_says(user=ALICE, text="talk to a human", channel=DM, thread_ts=first.ts)
        await slack.wait_for(lambda: len(slack.bot_messages(DM)) > before, timeout=10)
        view = await open_home(slack, bot, ADMIN)
        alices = await open_home(slack, bot, ALICE)
    assert f"<#{BILLING_ESC}>" in view.text and "not a member" in view.text
    assert "not a member" not in alices.text
