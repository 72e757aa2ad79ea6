"""Who may ask the bot what, where: the workspace settings applied to one question.

`Access.refusal` answers None when the bot may answer a question, else one short explanation
for the asker (the message path posts it as an ephemeral message: not silence, not a public
reply). The rules, from the workspace's settings (`bot.workspace_settings`), in this order:

1. DMs off: a question in the bot's DM is refused, pointing at the channels where it answers;
2. a mention allowlist: a question in any other channel is refused (follow-ups in a thread the
   bot already answers too), naming the allowed channels;
3. allowed user groups: a user in none of them is refused, naming the groups. Members come from
   `usergroups.users.list`, cached for `GROUP_CACHE_SECONDS` per group; when Slack cannot say
   (and nothing is cached), the question is refused with a "try again" (never answered blind).

`SlackDirectory` holds those reads (Slack *reads*, through the publisher's `SlackCaller.read`
and a budget): user groups and their members, and whether a user is a workspace admin or owner
(`users.info`) or listed in POWABOT_ADMINS.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

import structlog

from bot.conversation import Question
from bot.errors import SlackDeliveryError
from bot.slack.budget import Budget, BudgetBook
from bot.slack.calls import RateLimited, SlackCaller, Transient
from bot.workspace_settings import FormError, WorkspaceSettings, WorkspaceSettingsBook

log = structlog.get_logger(__name__)

GROUP_CACHE_SECONDS = 120.0  # a change of a group's members counts within this
GROUPS_KEPT = 1_000  # (workspace, group) member lists cached
READ_WAIT = 5.0  # seconds a read may wait for its budget
# usergroups.*: Tier 2 (20+ per minute per workspace); users.info: Tier 4 (100+ per minute).
TIER2_PER_SECOND = 20 / 60
TIER2_BURST = 3.0
TIER4_PER_SECOND = 100 / 60
TIER4_BURST = 5.0
GROUP_GONE = frozenset({"no_such_subteam", "subteam_not_found"})
ADMIN_FLAGS = ("is_admin", "is_owner", "is_primary_owner")

NO_DMS = (
    "I'm not taking questions in direct messages in this workspace. "
    "Mention me in {where}, or contact your support team."
)
NOT_HERE = "I don't answer in this channel. Try {where}."
NOT_A_MEMBER = "Only members of {groups} can ask me here."
CANNOT_CHECK = "I can't check right now who may ask me here. Please try again in a minute."

Clock = Callable[[], float]


class Unreadable(Exception):
    """Slack could not say (rate limited, failing, or refused the read)."""


def channel_list(channels: list[str]) -> str:
    """<#C1>, <#C2> or <#C3> (Slack shows each channel's name)."""
    names = [f"<#{c}>" for c in channels]
    if len(names) <= 1:
        return names[0] if names else "a channel"
    return ", ".join(names[:-1]) + " or " + names[-1]


def group_list(groups: list[str]) -> str:
    """<!subteam^S1> or <!subteam^S2> (Slack shows each group's @handle)."""
    return " or ".join(f"<!subteam^{g}>" for g in groups)


def _users(data: dict[str, object]) -> frozenset[str]:
    """The user ids of a `usergroups.users.list` answer."""
    users = data.get("users")
    return (
        frozenset(u for u in users if isinstance(u, str))
        if isinstance(users, list)
        else frozenset()
    )


