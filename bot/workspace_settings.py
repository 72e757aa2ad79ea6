"""Per-workspace settings that the workspace's admins edit in the bot's App Home tab.

`WorkspaceSettings` is the typed model (defaults: the bot answers everyone, in DMs and in every
channel it is in). The store keeps it as a JSON object per workspace
(`store.get_workspace_settings` / `save_workspace_settings`); `WorkspaceSettingsBook` reads it
through a short in-memory cache (`CACHE_SECONDS`) so the message path does not query the store
for every message. A save here clears this replica's cache at once; other replicas see it when
their cached copy expires.

The parsers turn what an admin types into the form's text fields into values, or raise
`FormError` with a message that says what to fix.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Annotated, Any

import structlog
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.errors import ProvisioningError, StoreError
from bot.settings import SuggestedPrompt
from bot.store import SessionStore

log = structlog.get_logger(__name__)

CACHE_SECONDS = 30.0
MAX_PROMPTS = 4  # Slack shows at most four suggested prompts
MAX_CHANNELS = 100  # channels in the mention allowlist
MAX_USERGROUPS = 20
# The specialists when the provisioning spec cannot be read (its agent names).
DEFAULT_SPECIALISTS = ("billing-agent", "technical-agent", "product-agent")

CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,}")  # a public or private channel
USERGROUP_ID = re.compile(r"S[A-Z0-9]{2,}")
USERGROUP_HANDLE = re.compile(r"@?([a-z0-9][a-z0-9._-]{0,79})")
# What Slack puts in text for a group mention: <!subteam^S0123|@handle>
USERGROUP_MENTION = re.compile(r"<!subteam\^(S[A-Z0-9]{2,})(?:\|[^>]*)?>")
PROMPT_SEPARATOR = "|"


def _channel_id(value: str) -> str:
    value = value.strip()
    if not CHANNEL_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a channel id (C… or G…)")
    return value


def _usergroup_id(value: str) -> str:
    value = value.strip()
    if not USERGROUP_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a user group id (S…)")
    return value


ChannelId = Annotated[str, AfterValidator(_channel_id)]
UsergroupId = Annotated[str, AfterValidator(_usergroup_id)]


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


class WorkspaceSettings(BaseModel):
    """Where and for whom the bot answers in one workspace, and what its DM suggests."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    dms_enabled: bool = True
    # Channels where mentions (and follow-ups) are answered; None: every channel.
    mention_channels: list[ChannelId] | None = Field(default=None, max_length=MAX_CHANNELS)
    # Who may ask: members of any of these user groups; None: everyone.
    allowed_usergroups: list[UsergroupId] | None = Field(default=None, max_length=MAX_USERGROUPS)
    # Specialist (agent name, e.g. "billing-agent") → its escalation channel; others use the
    # default channel (POWABOT_ESCALATION_CHANNEL).
    escalation_channels: dict[str, ChannelId] = Field(default_factory=dict)
    # The DM's suggested prompts; empty: the deployment's (POWABOT_SUGGESTED_PROMPTS or defaults).
    suggested_prompts: list[SuggestedPrompt] = Field(default_factory=list, max_length=MAX_PROMPTS)

    @field_validator("mention_channels", "allowed_usergroups")
    @classmethod
    def _empty_means_all(cls, value: list[str] | None) -> list[str] | None:
        """An empty list is "no restriction" (what an admin clearing the field means)."""
        return _unique(value) if value else None

    @field_validator("escalation_channels", mode="before")
    @classmethod
    def _drop_blank_specialists(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        return {str(k).strip(): v for k, v in value.items() if str(k).strip() and v}

    def answers_in(self, channel_id: str) -> bool:
        """Mentions in `channel_id` are answered (every channel unless there is an allowlist)."""
        return self.mention_channels is None or channel_id in self.mention_channels

    def stored(self) -> dict[str, Any]:
        """The JSON object the store keeps."""
        return self.model_dump(mode="json")


def load(raw: dict[str, Any] | None) -> WorkspaceSettings:
    """The settings a store returned (None: the defaults). A stored object that no longer
    validates is logged and replaced by the defaults."""
    if not raw:
        return WorkspaceSettings()
    try:
        return WorkspaceSettings.model_validate(raw)
    except ValidationError as exc:
        log.error("workspace_settings_invalid", errors=exc.error_count())
        return WorkspaceSettings()


class FormError(ValueError):
    """What an admin typed cannot be saved; the message says what to fix."""


def parse_prompts(text: str) -> list[SuggestedPrompt]:
    """One prompt per line, `title | message` (blank lines skipped); at most `MAX_PROMPTS`."""
    prompts: list[SuggestedPrompt] = []
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_PROMPTS:
        raise FormError(
            f"At most {MAX_PROMPTS} prompts (Slack shows four); you wrote {len(lines)}."
        )
    for number, line in enumerate(lines, 1):
        title, separator, message = line.partition(PROMPT_SEPARATOR)
        if not separator or not title.strip() or not message.strip():
            raise FormError(
                f'Line {number}: write "title | message", e.g. "Refunds | How do I get a refund?".'
            )
        try:
            prompts.append(SuggestedPrompt(title=title, message=message))
        except ValidationError as exc:
            field = str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else "prompt"
            limit = 75 if field == "title" else 4000
            raise FormError(
                f"Line {number}: the {field} is too long (at most {limit} characters)."
            ) from None
    return prompts


def prompts_text(prompts: list[SuggestedPrompt]) -> str:
    """The prompts as the form's text field shows them (what `parse_prompts` reads back)."""
    return "\n".join(f"{p.title} {PROMPT_SEPARATOR} {p.message}" for p in prompts)


def parse_usergroups(text: str) -> tuple[list[str], list[str]]:
    """User groups as typed: ids (S…), @handles or pasted mentions, separated by commas, spaces
    or lines. Returns (ids, handles without "@"); FormError on anything else."""
    ids: list[str] = []
    handles: list[str] = []
    text = USERGROUP_MENTION.sub(lambda m: f" {m.group(1)} ", text)
    for token in re.split(r"[\s,;]+", text.strip()):
        if not token:
            continue
        if USERGROUP_ID.fullmatch(token):
            ids.append(token)
        elif handle := USERGROUP_HANDLE.fullmatch(token.lower()):
            handles.append(handle.group(1))
        else:
            raise FormError(f'"{token}" is not a user group: write its @handle or its id (S…).')
    if len(set(ids)) + len(set(handles)) > MAX_USERGROUPS:
        raise FormError(f"At most {MAX_USERGROUPS} user groups.")
    return _unique(ids), _unique(handles)


def specialists() -> tuple[str, ...]:
    """The specialist agents of the provisioned support team (the spec's agents), in order."""
    try:
        from provisioning.spec import load_spec

        names = tuple(agent.name for agent in load_spec().agents)
    except (ProvisioningError, OSError, ImportError) as exc:
        log.info("specialists_from_spec_unavailable", error_type=type(exc).__name__)
        return DEFAULT_SPECIALISTS
    return names or DEFAULT_SPECIALISTS


class WorkspaceSettingsBook:
    """Each workspace's settings from the store, cached for `ttl` seconds per workspace.

    A store failure while reading serves the last copy read (however old), else the defaults,
    and is logged: the message path never fails on settings.
    """

    def __init__(
        self,
        store: SessionStore,
        *,
        ttl: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self._clock = clock
        self._cached: dict[str, tuple[float, WorkspaceSettings]] = {}

    async def get(self, team_id: str) -> WorkspaceSettings:
        now = self._clock()
        cached = self._cached.get(team_id)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        try:
            settings = load(await self.store.get_workspace_settings(team_id))
        except StoreError as exc:
            log.error("workspace_settings_unreadable", team=team_id, error=str(exc))
            return cached[1] if cached is not None else WorkspaceSettings()
        self._cached[team_id] = (now, settings)
        return settings

    async def prompts(self, team_id: str) -> list[SuggestedPrompt]:
        """The workspace's suggested prompts (empty: the deployment's)."""
        return list((await self.get(team_id)).suggested_prompts)

    async def save(self, team_id: str, settings: WorkspaceSettings, *, updated_by: str) -> None:
        """Store them (StoreError passes through) and serve them from now on in this replica."""
        await self.store.save_workspace_settings(team_id, settings.stored(), updated_by=updated_by)
        self._cached[team_id] = (self._clock(), settings)
        log.info("workspace_settings_saved", team=team_id, updated_by=updated_by)

    def forget(self, team_id: str) -> None:
        self._cached.pop(team_id, None)
