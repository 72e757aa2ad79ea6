"""Time scaling: every Slack rate and every bot pacing knob multiplied by one factor.

Slack's limits (the Slack stand-in's `RateLimits` defaults) and the bot's own budgets
(`Budgets` defaults, `POWABOT_EDIT_INTERVAL`) are read from the code, never restated here, so the
benchmark follows whatever the product ships. Bursts are counts, so they stay as they are; rates
are multiplied by `factor` and intervals divided by it, which keeps every ratio the same while
the run goes `factor` times faster. `headroom` below 1 runs the bot's budgets at that share of
Slack's rates and bursts (bursts rounded down, at least 1): an experiment knob for trying a safety
margin; the default 1.0 is what the product ships.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from bot.settings import Settings
from bot.slack.budget import Budgets
from sandbox.slack import RateLimits


def _default(name: str) -> float:
    value = Settings.model_fields[name].default
    if not isinstance(value, int | float):
        raise TypeError(f"Settings.{name} has no numeric default to scale")
    return float(value)


@dataclass(frozen=True)
class TimeScale:
    """One speed-up factor and everything derived from it."""

    factor: float = 1.0
    headroom: float = 1.0  # bot rates and bursts as a share of Slack's (1.0: shipped defaults)

    def __post_init__(self) -> None:
        if self.factor <= 0:
            raise ValueError(f"time scale must be > 0, got {self.factor}")
        if not 0 < self.headroom <= 1:
            raise ValueError(f"budget headroom must be in (0, 1], got {self.headroom}")

    def seconds(self, real_seconds: float) -> float:
        """A duration of the unscaled world, as it lasts in this run."""
        return real_seconds / self.factor

    def standin_limits(self) -> RateLimits:
        """The Slack stand-in's limits (its `RateLimits` defaults), every rate times `factor`.

        The streaming tiers scale too; the bot's own streaming buckets are constants in
        `bot.slack.native` and do not, so above scale 1 the bot uses less of those tiers than
        it may (fewer native streams, never more 429s)."""
        base = RateLimits()
        return dataclasses.replace(
            base,
            update_per_minute_per_workspace=base.update_per_minute_per_workspace * self.factor,
            post_per_second_per_channel=base.post_per_second_per_channel * self.factor,
            append_per_minute_per_workspace=self._rate(base.append_per_minute_per_workspace),
            start_per_minute_per_workspace=self._rate(base.start_per_minute_per_workspace),
            stop_per_minute_per_workspace=self._rate(base.stop_per_minute_per_workspace),
        )

    def _rate(self, per_minute: float | None) -> float | None:
        return None if per_minute is None else per_minute * self.factor

    def bot_budgets(self) -> dict[str, float]:
        """Keyword arguments for `Budgets(...)` (plain numbers, so they cross a process edge)."""
        base = Budgets()
        return {
            "edits_per_minute": base.edits_per_minute * self.factor * self.headroom,
            "edit_burst": self._burst(base.edit_burst),
            "posts_per_second": base.posts_per_second * self.factor * self.headroom,
            "post_burst": self._burst(base.post_burst),
            "final_reserve": base.final_reserve,
        }

    def _burst(self, burst: float) -> float:
        return burst if self.headroom == 1 else max(1.0, math.floor(burst * self.headroom))

    def bot_settings(self, *, scale_stall: bool = True) -> dict[str, str]:
        """The bot's pacing variables for this scale, as environment strings."""
        edits = _default("POWABOT_WORKSPACE_EDITS_PER_MINUTE") * self.factor * self.headroom
        stall = _default("POWABOT_STALL_NOTICE_AFTER")
        return {
            "POWABOT_EDIT_INTERVAL": repr(self.seconds(_default("POWABOT_EDIT_INTERVAL"))),
            "POWABOT_WORKSPACE_EDITS_PER_MINUTE": repr(edits),
            "POWABOT_STALL_NOTICE_AFTER": repr(self.seconds(stall) if scale_stall else stall),
        }

    def describe(self) -> dict[str, Any]:
        """What this scale means in numbers, for the printed header and the JSON."""
        return {
            "factor": self.factor,
            "headroom": self.headroom,
            "slack_standin": dataclasses.asdict(self.standin_limits()),
            "bot_budgets": self.bot_budgets(),
            "bot_settings": self.bot_settings(),
        }