class SlackDirectory:
    """Slack reads about people and groups, each through the caller and a per-workspace budget."""

    def __init__(
        self,
        caller: SlackCaller,
        budgets: BudgetBook,
        *,
        admins: frozenset[str] = frozenset(),
        ttl: float = GROUP_CACHE_SECONDS,
        clock: Clock = time.monotonic,
    ) -> None:
        self.caller = caller
        self.budgets = budgets
        self.admins = admins
        self.ttl = ttl
        self._clock = clock
        self._members: collections.OrderedDict[tuple[str, str], tuple[float, frozenset[str]]] = (
            collections.OrderedDict()
        )
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def _bucket(self, kind: str, team_id: str) -> Budget:
        if kind == "usergroups":
            return self.budgets.bucket(f"usergroups:{team_id}", TIER2_PER_SECOND, TIER2_BURST)
        return self.budgets.bucket(f"{kind}:{team_id}", TIER4_PER_SECOND, TIER4_BURST)

    async def _read(self, method: str, bucket: Budget, **params: str) -> dict[str, object]:
        """One read; `Unreadable` when it could not be made or Slack said no (code in args)."""
        try:
            if not await self.caller.acquire(bucket, max_wait=READ_WAIT):
                raise Unreadable("budget")
            return await self.caller.read(method, bucket, **params)
        except SlackDeliveryError as exc:
            raise Unreadable(exc.error) from exc
        except (RateLimited, Transient) as exc:
            raise Unreadable(type(exc).__name__) from exc

    async def is_admin(self, team_id: str, user_id: str) -> bool:
        """Listed in POWABOT_ADMINS, or Slack says the user is an admin or owner of the
        workspace (asked every time: never taken from a payload). False when Slack cannot say."""
        if user_id in self.admins:
            return True
        try:
            data = await self._read("users.info", self._bucket("users", team_id), user=user_id)
        except Unreadable as exc:
            log.warning("admin_check_failed", team=team_id, user=user_id, error=str(exc))
            return False
        user = data.get("user")
        if not isinstance(user, dict) or user.get("deleted") or user.get("is_bot"):
            return False
        return any(user.get(flag) is True for flag in ADMIN_FLAGS)

    async def members(self, team_id: str, group_id: str) -> frozenset[str]:
        """The group's members (empty for a group that no longer exists), cached; `Unreadable`
        when Slack cannot say and nothing is cached."""
        key = (team_id, group_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # one read per group at a time: a burst of questions asks Slack once
            cached = self._members.get(key)
            if cached is not None and self._clock() - cached[0] < self.ttl:
                return cached[1]
            try:
                members = await self._fetch_members(team_id, group_id)
            except Unreadable:
                if cached is not None:
                    return cached[1]  # stale beats refusing everyone while Slack blips
                raise
            self._remember(key, members)
            return members

    def _remember(self, key: tuple[str, str], members: frozenset[str]) -> None:
        self._members[key] = (self._clock(), members)
        self._members.move_to_end(key)
        while len(self._members) > GROUPS_KEPT:
            old, _ = self._members.popitem(last=False)
            self._locks.pop(old, None)

    async def _fetch_members(self, team_id: str, group_id: str) -> frozenset[str]:
        try:
            data = await self._read(
                "usergroups.users.list", self._bucket("usergroups", team_id), usergroup=group_id
            )
        except Unreadable as exc:
            if str(exc) in GROUP_GONE:
                return frozenset()
            log.warning(
                "usergroup_members_unreadable", team=team_id, group=group_id, error=str(exc)
            )
            raise
        return _users(data)

    async def check_groups(self, team_id: str, ids: list[str], handles: list[str]) -> list[str]:
        """The ids of the groups an admin typed (ids or handles), each checked with Slack;
        FormError naming the first one that does not exist or cannot be checked."""
        found = list(ids)
        if handles:
            by_handle = await self._handles(team_id)
            for handle in handles:
                group = by_handle.get(handle)
                if group is None:
                    raise FormError(f"There is no user group @{handle} in this workspace.")
                found.append(group)
        for group in ids:
            try:
                data = await self._read(
                    "usergroups.users.list", self._bucket("usergroups", team_id), usergroup=group
                )
            except Unreadable as exc:
                if str(exc) in GROUP_GONE:
                    raise FormError(f"There is no user group {group} in this workspace.") from None
                raise FormError(
                    "Slack could not check the user groups just now; please try again."
                ) from None
            self._remember((team_id, group), _users(data))
        return list(dict.fromkeys(found))

    async def _handles(self, team_id: str) -> dict[str, str]:
        try:
            data = await self._read("usergroups.list", self._bucket("usergroups", team_id))
        except Unreadable:
            raise FormError(
                "Slack could not look up user groups by @handle just now; "
                "try again, or enter the group's id (S…)."
            ) from None
        groups = data.get("usergroups")
        found: dict[str, str] = {}
        for group in groups if isinstance(groups, list) else []:
            if isinstance(group, dict):
                handle, gid = group.get("handle"), group.get("id")
                if isinstance(handle, str) and isinstance(gid, str):
                    found[handle.lower()] = gid
        return found


class Access:
    """The workspace's settings applied to a question: may the bot answer it, and if not, why."""

    def __init__(self, settings: WorkspaceSettingsBook, directory: SlackDirectory) -> None:
        self.settings = settings
        self.directory = directory

    async def refusal(self, q: Question, *, mention: bool) -> str | None:
        """None: the bot may answer `q`. Else the one short explanation to show its asker
        (`mention`: `q` addressed the bot by name; a thread follow-up otherwise)."""
        ws = await self.settings.get(q.team_id)
        why = self._place(ws, q)
        if why is None:
            why = await self._person(ws, q)
        if why is not None:
            log.info(
                "access_refused",
                team=q.team_id,
                channel=q.channel_id,
                user=q.user_id,
                mention=mention,
                reason=why[0],
            )
            return why[1]
        return None

    @staticmethod
    def _place(ws: WorkspaceSettings, q: Question) -> tuple[str, str] | None:
        in_dm = q.channel_type == "im" or q.channel_id.startswith("D")
        if in_dm:
            if ws.dms_enabled:
                return None
            where = channel_list(ws.mention_channels or [])
            return "dms_off", NO_DMS.format(where=where)
        if ws.answers_in(q.channel_id):
            return None
        return "channel_not_allowed", NOT_HERE.format(where=channel_list(ws.mention_channels or []))

    async def _person(self, ws: WorkspaceSettings, q: Question) -> tuple[str, str] | None:
        groups = ws.allowed_usergroups
        if groups is None:
            return None
        unreadable = False
        for group in groups:
            try:
                if q.user_id in await self.directory.members(q.team_id, group):
                    return None
            except Unreadable:
                unreadable = True
        if unreadable:
            return "usergroups_unreadable", CANNOT_CHECK
        return "not_in_usergroups", NOT_A_MEMBER.format(groups=group_list(groups))
