"""The one settings object, read from the environment and `.env`."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.errors import ConfigError

# Which variables each command needs on top of the defaults.
REQUIRED: dict[str, tuple[str, ...]] = {
    "run": ("SLACK_BOT_TOKEN", "POWABASE_URL", "POWABASE_API_KEY", "POWABASE_ORCHESTRATION_ID"),
    "provision": ("POWABASE_URL", "POWABASE_API_KEY"),
    "doctor": (),
}


# The settings whose values are secrets: stripped and checked at load, redacted from logs.
SECRET_FIELDS = (
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_CLIENT_SECRET",
    "SLACK_STATE_SECRET",
    "POWABASE_API_KEY",
    "SUPABASE_SERVICE_ROLE_KEY",
)


class SuggestedPrompt(BaseModel):
    """One suggested prompt of the bot's DM: the button's `title` and the `message` it sends."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    title: str = Field(min_length=1, max_length=75)
    message: str = Field(min_length=1, max_length=4000)


class Settings(BaseSettings):
    """Everything powabot reads from its environment. Names are the environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True
    )

    SLACK_BOT_TOKEN: SecretStr | None = None
    SLACK_APP_TOKEN: SecretStr | None = None
    SLACK_SIGNING_SECRET: SecretStr | None = None
    SLACK_API_URL: str = "https://slack.com/api/"
    # Several workspaces (bot.slack.oauth): Slack's OAuth install flow instead of one
    # SLACK_BOT_TOKEN; all three or none, HTTP mode only.
    SLACK_CLIENT_ID: str | None = None
    SLACK_CLIENT_SECRET: SecretStr | None = None
    SLACK_STATE_SECRET: SecretStr | None = None
    PORT: int = Field(default=3000, ge=0, le=65535)

    POWABASE_URL: AnyHttpUrl | None = None
    POWABASE_API_KEY: SecretStr | None = None
    POWABASE_ORCHESTRATION_ID: str | None = None

    POWABOT_STORE: str = "sqlite:///powabot.db"
    SUPABASE_URL: AnyHttpUrl | None = None
    SUPABASE_SERVICE_ROLE_KEY: SecretStr | None = None

    LOG_FORMAT: Literal["json", "console"] = "json"
    LOG_LEVEL: Literal["debug", "info", "warning", "error"] = "info"

    # Streaming behaviour (defaults suit Slack's documented limits). Native chat streaming
    # (chunks mode, task cards) in DMs and channel threads; false keeps post + chat.update.
    POWABOT_NATIVE_STREAMING: bool = True
    POWABOT_EDIT_INTERVAL: float = Field(default=1.0, gt=0)
    POWABOT_WORKSPACE_EDITS_PER_MINUTE: float = Field(default=45.0, gt=0)
    POWABOT_RUN_TIMEOUT: float = Field(default=300.0, gt=0)
    POWABOT_STALL_NOTICE_AFTER: float = Field(default=8.0, gt=0)
    POWABOT_UPSTREAM_TIMEOUT: float = Field(default=120.0, gt=0)

    # Limits and shutdown (fit Kubernetes' 30 s default grace; Docker needs `stop -t 30`).
    POWABOT_MAX_IN_FLIGHT: int = Field(default=200, ge=1)
    POWABOT_MAX_QUEUED: int = Field(default=1000, ge=0)
    POWABOT_SHUTDOWN_GRACE: float = Field(default=25.0, gt=0)
    # Each answer's lease (bot.leases): a replica that dies has its answers taken over by
    # another within about this plus a quarter of it (at most 2.5 s).
    POWABOT_LEASE_SECONDS: float = Field(default=10.0, gt=0)
    # Replicas sharing one Slack budget in Postgres; each falls back to this share of it when
    # Postgres is unreachable (bot.slack.shared_budget).
    POWABOT_MAX_REPLICAS: int = Field(default=4, ge=1)
    # The bot DM's suggested prompts (at most 4, Slack's limit): a JSON list of
    # {"title", "message"}; empty: one per specialist from seed-content/eval.yaml.
    POWABOT_SUGGESTED_PROMPTS: Annotated[list[SuggestedPrompt], NoDecode] = Field(
        default_factory=list, max_length=4
    )
    # Slack user ids who may change the workspace settings in App Home besides the workspace's
    # admins and owners: comma-separated, e.g. "U012AB3CD,U045EF6GH".
    POWABOT_ADMINS: Annotated[frozenset[str], NoDecode] = frozenset()
    # Where "Talk to a person" hands a conversation over: a channel id (C… or G…), the default
    # for every specialist; the App Home settings may name one per specialist. Unset: users who
    # ask for a person are told to contact the support team directly.
    POWABOT_ESCALATION_CHANNEL: str | None = None

    @field_validator(*SECRET_FIELDS, "POWABOT_STORE", "SLACK_CLIENT_ID", mode="before")
    @classmethod
    def _strip_secret(cls, value: object, info: ValidationInfo) -> object:
        """Leading/trailing whitespace (a mounted file's newline) is not part of a secret.

        The stripped value is what requests send and what the logs redact (bot/logs.py).
        """
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str):
            return value
        value = value.strip()
        # A token or key never holds whitespace (a store path may: sqlite:///my dir/bot.db).
        if info.field_name != "POWABOT_STORE" and any(ch.isspace() for ch in value):
            raise PydanticCustomError(
                "secret_has_whitespace",
                "contains whitespace or a line break inside the value; a token or key never"
                " does (check the file or variable it comes from)",
            )
        return value

    @field_validator(*SECRET_FIELDS)
    @classmethod
    def _secret_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        """A secret that is set must hold something: a blank one would fail every request."""
        if value is not None and not value.get_secret_value().strip():
            raise PydanticCustomError(
                "blank_secret", "is set but empty; set the real value or remove the variable"
            )
        return value

    @field_validator("POWABOT_SUGGESTED_PROMPTS", mode="before")
    @classmethod
    def _prompts_from_json(cls, value: object) -> object:
        """The variable holds JSON; blank means the defaults."""
        if not isinstance(value, str):
            return value
        if not value.strip():
            return []
        try:
            return json.loads(value)
        except ValueError:
            raise PydanticCustomError(
                "prompts_not_json",
                'is not JSON; expected a list like [{"title": "Refunds", "message": "How do I'
                ' get a refund?"}]',
            ) from None

    @field_validator("POWABOT_ADMINS", mode="before")
    @classmethod
    def _admins_from_list(cls, value: object) -> object:
        """Comma-separated Slack user ids (U… or W…); blank means none."""
        if not isinstance(value, str):
            return value
        ids = [part.strip() for part in value.split(",") if part.strip()]
        bad = [i for i in ids if not re.fullmatch(r"[UW][A-Z0-9]{2,}", i)]
        if bad:
            raise PydanticCustomError(
                "admins_not_user_ids",
                "holds {bad}, not Slack user ids; expected ids like U012AB3CD, comma-separated",
                {"bad": ", ".join(bad)},
            )
        return frozenset(ids)

    @field_validator("POWABOT_ESCALATION_CHANNEL", mode="before")
    @classmethod
    def _escalation_channel_id(cls, value: object) -> object:
        """A channel id (C… or G…, not a #name); blank means none."""
        if not isinstance(value, str):
            return value
        value = value.strip()
        if not value:
            return None
        if not re.fullmatch(r"[CG][A-Z0-9]{2,}", value):
            raise PydanticCustomError(
                "escalation_channel_not_an_id",
                "is not a channel id; expected one like C012AB3CD (in Slack: the channel's"
                " details, at the bottom), not a #name",
            )
        return value

    @field_validator("SLACK_API_URL")
    @classmethod
    def _api_url_ends_with_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL such as https://slack.com/api/")
        return value if value.endswith("/") else value + "/"

    @property
    def socket_mode(self) -> bool:
        """Socket Mode when an app-level token is set, HTTP mode otherwise."""
        return self.SLACK_APP_TOKEN is not None

    @property
    def oauth(self) -> bool:
        """OAuth install mode (several workspaces): the three OAuth settings are set."""
        secrets = (self.SLACK_CLIENT_SECRET, self.SLACK_STATE_SECRET)  # never blank when set
        return bool(self.SLACK_CLIENT_ID) and None not in secrets

    @property
    def powabase_url(self) -> str:
        return str(self.POWABASE_URL).rstrip("/") if self.POWABASE_URL else ""

    def require(self, command: str) -> Settings:
        """Check the variables `command` needs; raise one ConfigError naming every missing one."""
        problems = [
            f"{name} is required for `powabot {command}`"
            for name in REQUIRED.get(command, ())
            if getattr(self, name) in (None, "")
            and not (name == "SLACK_BOT_TOKEN" and self.oauth)  # tokens come from installs
        ]
        if command == "run" and not self.socket_mode and self.SLACK_SIGNING_SECRET is None:
            problems.append(
                "SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode) is required"
            )
        problems += self._oauth_problems()
        if bool(self.SUPABASE_URL) != bool(self.SUPABASE_SERVICE_ROLE_KEY):
            problems.append("SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY must be set together")
        if problems:
            raise ConfigError(problems)
        return self

    def _oauth_problems(self) -> list[str]:
        """OAuth install: all three settings or none, in HTTP mode, with a SQL session store."""
        oauth = {
            "SLACK_CLIENT_ID": self.SLACK_CLIENT_ID,
            "SLACK_CLIENT_SECRET": self.SLACK_CLIENT_SECRET,
            "SLACK_STATE_SECRET": self.SLACK_STATE_SECRET,
        }
        missing = [name for name, value in oauth.items() if value in (None, "")]
        if len(missing) == len(oauth):
            return []  # single-workspace token mode
        if missing:
            return [
                "SLACK_CLIENT_ID, SLACK_CLIENT_SECRET and SLACK_STATE_SECRET must be set together"
                f" (OAuth install for several workspaces); missing: {', '.join(missing)}"
            ]
        problems: list[str] = []
        state_secret = self.SLACK_STATE_SECRET
        if state_secret is not None and len(state_secret.get_secret_value()) < 32:
            problems.append(
                "SLACK_STATE_SECRET must be at least 32 characters (e.g. `openssl rand -hex 32`)"
            )
        if self.socket_mode:
            problems.append(
                "OAuth install (SLACK_CLIENT_ID) needs HTTP mode, where Slack redirects installs"
                " to /slack/oauth_redirect: unset SLACK_APP_TOKEN and set SLACK_SIGNING_SECRET"
            )
        if self.SLACK_BOT_TOKEN is not None:
            problems.append(
                "SLACK_BOT_TOKEN and OAuth install (SLACK_CLIENT_ID) exclude each other: with"
                " OAuth each workspace's token comes from its install; unset SLACK_BOT_TOKEN"
            )
        if self.SUPABASE_URL or self.SUPABASE_SERVICE_ROLE_KEY:
            problems.append(
                "OAuth install (SLACK_CLIENT_ID) keeps installations in SQL, which the Supabase"
                " store (REST only) cannot: set POWABOT_STORE to the database's postgresql://…"
                " URL (or sqlite:///path.db) and unset SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"
            )
        elif not self.POWABOT_STORE.startswith(("sqlite:///", "postgres://", "postgresql://")):
            problems.append(
                "POWABOT_STORE: OAuth install needs sqlite:///path.db or postgresql://…"
            )
        return problems


def load_settings(command: str | None = None, **overrides: object) -> Settings:
    """Read settings (checked for `command` when given); every problem goes in one ConfigError."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        bad = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
        problems = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        if command is not None:
            # Also name the required variables that are simply absent.
            try:
                valid: dict[str, Any] = {k: v for k, v in _raw_values().items() if k not in bad}
                Settings.model_construct(**valid).require(command)
            except ConfigError as missing:
                problems += [p for p in missing.problems if p.split(" ")[0] not in bad]
            except ValidationError:
                pass
        raise ConfigError(problems) from exc
    if command is not None:
        settings.require(command)
    return settings


def _raw_values() -> dict[str, str]:
    """The raw variables as pydantic-settings would see them (environment over `.env`)."""
    import os

    from dotenv import dotenv_values

    names = set(Settings.model_fields)
    values: dict[str, str] = {}
    env_file = dotenv_values(".env") if os.path.exists(".env") else {}
    for name in names:
        raw = os.environ.get(name, env_file.get(name))
        if raw is not None:
            values[name] = raw
    return values
