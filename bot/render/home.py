"""The bot's App Home tab, rendered (pure: what to show → a `views.publish` view).

Everyone sees their recent conversations with links to their threads. Admins also see the
workspace settings form (`AdminPanel`): DMs on/off, the channels where mentions are answered,
the user groups that may ask, an escalation channel per specialist, the suggested prompts, and a
Save button (`ACTION_SAVE`). Slack sends the form's values with the click
(`view.state.values[block_id][action_id]`); the block and action ids below are what
`bot.slack.home` reads them by. A Home tab has no submit validation of its own: problems with
what was typed come back as a re-rendered view with a warning under each field concerned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.render.safety import escape, escape_url, plain
from bot.workspace_settings import WorkspaceSettings, prompts_text

ACTION_SAVE = "powabot_settings_save"
BLOCK_SAVE = "powabot_home_save"
BLOCK_DMS = "powabot_home_dms"
ACTION_DMS = "dms_enabled"
DMS_ON = "on"
BLOCK_CHANNELS = "powabot_home_channels"
ACTION_CHANNELS = "mention_channels"
BLOCK_GROUPS = "powabot_home_usergroups"
ACTION_GROUPS = "usergroups"
ESCALATION_BLOCK = "powabot_home_escalation:"  # + the specialist's name
ACTION_ESCALATION = "escalation_channel"
BLOCK_PROMPTS = "powabot_home_prompts"
ACTION_PROMPTS = "prompts"
BLOCK_ERRORS = "powabot_home_errors"  # errors that belong to no one field

TITLE_MAX = 150  # characters of a conversation's title in the list
INPUT_MAX = 3000  # Slack's limit on a plain_text_input's value
NO_CONVERSATIONS = "No conversations yet: send me a direct message, or mention me in a channel."


@dataclass(frozen=True)
class ConversationLink:
    """One of the user's conversations: its title and a link to its thread (None: no link)."""

    title: str | None
    url: str | None
    updated_at: datetime


@dataclass(frozen=True)
class SettingsForm:
    """What the settings form shows: the saved settings, or what an admin just typed."""

    dms_enabled: bool = True
    mention_channels: tuple[str, ...] = ()
    usergroups: str = ""  # as typed: ids or @handles
    escalation_channels: Mapping[str, str] = field(default_factory=dict)  # specialist → channel
    prompts: str = ""  # one "title | message" per line

    @classmethod
    def of(cls, settings: WorkspaceSettings) -> SettingsForm:
        return cls(
            dms_enabled=settings.dms_enabled,
            mention_channels=tuple(settings.mention_channels or ()),
            usergroups=", ".join(settings.allowed_usergroups or ()),
            escalation_channels=dict(settings.escalation_channels),
            prompts=prompts_text(settings.suggested_prompts),
        )


@dataclass(frozen=True)
class AdminPanel:
    """The admin's part of the Home tab."""

    form: SettingsForm
    specialists: tuple[str, ...]
    errors: Mapping[str, str] = field(default_factory=dict)  # block id → what to fix
    saved_by: str | None = None  # the user id that just saved
    problems: tuple[str, ...] = ()  # e.g. an escalation channel the bot is not in (mrkdwn)
    default_escalation: str | None = None  # POWABOT_ESCALATION_CHANNEL
    allowed_usergroups: tuple[str, ...] = ()  # the saved ones, shown by name under the field


def _text(kind: str, text: str) -> dict[str, Any]:
    return {"type": kind, "text": text}


def _section(mrkdwn: str, block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": _text("mrkdwn", mrkdwn)}
    if block_id:
        block["block_id"] = block_id
    return block


def _context(mrkdwn: str) -> dict[str, Any]:
    return {"type": "context", "elements": [_text("mrkdwn", mrkdwn)]}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": _text("plain_text", text)}


def _warning(message: str) -> dict[str, Any]:
    return _context(f":warning: {escape(message)}")


def _title(title: str | None) -> str:
    one_line = " ".join((title or "Untitled conversation").split())
    if len(one_line) > TITLE_MAX:
        one_line = one_line[: TITLE_MAX - 1].rstrip() + "…"
    return escape(one_line)


def conversation_blocks(conversations: Sequence[ConversationLink]) -> list[dict[str, Any]]:
    """The user's recent conversations, newest first, each a link to its thread."""
    blocks: list[dict[str, Any]] = [_header("Your recent conversations")]
    if not conversations:
        return [*blocks, _section(NO_CONVERSATIONS)]
    for c in conversations:
        title = _title(c.title)
        line = f"<{escape_url(c.url)}|{title}>" if c.url else title
        stamp = int(c.updated_at.timestamp())
        fallback = c.updated_at.strftime("%Y-%m-%d %H:%M UTC")
        blocks.append(_section(f"*{line}*"))
        blocks.append(
            _context(f"Last active <!date^{stamp}^{{date_short_pretty}} at {{time}}|{fallback}>")
        )
    return blocks


def _input(
    block_id: str, label: str, element: dict[str, Any], hint: str | None = None
) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "input",
        "block_id": block_id,
        "optional": True,
        "label": _text("plain_text", label),
        "element": element,
    }
    if hint:
        block["hint"] = _text("plain_text", hint)
    return block


