"""The per-workspace settings model, the form parsers, the settings cache, and the Home view."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from bot.errors import StoreError
from bot.render.home import (
    ACTION_SAVE,
    BLOCK_CHANNELS,
    BLOCK_DMS,
    BLOCK_GROUPS,
    BLOCK_PROMPTS,
    ESCALATION_BLOCK,
    AdminPanel,
    ConversationLink,
    SettingsForm,
    home_view,
)
from bot.settings import Settings, SuggestedPrompt
from bot.slack.home import read_form
from bot.workspace_settings import (
    FormError,
    WorkspaceSettings,
    WorkspaceSettingsBook,
    load,
    parse_prompts,
    parse_usergroups,
    prompts_text,
)

SPECIALISTS = ("billing-agent", "technical-agent", "product-agent")


def test_defaults_answer_everyone_everywhere() -> None:
    """A workspace nobody configured: DMs on, every channel, everyone, no overrides."""
    ws = load(None)
    assert ws.dms_enabled and ws.answers_in("C0ANY")
    assert ws.allowed_usergroups is None and ws.escalation_channels == {}


def test_an_empty_allowlist_means_every_channel() -> None:
    """Clearing the channels (or groups) field lifts the restriction, never silences the bot."""
    ws = WorkspaceSettings(mention_channels=[], allowed_usergroups=[])
    assert ws.mention_channels is None and ws.allowed_usergroups is None
    assert ws.answers_in("C0OTHER")


def test_the_allowlist_limits_mentions_to_its_channels() -> None:
    """With an allowlist, only its channels are answered (duplicates collapse)."""
    ws = WorkspaceSettings(mention_channels=["C0HELP", "C0HELP", "G0PRIV"])
    assert ws.mention_channels == ["C0HELP", "G0PRIV"]
    assert ws.answers_in("C0HELP") and not ws.answers_in("C0RANDOM")


@pytest.mark.parametrize(
    "values",
    [
        {"mention_channels": ["D0DM"]},
        {"mention_channels": ["general"]},
        {"allowed_usergroups": ["C0NOTAGROUP"]},
        {"escalation_channels": {"billing-agent": "U0PERSON"}},
        {"suggested_prompts": [{"title": f"t{i}", "message": "m"} for i in range(5)]},
    ],
)
def test_invalid_settings_are_refused(values: dict[str, Any]) -> None:
    """A DM, a name, a user instead of a channel, or a fifth prompt never validates."""
    with pytest.raises(ValidationError):
        WorkspaceSettings.model_validate(values)


def test_stored_settings_round_trip() -> None:
    """What is stored reads back as the same settings."""
    ws = WorkspaceSettings(
        dms_enabled=False,
        mention_channels=["C0HELP"],
        allowed_usergroups=["S0SUPPORT"],
        escalation_channels={"billing-agent": "C0BILLESC"},
        suggested_prompts=[SuggestedPrompt(title="Refunds", message="How do refunds work?")],
    )
    assert load(ws.stored()) == ws


def test_a_stored_object_that_no_longer_validates_falls_back_to_defaults() -> None:
    """Garbage in the store never breaks the message path."""
    assert load({"mention_channels": "not a list"}) == WorkspaceSettings()


def test_prompts_parse_one_per_line_and_print_back() -> None:
    """ "title | message" lines become prompts, and the form shows them the same way."""
    text = "Refunds | How do refunds work?\n\n SSO|How do I set up SSO? \n"
    prompts = parse_prompts(text)
    assert [(p.title, p.message) for p in prompts] == [
        ("Refunds", "How do refunds work?"),
        ("SSO", "How do I set up SSO?"),
    ]
    assert parse_prompts(prompts_text(prompts)) == prompts


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("Refunds How do refunds work?", 'Line 1: write "title | message"'),
        ("A | b\nB | c\nC | d\nD | e\nE | f", "At most 4 prompts"),
        ("x" * 80 + " | message", "Line 1: the title is too long (at most 75"),
        (" | message", "Line 1"),
    ],
)
def test_bad_prompts_say_what_to_fix(text: str, says: str) -> None:
    """A malformed prompt line is refused with a message naming the line and the fix."""
    with pytest.raises(FormError, match=says.replace("(", r"\(").replace("|", r"\|")):
        parse_prompts(text)


def test_user_groups_are_read_as_ids_handles_or_pasted_mentions() -> None:
    """Ids, @handles and <!subteam^…> mentions, comma- or line-separated, are all understood."""
    ids, handles = parse_usergroups("S0SUPPORT, @Billing-Team\n<!subteam^S0OPS|@ops> agents")
    assert ids == ["S0SUPPORT", "S0OPS"]
    assert handles == ["billing-team", "agents"]
    assert parse_usergroups("  ") == ([], [])


def test_a_user_group_that_is_neither_id_nor_handle_is_refused() -> None:
    """Something like a person's mention or a sentence gets a clear error."""
    with pytest.raises(FormError, match='"<@U0ALICE>" is not a user group'):
        parse_usergroups("<@U0ALICE>")


def test_powabot_admins_reads_a_comma_separated_list() -> None:
    """POWABOT_ADMINS holds Slack user ids; anything else is a configuration error."""
    s = Settings(_env_file=None, POWABOT_ADMINS="U0ALICE, W0BOB,")  # type: ignore[call-arg]
    assert s.POWABOT_ADMINS == frozenset({"U0ALICE", "W0BOB"})
    with pytest.raises(ValidationError, match="alice"):
        Settings(_env_file=None, POWABOT_ADMINS="U0ALICE,alice")  # type: ignore[call-arg]


class CountingStore:
    """Just the two settings methods of a store, counting reads."""

    def __init__(self) -> None:
        self.saved: dict[str, dict[str, Any]] = {}
        self.reads = 0
        self.fail = False

    async def get_workspace_settings(self, team_id: str) -> dict[str, Any] | None:
        self.reads += 1
        if self.fail:
            raise StoreError("down")
        return self.saved.get(team_id)

    async def save_workspace_settings(
        self, team_id: str, settings: dict[str, Any], *, updated_by: str
    ) -> None:
        self.saved[team_id] = settings


async def test_settings_are_cached_briefly_and_a_save_is_served_at_once() -> None:
    """Reads within the cache window do not touch the store; a save is seen immediately, and
    after the window the store is read again."""
    store, now = CountingStore(), [0.0]
    book = WorkspaceSettingsBook(store, ttl=30, clock=lambda: now[0])  # type: ignore[arg-type]
    assert (await book.get("T1")).dms_enabled
    await book.get("T1")
    assert store.reads == 1
    await book.save("T1", WorkspaceSettings(dms_enabled=False), updated_by="U0ADMIN")
    assert not (await book.get("T1")).dms_enabled and store.reads == 1
    now[0] = 31.0
    assert not (await book.get("T1")).dms_enabled and store.reads == 2


async def test_a_store_failure_serves_the_last_settings_read() -> None:
    """When the store fails, the last copy read keeps applying (not the open defaults)."""
    store, now = CountingStore(), [0.0]
    store.saved["T1"] = WorkspaceSettings(dms_enabled=False).stored()
    book = WorkspaceSettingsBook(store, ttl=30, clock=lambda: now[0])  # type: ignore[arg-type]
    await book.get("T1")
    store.fail, now[0] = True, 60.0
    assert not (await book.get("T1")).dms_enabled


def _blocks(view: dict[str, Any], block_id: str) -> list[dict[str, Any]]:
    return [b for b in view["blocks"] if b.get("block_id") == block_id]


def _texts(view: dict[str, Any]) -> str:
    out = []
    for b in view["blocks"]:
        if "text" in b:
            out.append(b["text"]["text"])
        out += [e["text"] for e in b.get("elements", []) if isinstance(e.get("text"), str)]
    return "\n".join(out)