def _with_error(
    blocks: list[dict[str, Any]], block: dict[str, Any], errors: Mapping[str, str]
) -> None:
    blocks.append(block)
    message = errors.get(str(block["block_id"]))
    if message:
        blocks.append(_warning(message))


def _dms_input(form: SettingsForm) -> dict[str, Any]:
    option = {
        "text": _text("plain_text", "Answer questions in direct messages"),
        "value": DMS_ON,
    }
    element: dict[str, Any] = {"type": "checkboxes", "action_id": ACTION_DMS, "options": [option]}
    if form.dms_enabled:
        element["initial_options"] = [option]
    return _input(BLOCK_DMS, "Direct messages", element)


def _channels_input(form: SettingsForm) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "multi_conversations_select",
        "action_id": ACTION_CHANNELS,
        "placeholder": _text("plain_text", "Every channel I'm in"),
        "filter": {"include": ["public", "private"], "exclude_bot_users": True},
    }
    if form.mention_channels:
        element["initial_conversations"] = list(form.mention_channels)
    return _input(
        BLOCK_CHANNELS,
        "Channels where I answer mentions",
        element,
        "Empty: every channel I'm in.",
    )


def _groups_input(form: SettingsForm) -> dict[str, Any]:
    return _input(
        BLOCK_GROUPS,
        "Who may ask (user groups)",
        _text_element(ACTION_GROUPS, "Everyone", form.usergroups),
        "@handles or ids (S…) of user groups, separated by commas. Empty: everyone.",
    )


def _text_element(
    action_id: str, placeholder: str, value: str, *, multiline: bool = False
) -> dict[str, Any]:
    """A plain-text input of at most INPUT_MAX characters, showing `value` (cut) when set."""
    element: dict[str, Any] = {"type": "plain_text_input", "action_id": action_id}
    if multiline:
        element["multiline"] = True
    element["max_length"] = INPUT_MAX
    element["placeholder"] = _text("plain_text", placeholder)
    if value:
        element["initial_value"] = value[:INPUT_MAX]
    return element


def _escalation_input(specialist: str, form: SettingsForm) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "multi_conversations_select",
        "action_id": ACTION_ESCALATION,
        "max_selected_items": 1,
        "placeholder": _text("plain_text", "The default escalation channel"),
        "filter": {"include": ["public", "private"], "exclude_bot_users": True},
    }
    chosen = form.escalation_channels.get(specialist)
    if chosen:
        element["initial_conversations"] = [chosen]
    return _input(ESCALATION_BLOCK + specialist, f"Escalations from {plain(specialist)}", element)


def _prompts_input(form: SettingsForm) -> dict[str, Any]:
    return _input(
        BLOCK_PROMPTS,
        "Suggested prompts in my DM",
        _text_element(
            ACTION_PROMPTS, "Refunds | How do I get a refund?", form.prompts, multiline=True
        ),
        "Up to 4 lines of “title | message”. Empty: the deployment's prompts.",
    )


def admin_blocks(panel: AdminPanel) -> list[dict[str, Any]]:
    """The settings form, with what was saved, what is wrong, and any escalation problem."""
    form, errors = panel.form, panel.errors
    blocks: list[dict[str, Any]] = [
        {"type": "divider"},
        _header("Workspace settings"),
        _context("Only workspace admins and owners (and the bot's configured admins) see this."),
    ]
    if panel.saved_by:
        blocks.append(_section(f":white_check_mark: Saved by <@{panel.saved_by}>."))
    if errors:
        blocks.append(_section(":warning: *Not saved.* Fix what is marked below, then Save again."))
        if errors.get(BLOCK_ERRORS):
            blocks.append(_warning(errors[BLOCK_ERRORS]))
    blocks += [_section(f":warning: {problem}") for problem in panel.problems]
    _with_error(blocks, _dms_input(form), errors)
    _with_error(blocks, _channels_input(form), errors)
    _with_error(blocks, _groups_input(form), errors)
    if panel.allowed_usergroups:
        groups = ", ".join(f"<!subteam^{g}>" for g in panel.allowed_usergroups)
        blocks.append(_context(f"Now allowed: {groups}"))
    default = f"<#{panel.default_escalation}>" if panel.default_escalation else "none set"
    blocks.append(
        _context(
            "Escalation channels: where “Talk to a person” goes for each specialist. "
            f"Empty: the default channel ({default})."
        )
    )
    for specialist in panel.specialists:
        _with_error(blocks, _escalation_input(specialist, form), errors)
    _with_error(blocks, _prompts_input(form), errors)
    blocks.append(
        {
            "type": "actions",
            "block_id": BLOCK_SAVE,
            "elements": [
                {
                    "type": "button",
                    "action_id": ACTION_SAVE,
                    "text": _text("plain_text", "Save"),
                    "style": "primary",
                    "value": "save",
                }
            ],
        }
    )
    return blocks


def home_view(
    conversations: Sequence[ConversationLink], admin: AdminPanel | None = None
) -> dict[str, Any]:
    """The Home tab for one user: their conversations, and the settings form for an admin."""
    blocks = conversation_blocks(conversations)
    if admin is not None:
        blocks += admin_blocks(admin)
    return {"type": "home", "callback_id": "powabot_home", "blocks": blocks}