def test_home_lists_conversations_with_links_and_no_form_for_everyone() -> None:
    """A user's Home shows their conversations as links to their threads; titles cannot ping."""
    when = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    view = home_view(
        [
            ConversationLink(
                "Refund <!channel> please", "https://x.slack.com/archives/D1/p1", when
            ),
            ConversationLink(None, None, when),
        ]
    )
    text = _texts(view)
    assert view["type"] == "home"
    assert "<https://x.slack.com/archives/D1/p1|Refund &lt;!channel&gt; please>" in text
    assert "Untitled conversation" in text
    assert ACTION_SAVE not in str(view) and not _blocks(view, BLOCK_DMS)


def test_home_says_when_there_are_no_conversations() -> None:
    """An empty list tells the user how to start one."""
    assert "No conversations yet" in _texts(home_view([]))


def test_the_admin_form_shows_the_current_settings() -> None:
    """Every setting appears in its field: checkbox, channels, groups, overrides, prompts."""
    ws = WorkspaceSettings(
        dms_enabled=False,
        mention_channels=["C0HELP"],
        allowed_usergroups=["S0SUPPORT"],
        escalation_channels={"billing-agent": "C0BILLESC"},
        suggested_prompts=[SuggestedPrompt(title="Refunds", message="How?")],
    )
    view = home_view([], AdminPanel(SettingsForm.of(ws), SPECIALISTS, problems=("<#C0X> gone",)))
    (dms,) = _blocks(view, BLOCK_DMS)
    assert "initial_options" not in dms["element"]
    (channels,) = _blocks(view, BLOCK_CHANNELS)
    assert channels["element"]["initial_conversations"] == ["C0HELP"]
    assert _blocks(view, BLOCK_GROUPS)[0]["element"]["initial_value"] == "S0SUPPORT"
    (billing,) = _blocks(view, ESCALATION_BLOCK + "billing-agent")
    assert billing["element"]["initial_conversations"] == ["C0BILLESC"]
    assert (
        "initial_conversations"
        not in _blocks(view, ESCALATION_BLOCK + "product-agent")[0]["element"]
    )
    assert _blocks(view, BLOCK_PROMPTS)[0]["element"]["initial_value"] == "Refunds | How?"
    assert ":warning: <#C0X> gone" in _texts(view)
    assert ACTION_SAVE in str(view)


def test_form_errors_appear_under_their_field_and_keep_what_was_typed() -> None:
    """A rejected form shows "Not saved", the message under the bad field, and the typed text."""
    form = SettingsForm(prompts="oops no separator")
    panel = AdminPanel(form, SPECIALISTS, errors={BLOCK_PROMPTS: "Line 1: write it right."})
    view = home_view([], panel)
    blocks = view["blocks"]
    (prompts,) = _blocks(view, BLOCK_PROMPTS)
    after = blocks[blocks.index(prompts) + 1]
    assert after["elements"][0]["text"] == ":warning: Line 1: write it right."
    assert prompts["element"]["initial_value"] == "oops no separator"
    assert "Not saved" in _texts(view)


def test_the_form_is_read_from_the_clicks_state_values() -> None:
    """The Save click's view.state.values become the form; missing fields keep their value and
    escalation fields of unknown specialists are ignored."""
    values = {
        BLOCK_DMS: {"dms_enabled": {"type": "checkboxes", "selected_options": []}},
        BLOCK_CHANNELS: {
            "mention_channels": {
                "type": "multi_conversations_select",
                "selected_conversations": ["C0HELP"],
            }
        },
        BLOCK_PROMPTS: {"prompts": {"type": "plain_text_input", "value": None}},
        ESCALATION_BLOCK + "billing-agent": {
            "escalation_channel": {"selected_conversations": ["C0BILLESC"]}
        },
        ESCALATION_BLOCK + "evil-agent": {
            "escalation_channel": {"selected_conversations": ["C0X"]}
        },
    }
    current = SettingsForm(usergroups="S0SUPPORT", prompts="A | b")
    form = read_form(values, SPECIALISTS, current)
    assert form.dms_enabled is False
    assert form.mention_channels == ("C0HELP",)
    assert form.usergroups == "S0SUPPORT"  # not in the click: unchanged
    assert form.prompts == ""  # emptied
    assert dict(form.escalation_channels) == {"billing-agent": "C0BILLESC"}
